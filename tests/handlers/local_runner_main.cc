// handlers-local-runner: the LocalRunner as a command, so the stand-alone binaries can be
// tested through their --runner option (ExecRunner's command-line contract):
//   handlers-local-runner --services DIR [--services DIR ...] [--dispvm=T | --vm=N] SERVICE+ARG
// Appends one line per call to $ODYSSEY_TEST_RUNNER_LOG when set.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tests/handlers/local_runner.h"

int main(int argc, char** argv) {
  using namespace odyssey::handlers;
  std::vector<std::string> dirs;
  Target target;
  std::string service_and_arg;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--services" && i + 1 < argc) {
      dirs.push_back(argv[++i]);
    } else if (a.rfind("--dispvm=", 0) == 0) {
      target = Target::Disposable(a.substr(9));
    } else if (a.rfind("--vm=", 0) == 0) {
      target = Target::Named(a.substr(5));
    } else if (a == "--help") {
      std::printf("usage: %s --services DIR... [--dispvm=T|--vm=N] SERVICE+ARG\n", argv[0]);
      return 0;
    } else {
      service_and_arg = a;
    }
  }
  size_t plus = service_and_arg.find('+');
  if (service_and_arg.empty() || dirs.empty()) {
    std::fprintf(stderr, "handlers-local-runner: need --services DIR and SERVICE+ARG\n");
    return 125;
  }
  ServiceCall call;
  call.target = target;
  call.service = service_and_arg.substr(0, plus);
  call.argument = plus == std::string::npos ? "" : service_and_arg.substr(plus + 1);
  call.stdin_fd = 0;
  call.stdout_fd = 1;
  if (const char* log = std::getenv("ODYSSEY_TEST_RUNNER_LOG")) {
    if (FILE* f = std::fopen(log, "a")) {
      std::fprintf(f, "%s %s\n", target.Describe().c_str(), service_and_arg.c_str());
      std::fclose(f);
    }
  }
  testing::LocalRunner runner(dirs);
  auto rc = runner.Run(call);
  if (!rc.ok()) {
    std::fprintf(stderr, "handlers-local-runner: %s\n", rc.error().message.c_str());
    return 125;
  }
  return rc.value();
}
