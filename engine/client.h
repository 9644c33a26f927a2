// AdminClient: the client side of the admin protocol (engine/admin_protocol.h), used by the
// odyssey CLI, the demo, tests and benchmarks. ConnectOrStart() implements the embedded
// default: when no odysseyd answers on the socket, it starts one for the user and waits
// until it is ready.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "engine/admin_protocol.h"

namespace odyssey::engine {

class AdminClient {
 public:
  static Result<AdminClient> Connect(const std::string& socket_path);
  AdminClient(AdminClient&&) = default;
  AdminClient& operator=(AdminClient&&) = default;

  // Sends one request; fds travel with it (SCM_RIGHTS) and stay open on our side.
  Status Send(const nlohmann::json& request, const std::vector<int>& fds = {});
  // The next reply line; an error if the daemon closed the connection.
  Result<nlohmann::json> Receive();
  // Send + Receive for single-reply ops.
  Result<nlohmann::json> Request(const nlohmann::json& request);
  int fd() const { return fd_.get(); }

 private:
  explicit AdminClient(UniqueFd fd) : fd_(std::move(fd)), reader_(64u << 20) {}
  UniqueFd fd_;
  LineReader reader_;
};

struct ConnectOptions {
  std::string socket_path;   // empty: DefaultSocketPath()
  bool autostart = true;     // start odysseyd when none answers
  std::string daemon_path;   // empty: $ODYSSEY_DAEMON, next to this binary, or PATH
  std::string config_path;   // forwarded to an autostarted odysseyd
  bool quiet = false;        // do not announce the autostart on stderr
};

Result<AdminClient> ConnectOrStart(const ConnectOptions& options);

}  // namespace odyssey::engine
