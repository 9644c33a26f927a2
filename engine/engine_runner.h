// EngineRunner: handlers' DisposableRunner (handlers/disposable_runner.h) made real by
// odysseyd: each Run() is one "call" request on the admin socket (qrexec service in a
// fresh disposable of the requested template, policy-checked by the daemon), with the
// call's descriptors passed to the daemon. Used by `odyssey open` and `odyssey convert`.
#pragma once

#include <string>

#include "engine/client.h"
#include "handlers/disposable_runner.h"

namespace odyssey::engine {

class EngineRunner final : public handlers::DisposableRunner {
 public:
  explicit EngineRunner(ConnectOptions connect) : connect_(std::move(connect)) {}
  // The service's exit code; an error when odysseyd refused the call (policy denial with
  // the rule's file:line, missing template, a named domain (vm:NAME) that does not run,
  // saying how to start it) or could not be reached.
  Result<int> Run(const handlers::ServiceCall& call) override;

 private:
  ConnectOptions connect_;
};

}  // namespace odyssey::engine
