// AgentConnection: the host side of one domain's qrexec control channel, in-process, for
// odysseyd and qrexec-daemon. It connects to the agent's vchan server (port 512), exchanges
// HELLO, and runs calls: each call gets a data port (513..768), the agent is told to
// connect to it, and the caller's stdin/stdout/stderr fds are streamed over it until the
// service's exit code arrives. The port is freed when the agent sends
// MSG_CONNECTION_TERMINATED. Every byte from the agent is hostile: a malformed message
// closes this connection (every call on it fails), it never crashes the process.
//
// Threading: all public methods are thread-safe; any number of Call()s may run at once.
// Freezing: the connection has no timers or keepalives, so it may be opened (HELLO done)
// before the domain is paused and used after it is resumed; a Call() on a paused domain
// simply waits until it runs again.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "qrexec/protocol.h"

namespace odyssey::qrexec {

// Where the agent is and how to treat it.
struct AgentConnectionOptions {
  int domid = -1;                 // the domain's vchan domain id (the agent's VCHAN_DOMAIN)
  std::string domain_name;        // for logs and as "source" of domain->domain calls
  std::string socket_dir;         // socket vchan directory; empty: $VCHAN_SOCKET_DIR or default
  std::string default_user = "user";  // replaces "DEFAULT:" in command lines
  // How long Connect() retries a missing/refused agent socket; nullopt = forever.
  std::optional<std::chrono::milliseconds> connect_timeout = std::chrono::seconds(10);
  // Domain -> domain requests (MSG_TRIGGER_SERVICE*) from the agent. Called on a worker
  // thread; must eventually call ServiceConnect() or ServiceRefused() with req.ident.
  // Unset: every trigger is refused.
  std::function<void(const TriggerRequest& req)> on_trigger;
  // Called (on the reader thread) when the agent frees a data port.
  std::function<void(int port)> on_port_released;
  // VMs: the hypervisor listens on every port's host socket (virtio-serial chardevs named
  // vchan.<domid>.0.<port>.sock), so Call() connects to the data port instead of listening.
  bool connect_data_ports = false;
};

// One call from the host into the domain.
struct CallRequest {
  // "USER:QUBESRPC service+arg source" or "USER:command"; "DEFAULT:" -> default_user.
  std::string cmdline;
  // Caller-owned fds, not closed by Call(). -1: stdin is empty, output is discarded.
  int stdin_fd = -1;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // MSG_JUST_EXEC: stdio of the service is /dev/null; only the exit status returns.
  bool just_exec = false;
};

// What a data port is reserved for, after AllocatePort().
struct PortLease {
  int port = 0;
  int connect_domain = 0;  // the domain the agent will connect to (0 = host)
};

class AgentConnection {
 public:
  // Connects to the agent of opts.domid and exchanges HELLO. Blocks until connected,
  // opts.connect_timeout expires, or the agent misbehaves.
  static Result<std::unique_ptr<AgentConnection>> Connect(const AgentConnectionOptions& opts);
  ~AgentConnection();
  AgentConnection(const AgentConnection&) = delete;
  AgentConnection& operator=(const AgentConnection&) = delete;

  // Negotiated protocol version (2..4).
  uint32_t protocol_version() const;
  // False once the agent closed the channel or broke the protocol.
  bool connected() const;
  // Why the connection ended (empty while connected).
  std::string close_reason() const;
  // Blocks until the connection ends (agent gone or protocol error).
  void WaitClosed() const;
  // Closes the control channel; running calls fail, pending ports are forgotten.
  void Close();

  // Runs one call to completion and returns the service's exit code (125/126/127 are the
  // agent's own codes for problem/refused/not found). An Error means the call could not
  // run or the domain went away mid-call.
  Result<int> Call(const CallRequest& req);

  // ---- lower level, for qrexec-daemon -------------------------------------------------
  // Reserves a free data port in 513..768 for a connection to connect_domain.
  Result<PortLease> AllocatePort(int connect_domain);
  // Frees a port that was never handed to the agent (error paths).
  void ReleasePort(int port);
  // Sends MSG_EXEC_CMDLINE / MSG_JUST_EXEC for a leased port ("DEFAULT:" substituted).
  Status SendExec(uint32_t type, const PortLease& lease, const std::string& cmdline);
  // Tells the agent to listen on connect_port for connect_domain (domain->domain call).
  Status SendServiceConnect(int connect_domain, int connect_port, const std::string& ident);
  // Tells the agent that the request ident was refused.
  Status SendServiceRefused(const std::string& ident);

  struct Impl;

 private:
  explicit AgentConnection(std::unique_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

using AgentConnectionPtr = std::unique_ptr<AgentConnection>;

}  // namespace odyssey::qrexec
