// ExecRunner: a DisposableRunner that asks the engine through a command line, for the
// stand-alone binaries (odyssey-convert, odyssey-open). It runs
//   COMMAND... [--dispvm=TEMPLATE | --vm=NAME] SERVICE+ARG
// with the call's fds as the command's stdin/stdout/stderr and returns its exit code.
// COMMAND comes from --runner or $ODYSSEY_RUNNER (split on spaces), default "odyssey call"
// ($ODYSSEY_CLI replaces "odyssey", as for odyssey-open).
#pragma once

#include <string>
#include <vector>

#include "handlers/disposable_runner.h"

namespace odyssey::handlers {

class ExecRunner : public DisposableRunner {
 public:
  explicit ExecRunner(std::vector<std::string> command) : command_(std::move(command)) {}
  // From $ODYSSEY_RUNNER, or {$ODYSSEY_CLI or "odyssey", "call"}.
  static std::vector<std::string> DefaultCommand();

  Result<int> Run(const ServiceCall& call) override;

 private:
  std::vector<std::string> command_;
};

// Splits on spaces (no quoting: the runner command is configuration, not user data).
std::vector<std::string> SplitCommand(const std::string& text);
// Runs argv (argv[0] looked up in PATH when it has no '/') with the given stdio fds (-1:
// inherit) and environment (nullptr: this process's); SIGPIPE default, no signal blocked.
// Returns its exit code, or 128+signal.
Result<int> SpawnAndWait(const std::vector<std::string>& argv, int stdin_fd, int stdout_fd,
                         int stderr_fd, const std::vector<std::string>* env = nullptr);

}  // namespace odyssey::handlers
