// LocalRunner: a DisposableRunner for tests and benchmarks that runs the service program
// as a local subprocess (the "untrusted side"), looked up like the qrexec agent does:
// DIR/SERVICE+ARG, then DIR/SERVICE, for each directory in order.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "handlers/disposable_runner.h"

namespace odyssey::handlers::testing {

class LocalRunner : public DisposableRunner {
 public:
  explicit LocalRunner(std::vector<std::string> service_dirs, std::vector<std::string> extra_env = {})
      : service_dirs_(std::move(service_dirs)), extra_env_(std::move(extra_env)) {}

  Result<int> Run(const ServiceCall& call) override;

  // Every call made so far, in order (the fds in them are no longer valid).
  std::vector<ServiceCall> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::vector<std::string> service_dirs_;
  std::vector<std::string> extra_env_;  // "NAME=value" added to the service's environment
  mutable std::mutex mu_;
  std::vector<ServiceCall> calls_;
};

}  // namespace odyssey::handlers::testing
