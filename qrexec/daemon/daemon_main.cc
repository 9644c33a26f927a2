// qrexec-daemon: host side of one domain. Holds the control vchan to the domain's agent
// (reconnecting if the agent goes away: a killed agent or a restored snapshot never takes the
// daemon down), serves local clients on SOCKET_DIR/qrexec.<domid> (+ qrexec.<name>) with
// client protocol v3, and decides the domain's own requests (qrexec-client-vm) through the
// policy socket or policy program before connecting them to the target's daemon.
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "base/io.h"
#include "qrexec/host/agent_connection.h"
#include "qrexec/transport.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {
namespace {

struct DaemonArgs {
  int domid = -1;
  std::string name;
  std::string default_user = "user";
  std::string uuid;
  std::string socket_dir = "/var/run/qubes";
  std::string policy_program;
  std::string policy_socket;
  bool direct = false;
  int startup_timeout = 60;
};

class Daemon {
 public:
  explicit Daemon(DaemonArgs a) : a_(std::move(a)) {}

  int Run() {
    auto first = ConnectAgent(std::chrono::seconds(a_.startup_timeout));
    if (!first.ok()) {
      Log(first.error().message);
      return 1;
    }
    if (Status st = CreateSockets(); !st.ok()) {
      Log(st.error().message);
      return 1;
    }
    Log("connected to " + a_.name + " (domain " + std::to_string(a_.domid) + "), protocol " +
        std::to_string(first.value()->protocol_version()));
    std::shared_ptr<AgentConnection> conn = std::move(first.value());
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        conn_ = conn;
      }
      conn->WaitClosed();
      Log("agent connection of " + a_.name + " ended: " + conn->close_reason() + "; reconnecting");
      {
        std::lock_guard<std::mutex> lock(mu_);
        conn_.reset();
        // Clients waiting for ports of the dead connection see EOF now.
        for (auto& [port, fd] : port_clients_) ::shutdown(fd, SHUT_RDWR);
        port_clients_.clear();
      }
      conn.reset();
      for (;;) {
        auto next = ConnectAgent(std::nullopt);
        if (next.ok()) {
          conn = std::move(next.value());
          Log("reconnected to " + a_.name);
          break;
        }
        Log(next.error().message);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }

 private:
  Result<std::unique_ptr<AgentConnection>> ConnectAgent(std::optional<std::chrono::milliseconds> timeout) {
    AgentConnectionOptions o;
    o.domid = a_.domid;
    o.domain_name = a_.name;
    o.default_user = a_.default_user;
    o.connect_timeout = timeout;
    o.on_trigger = [this](const TriggerRequest& r) { HandleTrigger(r); };
    o.on_port_released = [this](int port) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = port_clients_.find(port);
      if (it != port_clients_.end()) {
        ::shutdown(it->second, SHUT_RDWR);
        port_clients_.erase(it);
      }
    };
    return AgentConnection::Connect(o);
  }

  std::shared_ptr<AgentConnection> Current() {
    std::lock_guard<std::mutex> lock(mu_);
    return conn_;
  }

  Status CreateSockets() {
    ODYSSEY_TRY(MakeDirs(a_.socket_dir));
    std::string path = a_.socket_dir + "/qrexec." + std::to_string(a_.domid);
    auto l = ListenUnix(path, 0660);
    if (!l.ok()) return l.error();
    for (const std::string& alias : {a_.name, a_.uuid.empty() ? std::string() : "uuid:" + a_.uuid}) {
      if (alias.empty() || alias == std::to_string(a_.domid)) continue;
      std::string link = a_.socket_dir + "/qrexec." + alias;
      ::unlink(link.c_str());
      if (::symlink(("qrexec." + std::to_string(a_.domid)).c_str(), link.c_str()) != 0)
        return Error::Errno("symlink", link);
    }
    std::thread([this, fd = std::move(l.value())]() mutable { AcceptLoop(std::move(fd)); }).detach();
    return OkStatus();
  }

