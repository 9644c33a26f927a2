// Test helper: run a program with arguments and environment, capturing stdout/stderr.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace odyssey::qrexec::policy::testing {

struct ProcessResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

inline std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Starts argv with env; stdout/stderr go to the given files. Returns the pid (or -1).
inline pid_t Spawn(std::vector<std::string> argv, std::vector<std::string> env, const std::string& out_path,
                   const std::string& err_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  auto args = CStrings(argv);
  auto envp = CStrings(env);
  pid_t pid = -1;
  if (posix_spawn(&pid, args[0], &actions, nullptr, args.data(), envp.data()) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&actions);
  return pid;
}

inline int Wait(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The environment tests give programs: sanitizer settings and PATH, never DISPLAY.
inline std::vector<std::string> BaseEnv() {
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
  for (const char* key : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TMPDIR"}) {
    if (const char* v = getenv(key)) env.push_back(std::string(key) + "=" + v);
  }
  return env;
}

inline ProcessResult Run(std::vector<std::string> argv, const std::string& scratch_dir,
                         std::vector<std::string> env = BaseEnv()) {
  ProcessResult r;
  std::string out = scratch_dir + "/run.out", err = scratch_dir + "/run.err";
  pid_t pid = Spawn(std::move(argv), std::move(env), out, err);
  if (pid < 0) return r;
  r.exit_code = Wait(pid);
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

}  // namespace odyssey::qrexec::policy::testing
