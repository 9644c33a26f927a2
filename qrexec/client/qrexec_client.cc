// qrexec-client: host -> domain call through that domain's qrexec-daemon. Streams
// stdin/stdout/stderr over a data vchan the daemon assigned, and exits with the service's
// exit code (125 when the call itself failed).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <cstring>

#include "qrexec/transport.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {
namespace {

struct ClientArgs {
  std::string socket_dir = "/var/run/qubes";
  std::string domain;
  std::string local_program;
  bool just_exec = false;
  std::string cmdline;
};

// Client protocol v3 with the daemon: HELLO both ways, the request, the data port back.
Result<ExecParams> AskDaemon(const ClientArgs& a, uint32_t type, UniqueFd& keep) {
  std::string path = a.socket_dir + "/qrexec." + a.domain;
  auto fd = ConnectUnix(path);
  if (!fd.ok()) return fd.error().Wrap("cannot reach the qrexec-daemon of '" + a.domain + "'");
  int raw = fd->get();
  auto s = StreamFromFd(UniqueFd(::dup(raw)));
  keep = std::move(fd.value());
  auto ver = Handshake(*s, Channel::kDaemonToClient, kClientProtocolVersion, false);
  if (!ver.ok()) return ver.error().Wrap("HELLO with qrexec-daemon");
  int own = vchan::EffectiveOwnDomain(vchan::Options{});
  ODYSSEY_TRY(s->Send(EncodeExec(type, static_cast<uint32_t>(own), 0, a.cmdline)));
  auto m = s->Recv(Channel::kDaemonToClient, *ver);
  if (!m.ok()) return m.error().Wrap("qrexec-daemon refused the request");
  if (m->type != type) return Error{"qrexec-daemon answered " + MsgTypeName(m->type), EPROTO};
  ExecParams p;
  std::memcpy(&p, m->untrusted_body.data(), sizeof p);
  if (p.connect_port < kFirstDataPort || p.connect_port > kLastDataPort)
    return Error{"qrexec-daemon gave data port " + std::to_string(p.connect_port), EPROTO};
  return p;
}

Result<int> RunLocalProgram(const std::string& program, int* to_remote, int* from_remote,
                            pid_t* pid) {
  int a[2], b[2];
  if (::pipe2(a, O_CLOEXEC) != 0 || ::pipe2(b, O_CLOEXEC) != 0) return Error::Errno("pipe2", "local program");
  SpawnSpec spec;
  spec.argv = {"/bin/sh", "-c", program};
  spec.env = EnvironmentWithout({});
  spec.stdin_fd = b[0];   // remote stdout -> program stdin
  spec.stdout_fd = a[1];  // program stdout -> remote stdin
  spec.stderr_fd = 2;
  spec.new_session = false;
  auto p = Spawn(spec, nullptr);
  ::close(b[0]);
  ::close(a[1]);
  if (!p.ok()) return p.error();
  *to_remote = a[0];
  *from_remote = b[1];
  *pid = *p;
  return 0;
}

int Main(const ClientArgs& a) {
  if (!ParseCmdline(a.cmdline).ok()) {
    Log("invalid command '" + a.cmdline + "': expected USER:COMMAND or USER:QUBESRPC SERVICE+ARG SOURCE");
    return 2;
  }
  uint32_t type = a.just_exec ? MSG_JUST_EXEC : MSG_EXEC_CMDLINE;
  UniqueFd daemon_conn;
  auto p = AskDaemon(a, type, daemon_conn);
  if (!p.ok()) {
    Log(p.error().message);
    return kExitProblem;
  }
  vchan::Options o;
  auto server = vchan::Vchan::Server(static_cast<int>(p->connect_domain), static_cast<int>(p->connect_port), o);
  if (!server.ok()) {
    Log("data channel: " + server.error().message);
    return kExitProblem;
  }
  auto s = StreamFromVchan(std::move(server.value()));
  auto ver = Handshake(*s, Channel::kDataFromService, kProtocolVersion, true);
  if (!ver.ok()) {
    Log("data channel HELLO with " + a.domain + ": " + ver.error().message);
    return kExitProblem;
  }
  CallerFds fds{0, 1, 2, true};
  pid_t local = -1;
  if (!a.local_program.empty()) {
    auto r = RunLocalProgram(a.local_program, &fds.in, &fds.out, &local);
    if (!r.ok()) {
      Log("local program '" + a.local_program + "': " + r.error().message);
      return kExitProblem;
    }
  }
  if (local > 0) fds.close_on_eof = false;  // closed below, once, before waiting for it
  auto code = RunCallerSide(*s, *ver, fds);
  if (local > 0) {
    ::close(fds.in);
    ::close(fds.out);
    int st = 0;
    while (::waitpid(local, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (!code.ok()) {
    Log("call to " + a.domain + " failed: " + code.error().message);
    return kExitProblem;
  }
  return *code;
}

}  // namespace
}  // namespace odyssey::qrexec

int main(int argc, char** argv) {
  using namespace odyssey::qrexec;
  IgnoreSigpipe();
  SetLogPrefix("qrexec-client");
  CLI::App app{
      "qrexec-client: run a command or Qubes RPC service in a domain through its qrexec-daemon.\n"
      "Example: qrexec-client -d work DEFAULT:QUBESRPC qubes.VMShell+ dom0 <script.sh\n"
      "Exit code: the remote command's; 125 when the call could not be made."};
  ClientArgs a;
  bool compat = false;
  app.add_option("--socket-dir", a.socket_dir, "directory of the daemons' qrexec.<domain> sockets")
      ->capture_default_str()
      ->envname("QREXEC_SOCKET_DIR");
  app.add_option("-d,--domain", a.domain, "target domain name or id")->required();
  app.add_option("-l,--local-program", a.local_program,
                 "run this local command (sh -c) with its stdin/stdout connected to the remote's");
  app.add_flag("-e,--just-exec", a.just_exec, "start the command with stdio on /dev/null (MSG_JUST_EXEC)");
  app.add_flag("-t,-T,-w", compat, "accepted for Qubes compatibility; no effect");
  app.add_option("command", a.cmdline, "USER:COMMAND or USER:QUBESRPC SERVICE+ARG SOURCE")->required();
  CLI11_PARSE(app, argc, argv);
  if (a.domain.empty() || a.domain.find('/') != std::string::npos) {
    Log("invalid domain '" + a.domain + "'");
    return 2;
  }
  return Main(a);
}