  void AcceptLoop(UniqueFd listen) {
    for (;;) {
      int c = ::accept4(listen.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        Log(Error::Errno("accept", "client socket").message);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
      WorkerPool::Shared().Run([this, c] { HandleClient(c); });
    }
  }

  void HandleClient(int raw_fd) {
    BlockSigpipeInThisThread();
    UniqueFd keep(raw_fd);
    auto s = StreamFromFd(UniqueFd(::dup(raw_fd)));
    auto ver = Handshake(*s, Channel::kClientToDaemon, kClientProtocolVersion, true);
    if (!ver.ok()) return Log("client: " + ver.error().message);
    auto m = s->Recv(Channel::kClientToDaemon, *ver);
    if (!m.ok()) return Log("client: " + m.error().message);
    auto conn = Current();
    if (!conn) return Log("client request refused: " + a_.name + " is not connected");
    if (m->type == MSG_SERVICE_CONNECT) {
      auto sc = ParseServiceConnect(m->untrusted_body);
      if (!sc.ok()) return Log("client: " + sc.error().message);
      Status st = conn->SendServiceConnect(static_cast<int>(sc->connect_domain),
                                           static_cast<int>(sc->connect_port), sc->ident);
      if (!st.ok()) Log("client: " + st.error().message);
      return;
    }
    auto req = ParseExecRequest(m->untrusted_body);
    if (!req.ok()) return Log("client: " + req.error().message);
    if (!ParseCmdline(req->cmdline).ok()) return Log("client: invalid command line");
    PortLease lease{static_cast<int>(req->connect_port), static_cast<int>(req->connect_domain)};
    if (req->connect_port == 0) {
      auto l = conn->AllocatePort(static_cast<int>(req->connect_domain));
      if (!l.ok()) return Log("client: " + l.error().message);
      lease = *l;
      // Reply first (the client then listens), then tell the agent (it retries connecting).
      if (!s->Send(EncodeExecParams(m->type, static_cast<uint32_t>(a_.domid),
                                    static_cast<uint32_t>(lease.port))).ok()) {
        conn->ReleasePort(lease.port);
        return;
      }
      std::lock_guard<std::mutex> lock(mu_);
      port_clients_[lease.port] = raw_fd;
    } else if (lease.port < kFirstDataPort || lease.port > kLastDataPort) {
      return Log("client: data port " + std::to_string(lease.port) + " out of range");
    }
    Status st = conn->SendExec(m->type, lease, req->cmdline);
    if (!st.ok()) {
      Log("client: " + st.error().message);
      return Forget(lease.port, raw_fd);
    }
    // Keep the client's socket open until the port is released (or the client leaves).
    char buf[256];
    while (::read(raw_fd, buf, sizeof buf) > 0) {
    }
    Forget(lease.port, raw_fd);
  }

  void Forget(int port, int fd) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = port_clients_.find(port);
    if (it != port_clients_.end() && it->second == fd) port_clients_.erase(it);
  }

  // ---- domain -> domain ------------------------------------------------------------------
  Result<PolicyReply> AskPolicySocket(const PolicyQuery& q) {
    auto fd = ConnectUnix(a_.policy_socket);
    if (!fd.ok()) return fd.error().Wrap("policy socket");
    std::string query = EncodePolicyQuery(q);
    ODYSSEY_TRY(WriteAll(fd->get(), query.data(), query.size()));
    std::string reply;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd->get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::Errno("read", a_.policy_socket);
      if (n == 0) break;
      reply.append(buf, static_cast<size_t>(n));
      if (reply.size() > 65536) return Error{"policy reply larger than 64 KiB", EPROTO};
    }
    return ParsePolicyReply(reply);
  }

  Result<PolicyReply> AskPolicyProgram(const PolicyQuery& q) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return Error::Errno("pipe2", "policy program");
    UniqueFd out_r(out[0]), out_w(out[1]);
    SpawnSpec spec;
    spec.argv = {a_.policy_program, "--", std::to_string(q.domain_id), q.source,
                 q.intended_target, q.service_and_arg, q.process_ident};
    spec.env = EnvironmentWithout({});
    spec.stdout_fd = out_w.get();
    spec.stderr_fd = 2;
    auto pid = Spawn(spec, &ChildReaper::Install());
    out_w.reset();
    if (!pid.ok()) return pid.error().Wrap("policy program");
    std::string reply;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out_r.get(), buf, sizeof buf)) > 0 && reply.size() < 65536)
      reply.append(buf, static_cast<size_t>(n));
    int code = ExitCodeFromStatus(ChildReaper::Install().Wait(*pid));
    if (reply.rfind("result=", 0) == 0) return ParsePolicyReply(reply);
    // Qubes' contract (qrexec-policy-exec): no answer on stdout means the program carried
    // the call out itself (qrexec-client -c ...); exit 0 = done, anything else = refused.
    if (code == 0) return Error{"handled by the policy program", kHandledByProgram};
    return Error{"policy program exited with " + std::to_string(code), 0};
  }

  // Error code of AskPolicyProgram() when the program connected the call itself.
  static constexpr int kHandledByProgram = -1;

  void HandleTrigger(const TriggerRequest& req) {
    auto conn = Current();
    if (!conn) return;
    std::string service = req.service_name;
    if (service.find('+') == std::string::npos) service += "+";
    PolicyQuery q{a_.domid, a_.name, req.target_domain, service, req.ident};
    Result<PolicyReply> decision = Error{"no policy configured (--policy-socket / --policy-program)", 0};
    if (!a_.policy_socket.empty()) decision = AskPolicySocket(q);
    else if (!a_.policy_program.empty()) decision = AskPolicyProgram(q);
    std::string what = a_.name + " -> " + req.target_domain + " " + service;
    if (!decision.ok() && decision.error().code == kHandledByProgram) {
      Log("policy program connected " + what);
      return;
    }
    if (!decision.ok() || !decision->allow) {
      Log("denied " + what + (decision.ok() ? "" : ": " + decision.error().message));
      (void)conn->SendServiceRefused(req.ident);
      return;
    }
    Status st = ConnectToTarget(*conn, req, *decision, service);
    if (!st.ok()) {
      Log("allowed " + what + " but failed: " + st.error().message);
      (void)conn->SendServiceRefused(req.ident);
      return;
    }
    Log("allowed " + what + " (target " + decision->target + ")");
  }

  // Asks the target's daemon to run the service with its agent connecting to our domain,
  // then tells our agent to serve that data port (MSG_SERVICE_CONNECT).
  Status ConnectToTarget(AgentConnection& conn, const TriggerRequest& req,
                         const PolicyReply& d, const std::string& service) {
    const std::string& target = d.target;
    if (target == a_.name || target == std::to_string(a_.domid))
      return Error{"a domain cannot call itself", EINVAL};
    if (target[0] == '@' || target == "dom0")
      return Error{"target '" + target + "' is not served by qrexec-daemon (needs the engine)", EINVAL};
    auto fd = ConnectUnix(a_.socket_dir + "/qrexec." + target);
    if (!fd.ok()) return fd.error().Wrap("daemon of '" + target + "'");
    auto s = StreamFromFd(std::move(fd.value()));
    auto ver = Handshake(*s, Channel::kDaemonToClient, kClientProtocolVersion, false);
    if (!ver.ok()) return ver.error();
    std::string cmdline = (d.user.empty() ? std::string("DEFAULT") : d.user) + ":QUBESRPC " +
                          service + " " + a_.name;
    ODYSSEY_TRY(s->Send(EncodeExec(MSG_EXEC_CMDLINE, static_cast<uint32_t>(a_.domid), 0, cmdline)));
    auto m = s->Recv(Channel::kDaemonToClient, *ver);
    if (!m.ok()) return m.error().Wrap("daemon of '" + target + "'");
    if (m->type != MSG_EXEC_CMDLINE) return Error{"target daemon answered " + MsgTypeName(m->type), EPROTO};
    ExecParams p;
    std::memcpy(&p, m->untrusted_body.data(), sizeof p);
    if (p.connect_port < kFirstDataPort || p.connect_port > kLastDataPort)
      return Error{"target daemon gave port " + std::to_string(p.connect_port), EPROTO};
    return conn.SendServiceConnect(static_cast<int>(p.connect_domain), static_cast<int>(p.connect_port),
                                   req.ident);
  }

  DaemonArgs a_;
  std::mutex mu_;
  std::shared_ptr<AgentConnection> conn_;
  std::map<int, int> port_clients_;  // data port -> client socket to close on release
};

}  // namespace
}  // namespace odyssey::qrexec

