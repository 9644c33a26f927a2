// Starting a child process: one posix_spawn wrapper that sets the child's stdin/stdout/stderr
// (an fd of ours, or /dev/null), its environment, signal mask and dispositions, and
// optionally a new session. glibc's posix_spawn is a vfork-style clone, so this is the cheap
// way to start a program from a large or multi-threaded process. It never searches PATH and
// never changes credentials (that needs fork; see qrexec/util.h's Spawn with run_as).
// Header-only so that modules adopt it without a build change to base/.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.h"

namespace odyssey {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is the program's path unless `path` is set
  std::string path;               // the file to exec (no PATH search); empty: argv[0]
  std::vector<std::string> env;   // the whole environment, "K=V"
  int stdin_fd = -1;              // an fd of ours dup'ed onto 0/1/2; -1: /dev/null
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool new_session = false;       // setsid() in the child
  // Clear the signal mask and reset every disposition to default (what a daemon's child
  // should start with: a blocked SIGCHLD or an ignored SIGPIPE is inherited otherwise).
  bool reset_signals = true;
};

// Starts options.argv[0]. Returns the pid, or an Error whose code is the errno posix_spawn
// reported (ENOENT, EACCES, ENOEXEC, ...) and which names the program.
inline Result<pid_t> SpawnProcess(const SpawnOptions& options) {
  if (options.argv.empty()) return Error{"spawn: empty argv", EINVAL};
  std::vector<char*> argv, envp;
  argv.reserve(options.argv.size() + 1);
  for (const auto& a : options.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  envp.reserve(options.env.size() + 1);
  for (const auto& e : options.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  const int fds[3] = {options.stdin_fd, options.stdout_fd, options.stderr_fd};
  for (int i = 0; i < 3; ++i) {
    // adddup2 of an fd onto itself clears its close-on-exec flag (glibc >= 2.29).
    if (fds[i] >= 0) posix_spawn_file_actions_adddup2(&actions, fds[i], i);
    else posix_spawn_file_actions_addopen(&actions, i, "/dev/null", O_RDWR, 0);
  }
  short flags = 0;
  if (options.reset_signals) {
    sigset_t empty, all;
    sigemptyset(&empty);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&attr, &empty);
    posix_spawnattr_setsigdefault(&attr, &all);
    flags |= POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  }
  if (options.new_session) flags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&attr, flags);

  pid_t pid = -1;
  const char* file = options.path.empty() ? argv[0] : options.path.c_str();
  int err = posix_spawn(&pid, file, &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return Error::Errno(err, "posix_spawn", file);
  return pid;
}

}  // namespace odyssey
