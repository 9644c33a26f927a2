#include "qrexec/host/agent_connection.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "qrexec/transport.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {

struct AgentConnection::Impl : std::enable_shared_from_this<AgentConnection::Impl> {
  AgentConnectionOptions opts;
  MessageStreamPtr ctrl;
  uint32_t version = kProtocolVersion;
  mutable std::mutex mu;
  mutable std::condition_variable cv;
  bool closed = false;
  std::string reason;
  std::array<int, kDataPortCount> port_owner;  // -1 free, else the connect domain
  UniqueFd dead_r, dead_w;                     // dead_r readable once closed
  std::thread reader;

  vchan::Options VchanOptions() const {
    vchan::Options o;
    o.socket_dir = opts.socket_dir;
    o.own_domain = 0;
    return o;
  }

  void MarkClosed(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return;
      closed = true;
      reason = why;
    }
    cv.notify_all();
    char c = 1;
    (void)!::write(dead_w.get(), &c, 1);
    ctrl->Close();
  }

  void ReleasePort(int port, std::optional<int> expected_domain) {
    if (port < kFirstDataPort || port > kLastDataPort) return;
    bool released = false;
    {
      std::lock_guard<std::mutex> lock(mu);
      int& owner = port_owner[port - kFirstDataPort];
      if (owner >= 0 && (!expected_domain || owner == *expected_domain)) {
        owner = -1;
        released = true;
      }
    }
    if (released && opts.on_port_released) opts.on_port_released(port);
  }

  // A malformed trigger ends the connection (the agent validated it already: only a
  // misbehaving agent sends one).
  Status HandleTrigger(uint32_t type, const std::string& untrusted_body) {
    auto req = ParseTrigger(type, untrusted_body);
    if (!req.ok()) return req.error();
    if (!opts.on_trigger) return ctrl->Send(EncodeServiceRefused(req->ident));
    WorkerPool::Shared().Run([self = shared_from_this(), r = std::move(req.value())] {
      self->opts.on_trigger(r);
    });
    return OkStatus();
  }

  void ReadLoop() {
    for (;;) {
      auto m = ctrl->Recv(Channel::kControlFromAgent, version);
      if (!m.ok()) {
        MarkClosed(m.error().message);
        return;
      }
      switch (m->type) {
        case MSG_CONNECTION_TERMINATED: {
          auto p = ParseConnectionTerminated(m->untrusted_body);
          if (!p.ok()) {
            MarkClosed(p.error().message);
            return;
          }
          ReleasePort(static_cast<int>(p->connect_port), static_cast<int>(p->connect_domain));
          break;
        }
        case MSG_TRIGGER_SERVICE:
        case MSG_TRIGGER_SERVICE3:
        case MSG_TRIGGER_SERVICE4: {
          Status st = HandleTrigger(m->type, m->untrusted_body);
          if (!st.ok()) {
            MarkClosed(st.error().message);
            return;
          }
          break;
        }
        default:  // HELLO again: the agent restarted the protocol on a live channel.
          MarkClosed("qrexec protocol: unexpected " + MsgTypeName(m->type) + " from agent");
          return;
      }
    }
  }

  Status CheckOpen() const {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) return Error{"qrexec: connection to " + opts.domain_name + " closed: " + reason, EPIPE};
    return OkStatus();
  }
};

AgentConnection::AgentConnection(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AgentConnection::~AgentConnection() {
  Close();
  if (impl_->reader.joinable()) impl_->reader.join();
}

Result<std::unique_ptr<AgentConnection>> AgentConnection::Connect(
    const AgentConnectionOptions& opts) {
  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  if (impl->opts.domain_name.empty()) impl->opts.domain_name = "domain " + std::to_string(opts.domid);
  impl->port_owner.fill(-1);
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::Errno("pipe2", "agent connection");
  impl->dead_r.reset(p[0]);
  impl->dead_w.reset(p[1]);
  vchan::Options vo = impl->VchanOptions();
  vo.connect_timeout = opts.connect_timeout;
  auto v = vchan::Vchan::Client(opts.domid, kControlPort, vo);
  if (!v.ok()) return v.error().Wrap("connecting to the qrexec agent of " + impl->opts.domain_name);
  impl->ctrl = StreamFromVchan(std::move(v.value()));
  // The agent sends HELLO first; we answer.
  auto ver = Handshake(*impl->ctrl, Channel::kControlFromAgent, kProtocolVersion, false);
  if (!ver.ok()) return ver.error().Wrap("HELLO with the agent of " + impl->opts.domain_name);
  impl->version = *ver;
  std::unique_ptr<AgentConnection> conn(new AgentConnection(std::move(impl)));
  Impl* raw = conn->impl_.get();
  raw->reader = std::thread([raw] { raw->ReadLoop(); });
  return conn;
}

uint32_t AgentConnection::protocol_version() const { return impl_->version; }

bool AgentConnection::connected() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return !impl_->closed;
}