int main(int argc, char** argv) {
  using namespace odyssey::qrexec;
  ChildReaper::Install();  // before any thread: policy programs are our children
  IgnoreSigpipe();
  SetLogPrefix("qrexec-daemon");
  CLI::App app{
      "qrexec-daemon: host side of one domain's qrexec. Connects to the agent (vchan port 512; "
      "socket vchan dir $VCHAN_SOCKET_DIR), serves local clients on SOCKET_DIR/qrexec.DOMID "
      "(+ qrexec.NAME), and asks policy for the domain's own requests."};
  DaemonArgs a;
  std::string user_pos;
  app.add_option("--uuid", a.uuid, "domain UUID (adds the qrexec.uuid:UUID symlink)");
  app.add_option("--socket-dir", a.socket_dir, "directory of the client sockets")
      ->capture_default_str()
      ->envname("QREXEC_SOCKET_DIR");
  app.add_option("--policy-program", a.policy_program,
                 "run as P -- DOMID SOURCE TARGET SERVICE+ARG IDENT; stdout 'result=...' lines "
                 "are the decision; without them exit 0 = the program connected the call itself "
                 "(qrexec-client -c, as Qubes' qrexec-policy-exec), else refused");
  app.add_option("--policy-socket", a.policy_socket,
                 "policy daemon socket (request/answer lines as in Qubes' qrexec-policy-daemon)")
      ->envname("QREXEC_POLICY_SOCKET");
  app.add_flag("--direct", a.direct, "accepted for Qubes compatibility (never forks to background)");
  app.add_option("--default-user", a.default_user, "user for DEFAULT: command lines")->capture_default_str();
  app.add_option("--startup-timeout", a.startup_timeout, "seconds to wait for the agent at start")
      ->capture_default_str()
      ->envname("QREXEC_STARTUP_TIMEOUT");
  app.add_option("domid", a.domid, "the domain's vchan domain id")->required()->check(CLI::Range(1, 0x7fff));
  app.add_option("name", a.name, "the domain's name")->required();
  app.add_option("default_user", user_pos, "default user (Qubes' third positional)");
  CLI11_PARSE(app, argc, argv);
  if (!user_pos.empty()) a.default_user = user_pos;
  if (!IsValidDomainName(a.name)) {
    Log("invalid domain name '" + a.name + "'");
    return 2;
  }
  if (!IsValidUserName(a.default_user)) {
    Log("invalid default user '" + a.default_user + "'");
    return 2;
  }
  Daemon d(std::move(a));
  return d.Run();
}
