// The seam between handlers/ and the engine: handlers never start domains themselves, they
// ask a DisposableRunner to run one qrexec service in a domain and wire its stdio to fds.
// The engine implements it with its pools; tests implement it with a local subprocess.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"

namespace odyssey::handlers {

// Where a service call runs.
struct Target {
  enum class Kind {
    kDisposable,  // a fresh disposable of template `name` (empty: the default template)
    kNamed,       // the persistent domain called `name`
  };
  Kind kind = Kind::kDisposable;
  std::string name;

  static Target Disposable(std::string template_name = {}) {
    return {Kind::kDisposable, std::move(template_name)};
  }
  static Target Named(std::string vm) { return {Kind::kNamed, std::move(vm)}; }
  // "disposable of the default template", "disposable of template 'x'", "domain 'work'".
  std::string Describe() const {
    if (kind == Kind::kNamed) return "domain '" + name + "'";
    if (name.empty()) return "disposable of the default template";
    return "disposable of template '" + name + "'";
  }
};

// One service call: SERVICE+ARGUMENT in `target`.
struct ServiceCall {
  Target target;
  std::string service;   // e.g. "qubes.OpenInVM", "odyssey.RenderPDF"
  std::string argument;  // may be empty (the bare "+")
  int stdin_fd = -1;     // the service reads this until EOF; borrowed, not closed by Run
  int stdout_fd = -1;    // the service's stdout is written here; borrowed, not closed by Run
  int stderr_fd = -1;    // -1: the service's stderr goes to the caller's stderr
};

// Runs services in domains. Implementations must be safe to call from any thread, must not
// keep the fds past Run's return, and must destroy a disposable when its call ends.
class DisposableRunner {
 public:
  virtual ~DisposableRunner() = default;
  // Runs the call to completion. Returns the service's exit code (qrexec convention:
  // 125 problem, 126 refused, 127 service not found) or an error when the call could not be
  // made at all. Everything the service writes to stdout_fd is untrusted.
  virtual Result<int> Run(const ServiceCall& call) = 0;
};

using DisposableRunnerPtr = std::unique_ptr<DisposableRunner>;

}  // namespace odyssey::handlers
