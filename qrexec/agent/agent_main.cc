// qrexec-agent: runs inside a domain. vchan server on port 512 for the host's daemon
// (sends HELLO first, and again for every new host connection, so a domain restored from a
// snapshot is reachable again); runs the services the daemon asks for on data ports; and
// forwards domain->domain requests of local qrexec-client-vm processes (trigger socket).
// Works as pid 1 of a sandbox: it reaps every child, its own or orphaned.
#include <sys/prctl.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "base/io.h"
#include "qrexec/agent/services.h"
#include "qrexec/command.h"
#include "qrexec/transport.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {
namespace {

using MessageStreamShared = std::shared_ptr<MessageStream>;

// Capacity of the pipes to and from a service (the kernel default is 64 KiB). Measured with
// bench/qrexec BM_CallThroughput (2 x 3 runs, medians): 64 KiB 185-277 MB/s, 256 KiB
// 381-414 MB/s, 1 MiB 224-233 MB/s (the data falls out of the caches).
constexpr int kPipeBytes = 256 << 10;

class Agent {
 public:
  Agent(ServicePaths paths, std::string agent_socket, ChildReaper& reaper, bool switch_user)
      : paths_(std::move(paths)),
        agent_socket_(std::move(agent_socket)),
        reaper_(reaper),
        base_env_(EnvironmentWithout(ClearedAgentVariables())),
        switch_user_(switch_user) {}

  void Run() {
    if (!agent_socket_.empty()) StartTriggerSocket();
    for (;;) ServeOneHostConnection();
  }

 private:
  void ServeOneHostConnection() {
    auto server = vchan::Vchan::Server(0, kControlPort, vopts_);
    if (!server.ok()) {
      Log("cannot listen on vchan port 512: " + server.error().message);
      std::this_thread::sleep_for(std::chrono::seconds(1));
      return;
    }
    MessageStreamShared s(StreamFromVchan(std::move(server.value())));
    // Sending HELLO first blocks until the daemon connects.
    auto ver = Handshake(*s, Channel::kControlFromDaemon, kProtocolVersion, true);
    if (!ver.ok()) {
      Log("HELLO with the daemon failed: " + ver.error().message);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ctrl_ = s;
      version_ = *ver;
    }
    for (;;) {
      auto m = s->Recv(Channel::kControlFromDaemon, *ver);
      if (!m.ok()) {
        Log("control channel ended: " + m.error().message);
        break;
      }
      if (!Dispatch(s, *m)) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (ctrl_ == s) ctrl_.reset();
    triggers_.clear();  // waiting qrexec-client-vm processes see EOF: refused
    s->Close();
  }

  // Returns false on a protocol violation (the connection is then dropped).
  bool Dispatch(const MessageStreamShared& s, const Message& m) {
    switch (m.type) {
      case MSG_EXEC_CMDLINE:
      case MSG_JUST_EXEC: {
        auto req = ParseExecRequest(m.untrusted_body);
        if (!req.ok()) {
          Log("bad exec request: " + req.error().message);
          return false;
        }
        if (req->connect_port < kFirstDataPort || req->connect_port > kLastDataPort) {
          Log("exec request with data port " + std::to_string(req->connect_port));
          return false;
        }
        WorkerPool::Shared().Run([this, s, type = m.type, r = std::move(req.value())] {
          HandleExec(s, type, r);
        });
        return true;
      }
      case MSG_SERVICE_CONNECT: {
        auto sc = ParseServiceConnect(m.untrusted_body);
        if (!sc.ok()) {
          Log("bad SERVICE_CONNECT: " + sc.error().message);
          return false;
        }
        UniqueFd client = TakeTrigger(sc->ident);
        if (!client) {
          Log("SERVICE_CONNECT for unknown request " + sc->ident);
          return true;
        }
        ExecParams p{sc->connect_domain, sc->connect_port};
        (void)WriteAll(client.get(), &p, sizeof p);
        return true;
      }
      case MSG_SERVICE_REFUSED: {
        auto ident = ParseServiceRefused(m.untrusted_body);
        if (!ident.ok()) return false;
        TakeTrigger(*ident);  // closing it tells qrexec-client-vm
        return true;
      }
      default:
        Log("unexpected " + MsgTypeName(m.type) + " on the control channel");
        return false;
    }
  }

  UniqueFd TakeTrigger(const std::string& ident) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = triggers_.find(ident);
    if (it == triggers_.end()) return UniqueFd();
    UniqueFd fd = std::move(it->second);
    triggers_.erase(it);
    return fd;
  }

