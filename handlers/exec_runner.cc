#include "handlers/exec_runner.h"

#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <sstream>

extern char** environ;

namespace odyssey::handlers {

std::vector<std::string> SplitCommand(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string tok;
  while (in >> tok) out.push_back(tok);
  return out;
}

std::vector<std::string> ExecRunner::DefaultCommand() {
  const char* env = std::getenv("ODYSSEY_RUNNER");
  if (env && *env) return SplitCommand(env);
  const char* cli = std::getenv("ODYSSEY_CLI");  // the engine's CLI, as odyssey-open uses it
  return {cli && *cli ? cli : "odyssey", "call"};
}

Result<int> SpawnAndWait(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd,
                         int stderr_fd, const std::vector<std::string>* env) {
  if (argv.empty()) return Error{"empty command", EINVAL};
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::vector<std::string> env_copy;
  std::vector<char*> cenv;
  if (env) {
    env_copy = *env;
    for (auto& e : env_copy) cenv.push_back(e.data());
    cenv.push_back(nullptr);
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
  if (stdout_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdout_fd, 1);
  if (stderr_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stderr_fd, 2);
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
  int err = ::posix_spawnp(&pid, args[0].c_str(), &fa, &attr, cargv.data(),
                           env ? cenv.data() : environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) return Error::Errno(err, "posix_spawnp", args[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return Error::Errno("waitpid", args[0]);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

Result<int> ExecRunner::Run(const ServiceCall& call) {
  std::vector<std::string> argv = command_;
  if (call.target.kind == Target::Kind::kNamed) {
    argv.push_back("--vm=" + call.target.name);
  } else if (!call.target.name.empty()) {
    argv.push_back("--dispvm=" + call.target.name);
  }
  argv.push_back(call.service + "+" + call.argument);
  auto rc = SpawnAndWait(argv, call.stdin_fd, call.stdout_fd, call.stderr_fd);
  if (!rc.ok()) return rc.error().Wrap("asking the engine to run " + call.service);
  return rc;
}

}  // namespace odyssey::handlers
