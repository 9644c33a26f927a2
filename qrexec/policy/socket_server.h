// The policy socket server behind qrexec-policy-daemon: one Unix stream socket, one
// thread per connection (capped), each connection one request and one reply. Every
// client is untrusted: malformed, oversized, truncated or slow requests get an error
// reply or are dropped, and the server keeps serving.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {

struct SocketServerOptions {
  std::string socket_path;
  int request_timeout_seconds = 10;  // per connection, for reading the request
  int max_connections = 64;          // connections served at once; more get "busy"
  bool log_decisions = true;         // one line per decision on stderr
};

class SocketServer {
 public:
  // Binds and listens (replacing a stale socket file at the path).
  static Result<std::unique_ptr<SocketServer>> Create(SocketServerOptions options, std::shared_ptr<PolicyService> service);
  ~SocketServer();
  // Serves until Stop() is called (from any thread or a signal handler).
  Status Run();
  // Async-signal-safe.
  void Stop();

 private:
  SocketServer(SocketServerOptions options, std::shared_ptr<PolicyService> service, UniqueFd listen_fd,
               UniqueFd wake_read, UniqueFd wake_write);
  void Serve(UniqueFd fd);
  void Finish();

  SocketServerOptions options_;
  std::shared_ptr<PolicyService> service_;
  UniqueFd listen_fd_;
  UniqueFd wake_read_;
  UniqueFd wake_write_;
  std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;
};

}  // namespace odyssey::qrexec::policy
