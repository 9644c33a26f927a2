#include "tests/handlers/local_runner.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>

extern char** environ;

namespace odyssey::handlers::testing {

Result<int> LocalRunner::Run(const ServiceCall& call) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back(call);
  }
  std::string program;
  for (const auto& dir : service_dirs_) {
    for (const std::string& name : {call.service + "+" + call.argument, call.service}) {
      std::string path = dir + "/" + name;
      if (::access(path.c_str(), X_OK) == 0) {
        program = path;
        break;
      }
    }
    if (!program.empty()) break;
  }
  if (program.empty()) return 127;  // qrexec: service not found

  std::vector<std::string> env_strings;
  auto overridden = [&](const char* entry) {
    for (const auto& extra : extra_env_) {
      size_t eq = extra.find('=');
      if (std::strncmp(entry, extra.c_str(), eq + 1) == 0) return true;
    }
    return false;
  };
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "QREXEC_", 7) != 0 && !overridden(*e)) env_strings.push_back(*e);
  }
  env_strings.push_back("QREXEC_REMOTE_DOMAIN=dom0");
  env_strings.push_back("QREXEC_SERVICE_FULL_NAME=" + call.service + "+" + call.argument);
  env_strings.push_back("QREXEC_SERVICE_ARGUMENT=" + call.argument);
  for (const auto& e : extra_env_) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string arg = call.argument;
  std::vector<char*> argv = {program.data()};
  if (!arg.empty()) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, call.stdin_fd, 0);
  posix_spawn_file_actions_adddup2(&fa, call.stdout_fd, 1);
  if (call.stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, call.stderr_fd, 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid;
  int err = ::posix_spawn(&pid, program.c_str(), &fa, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return Error::Errno(err, "posix_spawn", program);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Error::Errno("waitpid", program);
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

}  // namespace odyssey::handlers::testing
