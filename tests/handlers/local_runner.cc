#include "tests/handlers/local_runner.h"

#include "handlers/exec_runner.h"

#include <unistd.h>

#include <cerrno>
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
  std::vector<std::string> argv = {program};
  if (!call.argument.empty()) argv.push_back(call.argument);
  return SpawnAndWait(argv, call.stdin_fd, call.stdout_fd, call.stderr_fd, &env_strings);
}

}  // namespace odyssey::handlers::testing