  void HandleExec(const MessageStreamShared& ctrl, uint32_t type, const ExecRequest& req) {
    BlockSigpipeInThisThread();
    auto v = ConnectDataPort(static_cast<int>(req.connect_domain), static_cast<int>(req.connect_port));
    if (v.ok()) {
      auto s = StreamFromVchan(std::move(v.value()));
      auto ver = Handshake(*s, Channel::kDataToService, kProtocolVersion, true);
      if (ver.ok()) {
        RunCall(*s, *ver, type, req.cmdline);
      } else {
        Log("data channel HELLO: " + ver.error().message);
      }
    } else {
      Log("data channel: " + v.error().message);
    }
    (void)ctrl->Send(EncodeConnectionTerminated(req.connect_domain, req.connect_port));
  }

  // HOME, USER and LOGNAME of the user a command switches to (as su would set them).
  static void SetUserEnvironment(std::vector<std::string>& env, const std::string& user,
                                 const std::string& home) {
    std::erase_if(env, [](const std::string& kv) {
      return kv.rfind("HOME=", 0) == 0 || kv.rfind("USER=", 0) == 0 || kv.rfind("LOGNAME=", 0) == 0;
    });
    env.push_back("HOME=" + home);
    env.push_back("USER=" + user);
    env.push_back("LOGNAME=" + user);
  }

  // qrexec-client listens on its data port only after the daemon's reply, which races with
  // the daemon's EXEC_CMDLINE to us; the vchan's own retry backs off to 10 ms sleeps. Retry
  // every 100 us for the first 20 ms (a missed race costs ~0.1 ms, not several), then wait
  // up to 10 s with the vchan's backoff.
  Result<vchan::VchanPtr> ConnectDataPort(int domain, int port) {
    using namespace std::chrono;
    vchan::Options o = vopts_;
    o.connect_timeout = milliseconds(0);
    const auto fast_until = steady_clock::now() + milliseconds(20);
    for (;;) {
      auto v = vchan::Vchan::Client(domain, port, o);
      if (v.ok()) return v;
      if (steady_clock::now() >= fast_until) break;
      std::this_thread::sleep_for(microseconds(100));
    }
    o.connect_timeout = seconds(10);
    return vchan::Vchan::Client(domain, port, o);
  }

  static void SendErrorExit(MessageStream& s, int code, const std::string& msg) {
    std::string out = EncodeMessage(MSG_DATA_STDERR, msg + "\n");
    out += EncodeHeader(MSG_DATA_STDOUT, 0);
    out += EncodeHeader(MSG_DATA_STDERR, 0);
    out += EncodeExitCode(code);
    (void)s.Send(out);
  }

  static int ExitCodeForSpawnError(int err) {
    if (err == ENOENT) return kExitNotFound;
    if (err == EACCES || err == ENOEXEC || err == EPERM) return kExitRefused;
    return kExitProblem;
  }

