// Daemon: odysseyd's core. One Boost.Asio event loop serves the admin socket (JSON lines,
// SO_PEERCRED, SCM_RIGHTS); calls run on their own threads (a call blocks on its domain);
// pools refill on oneTBB tasks. On start it takes the single-instance lock, reconciles
// what a killed run left (backend leftovers + state store) and fills the pools. Every call
// is decided by the policy gate first and recorded in the state store. The daemon never
// opens a caller's path: files arrive as descriptors.
#pragma once

#include <functional>
#include <memory>

#include "base/result.h"
#include "engine/config.h"

namespace odyssey::engine {

class Daemon {
 public:
  // Validates config, takes the lock, opens the store, reconciles, binds the socket.
  static Result<std::unique_ptr<Daemon>> Create(const Config& config);
  virtual ~Daemon() = default;
  // Serves until Stop() or SIGINT/SIGTERM. ready() runs once the socket accepts.
  virtual Status Run(const std::function<void()>& ready) = 0;
  // Thread-safe.
  virtual void Stop() = 0;
};

// Version string of the engine.
const char* EngineVersion();

}  // namespace odyssey::engine