std::string AgentConnection::close_reason() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->reason;
}

void AgentConnection::WaitClosed() const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [this] { return impl_->closed; });
}

void AgentConnection::Close() { impl_->MarkClosed("closed by the host"); }

Result<PortLease> AgentConnection::AllocatePort(int connect_domain) {
  ODYSSEY_TRY(impl_->CheckOpen());
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (int i = 0; i < kDataPortCount; ++i) {
    if (impl_->port_owner[i] < 0) {
      impl_->port_owner[i] = connect_domain;
      return PortLease{kFirstDataPort + i, connect_domain};
    }
  }
  return Error{"qrexec: all " + std::to_string(kDataPortCount) + " data ports of " +
                   impl_->opts.domain_name + " are in use",
               EBUSY};
}

void AgentConnection::ReleasePort(int port) { impl_->ReleasePort(port, std::nullopt); }

Status AgentConnection::SendExec(uint32_t type, const PortLease& lease, const std::string& cmdline) {
  ODYSSEY_TRY(impl_->CheckOpen());
  std::string cmd = cmdline;
  constexpr std::string_view kDefault = "DEFAULT:";
  if (cmd.compare(0, kDefault.size(), kDefault) == 0)
    cmd = impl_->opts.default_user + ":" + cmd.substr(kDefault.size());
  if (cmd.size() + 1 > kMaxCmdlineLen)
    return Error{"qrexec: command line longer than " + std::to_string(kMaxCmdlineLen) + " bytes", E2BIG};
  if (cmd.find('\0') != std::string::npos) return Error{"qrexec: command line contains NUL", EINVAL};
  return impl_->ctrl->Send(EncodeExec(type, static_cast<uint32_t>(lease.connect_domain),
                                      static_cast<uint32_t>(lease.port), cmd));
}

Status AgentConnection::SendServiceConnect(int connect_domain, int connect_port,
                                           const std::string& ident) {
  ODYSSEY_TRY(impl_->CheckOpen());
  if (!IsValidIdent(ident)) return Error{"qrexec: invalid ident '" + ident + "'", EINVAL};
  return impl_->ctrl->Send(EncodeServiceConnect(static_cast<uint32_t>(connect_domain),
                                                static_cast<uint32_t>(connect_port), ident));
}

Status AgentConnection::SendServiceRefused(const std::string& ident) {
  ODYSSEY_TRY(impl_->CheckOpen());
  if (!IsValidIdent(ident)) return Error{"qrexec: invalid ident '" + ident + "'", EINVAL};
  return impl_->ctrl->Send(EncodeServiceRefused(ident));
}

Result<int> AgentConnection::Call(const CallRequest& req) {
  auto lease = AllocatePort(0);
  if (!lease.ok()) return lease.error();
  // Listen (or, for VMs, connect to the hypervisor's socket) before telling the agent, so
  // its connect succeeds on the first try.
  vchan::Options vo = impl_->VchanOptions();
  vo.connect_timeout = std::chrono::seconds(10);
  auto server = impl_->opts.connect_data_ports
                    ? vchan::Vchan::Client(impl_->opts.domid, lease->port, vo)
                    : vchan::Vchan::Server(impl_->opts.domid, lease->port, impl_->VchanOptions());
  if (!server.ok()) {
    ReleasePort(lease->port);
    return server.error().Wrap("data channel for " + impl_->opts.domain_name);
  }
  Status st = SendExec(req.just_exec ? MSG_JUST_EXEC : MSG_EXEC_CMDLINE, *lease, req.cmdline);
  if (!st.ok()) {
    ReleasePort(lease->port);
    return st.error();
  }
  vchan::VchanPtr v = std::move(server.value());
  // Wait for the agent to connect, or for the control channel to die.
  for (;;) {
    pollfd p[2] = {{v->PollFd(), POLLIN, 0}, {impl_->dead_r.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("poll", "data channel");
    }
    if (p[0].revents) break;
    if (p[1].revents) {
      ODYSSEY_TRY(impl_->CheckOpen());
    }
  }
  auto stream = StreamFromVchan(std::move(v));
  auto ver = Handshake(*stream, Channel::kDataFromService, kProtocolVersion, true);
  if (!ver.ok()) return ver.error().Wrap("data channel HELLO with " + impl_->opts.domain_name);
  CallerFds fds{req.stdin_fd, req.stdout_fd, req.stderr_fd, false};
  auto code = RunCallerSide(*stream, *ver, fds);
  if (!code.ok()) return code.error().Wrap("call to " + impl_->opts.domain_name);
  return code;
}

}  // namespace odyssey::qrexec