  void RunCall(MessageStream& s, uint32_t version, uint32_t type, const std::string& cmdline) {
    auto cmd = ParseCmdline(cmdline);
    if (!cmd.ok()) return SendErrorExit(s, kExitProblem, "qrexec-agent: " + cmd.error().message);
    SpawnSpec spec;
    spec.env = ServiceEnvironment(base_env_, *cmd);
    // A root agent runs the command as USER (Qubes' behaviour); QREXEC_NO_ROOT or a non-root
    // agent runs everything as itself.
    Result<RunAs> run_as = Error{"", 0};
    if (switch_user_ && cmd->user != "root") {
      run_as = LookUpUser(cmd->user);
      if (!run_as.ok()) {
        Log("call as '" + cmd->user + "' refused: " + run_as.error().message);
        return SendErrorExit(s, kExitRefused, "qrexec-agent: cannot run as '" + cmd->user +
                                                  "': " + run_as.error().message);
      }
      spec.run_as = &run_as.value();
      SetUserEnvironment(spec.env, cmd->user, run_as->home);
    }
    if (cmd->is_service) {
      auto found = FindService(paths_, cmd->service, cmd->argument);
      if (!found)
        return SendErrorExit(s, kExitNotFound,
                             "qrexec-agent: service " + cmd->service_full() + " not found");
      if (found->is_socket) {
        if (type == MSG_JUST_EXEC) {
          Log("JUST_EXEC of socket service " + cmd->service_full() + " refused");
          return SendErrorExit(s, kExitRefused, "qrexec-agent: socket service cannot be just-exec'd");
        }
        return RunSocketService(s, version, *cmd, found->path);
      }
      spec.argv = {found->path};
      if (!cmd->argument.empty()) spec.argv.push_back(cmd->argument);
    }
    // A service file is exec'd as it is; a command as `/bin/sh -c COMMAND` would run it
    // (directly when it has no shell syntax, see ../command.h).
    auto start = [&](ChildReaper* reaper) {
      return cmd->is_service ? Spawn(spec, reaper) : SpawnCommand(spec, cmd->command, reaper);
    };
    if (type == MSG_JUST_EXEC) {
      auto pid = start(nullptr);  // not watched: the reaper collects it
      if (!pid.ok())
        return SendErrorExit(s, ExitCodeForSpawnError(pid.error().code), "qrexec-agent: " + pid.error().message);
      std::string out = EncodeHeader(MSG_DATA_STDOUT, 0) + EncodeHeader(MSG_DATA_STDERR, 0);
      out += EncodeExitCode(0);
      (void)s.Send(out);
      return;
    }
    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return SendErrorExit(s, kExitProblem, "qrexec-agent: pipe failed");
    UniqueFd in_r(in[0]), in_w(in[1]);
    if (::pipe2(out, O_CLOEXEC) != 0) return SendErrorExit(s, kExitProblem, "qrexec-agent: pipe failed");
    UniqueFd out_r(out[0]), out_w(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) return SendErrorExit(s, kExitProblem, "qrexec-agent: pipe failed");
    UniqueFd err_r(err[0]), err_w(err[1]);
    // Room for a burst in each direction: the service and the agent wake each other less.
    SetPipeSize(in_w.get(), kPipeBytes);
    SetPipeSize(out_w.get(), kPipeBytes);
    spec.stdin_fd = in_r.get();
    spec.stdout_fd = out_w.get();
    spec.stderr_fd = err_w.get();
    auto pid = start(&reaper_);
    in_r.reset();
    out_w.reset();
    err_w.reset();
    if (!pid.ok())
      return SendErrorExit(s, ExitCodeForSpawnError(pid.error().code), "qrexec-agent: " + pid.error().message);
    ServiceFds fds{std::move(in_w), std::move(out_r), std::move(err_r)};
    if (cmd->is_service)
      fds.exit_on_client_eof = LoadServiceConfig(paths_, cmd->service, cmd->argument).exit_on_client_eof;
    pid_t child = *pid;
    Status st = RunServiceSide(s, version, std::move(fds),
                               [&] { return ExitCodeFromStatus(reaper_.Wait(child)); });
    if (!st.ok()) Log("call " + cmd->service_full() + ": " + st.error().message);
  }

  void RunSocketService(MessageStream& s, uint32_t version, const Cmdline& cmd,
                        const std::string& path) {
    auto sock = ConnectUnix(path);
    if (!sock.ok()) return SendErrorExit(s, kExitProblem, "qrexec-agent: " + sock.error().message);
    ServiceConfig cfg = LoadServiceConfig(paths_, cmd.service, cmd.argument);
    if (!cfg.skip_service_descriptor) {
      std::string desc = cmd.service_full() + " " + cmd.source;
      desc.push_back('\0');
      if (!WriteAll(sock->get(), desc.data(), desc.size()).ok())
        return SendErrorExit(s, kExitProblem, "qrexec-agent: socket service closed early");
    }
    UniqueFd in(::dup(sock->get()));
    if (!in) return SendErrorExit(s, kExitProblem, "qrexec-agent: dup failed");
    ServiceFds fds{std::move(in), std::move(sock.value()), UniqueFd()};
    fds.exit_on_client_eof = cfg.exit_on_client_eof;
    Status st = RunServiceSide(s, version, std::move(fds), [] { return 0; });
    if (!st.ok()) Log("socket service " + cmd.service_full() + ": " + st.error().message);
  }

