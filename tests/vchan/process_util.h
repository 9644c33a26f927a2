// Helpers for the cross-process vchan tests: run a function in a forked child, spawn a
// program with extra environment, and collect exit statuses.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

extern char** environ;

namespace odyssey::vchan::testing {

// Runs fn in a child process; the child exits with fn's return value (never returns).
inline pid_t ForkChild(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = fn();
    ::_exit(code);
  }
  return pid;
}

// Waits for pid; returns its exit code, or 128 + signal number if it was killed.
inline int WaitChild(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Spawns argv[0] with our environment plus extra ("NAME=value") entries; -1 on error.
inline pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra) {
  std::vector<std::string> env_strings(extra);
  for (char** e = environ; *e != nullptr; ++e) {
    std::string s(*e);
    bool overridden = false;
    for (const auto& x : extra) {
      if (s.compare(0, x.find('=') + 1, x, 0, x.find('=') + 1) == 0) overridden = true;
    }
    if (!overridden) env_strings.push_back(s);
  }
  std::vector<char*> envp, args;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy(argv);
  for (auto& s : argv_copy) args.push_back(s.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), envp.data()) != 0) return -1;
  return pid;
}

}  // namespace odyssey::vchan::testing