  // ---- trigger socket (qrexec-client-vm) ---------------------------------------------
  void StartTriggerSocket() {
    size_t slash = agent_socket_.rfind('/');
    if (slash != std::string::npos && slash > 0) (void)MakeDirs(agent_socket_.substr(0, slash));
    auto l = ListenUnix(agent_socket_, 0666);
    if (!l.ok()) {
      Log("no trigger socket, qrexec-client-vm will not work: " + l.error().message);
      return;
    }
    std::thread([this, fd = std::move(l.value())]() mutable {
      for (;;) {
        int c = ::accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
          if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE) continue;
          Log("trigger socket accept: " + Error::Errno("accept", agent_socket_).message);
          return;
        }
        std::thread([this, c] { HandleTriggerClient(UniqueFd(c)); }).detach();
      }
    }).detach();
  }

  void HandleTriggerClient(UniqueFd fd) {
    MsgHeader h;
    if (!ReadExact(fd.get(), &h, sizeof h).ok()) return;
    Status st = ValidateHeader(h, Channel::kTriggerClient, kProtocolVersion);
    if (!st.ok()) return Log("trigger client: " + st.error().message);
    std::string body(h.len, '\0');
    if (!ReadExact(fd.get(), body.data(), body.size()).ok()) return;
    auto req = ParseTrigger(h.type, body);
    if (!req.ok()) return Log("trigger client: " + req.error().message);
    MessageStreamShared ctrl;
    TriggerRequest fwd = *req;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ctrl_) return Log("service request " + req->service_name + " refused: no daemon connected");
      ctrl = ctrl_;
      fwd.ident = "SOCKET" + std::to_string(++next_ident_);
      if (version_ < 4) fwd.source_domain.clear();
      triggers_[fwd.ident] = std::move(fd);
    }
    if (!ctrl->Send(EncodeTrigger(fwd)).ok()) TakeTrigger(fwd.ident);
  }

  const ServicePaths paths_;
  const std::string agent_socket_;
  ChildReaper& reaper_;
  const std::vector<std::string> base_env_;
  const bool switch_user_;
  const vchan::Options vopts_{};
  std::mutex mu_;
  MessageStreamShared ctrl_;
  uint32_t version_ = kProtocolVersion;
  std::map<std::string, UniqueFd> triggers_;
  uint64_t next_ident_ = 0;
};

}  // namespace
}  // namespace odyssey::qrexec

int main(int argc, char** argv) {
  using namespace odyssey::qrexec;
  ChildReaper& reaper = ChildReaper::Install();  // before any thread
  EnsureStdFds();
  IgnoreSigpipe();
  SetLogPrefix("qrexec-agent");
  CLI::App app{
      "qrexec-agent: runs Qubes RPC services inside a domain for the host's qrexec-daemon.\n"
      "Listens on vchan port 512 (socket vchan: $VCHAN_SOCKET_DIR, own domain id from "
      "$VCHAN_DOMAIN).\nServices are looked up in the Odyssey rpc dir, then "
      "$QREXEC_SERVICE_PATH or /usr/local/etc/qubes-rpc:/etc/qubes-rpc."};
  bool no_fork_server = false;
  std::string agent_socket = "/var/run/qubes/qrexec-agent";
  std::optional<std::string> rpc_dir;
  app.add_flag("--no-fork-server", no_fork_server, "accepted for Qubes compatibility (no fork server is used)");
  app.add_option("--agent-socket", agent_socket,
                 "trigger socket for qrexec-client-vm (empty: none)")
      ->capture_default_str()
      ->expected(0, 1);
  app.add_option("--rpc-dir", rpc_dir,
                 "Odyssey service directory searched first (default: $ODYSSEY_RPC_DIR or "
                 "/etc/odyssey/qubes-rpc; empty: none)")
      ->expected(0, 1);
  CLI11_PARSE(app, argc, argv);
  // Values inherited by the agent must never reach a service.
  for (const auto& v : ClearedAgentVariables()) ::unsetenv(v.c_str());
  if (::getpid() != 1) ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Qubes: QREXEC_NO_ROOT=1 (or not being root) means commands run as the agent's own user.
  const char* no_root = std::getenv("QREXEC_NO_ROOT");
  bool switch_user = ::geteuid() == 0 && !(no_root && *no_root && std::string(no_root) != "0");
  // A domain without a user database (a minimal initrd whose init runs us as root) cannot
  // switch to anyone: everything runs as root there, as before.
  if (switch_user && ::access("/etc/passwd", F_OK) != 0) {
    Log("no /etc/passwd: commands run as root whatever USER they name");
    switch_user = false;
  }
  Agent agent(ResolveServicePaths(rpc_dir), agent_socket, reaper, switch_user);
  agent.Run();
  return 0;
}
