// qrexec-client: host -> domain call through that domain's qrexec-daemon. Streams
// stdin/stdout/stderr over a data vchan the daemon assigned, and exits with the service's
// exit code (125 when the call itself failed).
#include <fcntl.h>
#include <getopt.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "qrexec/command.h"
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
  std::string connect_existing;  // -c REQUEST_ID,SRC_DOMAIN_NAME,SRC_DOMAIN_ID
};

// -c: the parts of REQUEST_ID,SRC_DOMAIN_NAME,SRC_DOMAIN_ID, each validated.
struct ConnectExisting {
  std::string ident;
  std::string source_name;
  uint32_t source_domid = 0;
};

Result<ConnectExisting> ParseConnectExisting(const std::string& untrusted) {
  size_t a = untrusted.find(',');
  size_t b = a == std::string::npos ? a : untrusted.find(',', a + 1);
  if (b == std::string::npos || untrusted.find(',', b + 1) != std::string::npos)
    return Error{"-c '" + untrusted + "': expected REQUEST_ID,SRC_DOMAIN_NAME,SRC_DOMAIN_ID", EINVAL};
  ConnectExisting c;
  c.ident = untrusted.substr(0, a);
  c.source_name = untrusted.substr(a + 1, b - a - 1);
  std::string id = untrusted.substr(b + 1);
  if (!IsValidIdent(c.ident)) return Error{"-c: invalid request id '" + c.ident + "'", EINVAL};
  if (!IsValidDomainName(c.source_name))
    return Error{"-c: invalid source domain name '" + c.source_name + "'", EINVAL};
  if (id.empty() || id.size() > 5 || id.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(id) > 0x7fff)
    return Error{"-c: invalid source domain id '" + id + "'", EINVAL};
  c.source_domid = static_cast<uint32_t>(std::stoul(id));
  return c;
}

// Client protocol v3 with the daemon: HELLO both ways, the request, the data port back.
// connect_domain: who will serve the data port (our own domain, or with -c the caller's).
Result<ExecParams> AskDaemon(const ClientArgs& a, uint32_t type, uint32_t connect_domain,
                             UniqueFd& keep) {
  std::string path = a.socket_dir + "/qrexec." + a.domain;
  auto fd = ConnectUnix(path);
  if (!fd.ok()) return fd.error().Wrap("cannot reach the qrexec-daemon of '" + a.domain + "'");
  int raw = fd->get();
  auto s = StreamFromFd(UniqueFd(::dup(raw)));
  keep = std::move(fd.value());
  // Our HELLO and the request go out at once, without waiting for the daemon's HELLO (it
  // sends it first and then reads ours; the request waits in the socket meanwhile). The
  // request's encoding is the same in every client protocol version, so this saves a round
  // trip with the daemon without changing a byte on the wire.
  ODYSSEY_TRY(s->Send(EncodeHello(kClientProtocolVersion) +
                      EncodeExec(type, connect_domain, 0, a.cmdline)));
  auto hello = s->Recv(Channel::kDaemonToClient, kMinProtocolVersion);
  if (!hello.ok()) return hello.error().Wrap("HELLO with qrexec-daemon");
  if (hello->type != MSG_HELLO)
    return Error{"qrexec-daemon sent " + MsgTypeName(hello->type) + " instead of MSG_HELLO", EPROTO};
  auto remote = ParseHello(hello->untrusted_body);
  if (!remote.ok()) return remote.error().Wrap("HELLO with qrexec-daemon");
  auto ver = NegotiateVersion(kClientProtocolVersion, *remote);
  if (!ver.ok()) return ver.error().Wrap("HELLO with qrexec-daemon");
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
  spec.env = EnvironmentWithout({});
  spec.stdin_fd = b[0];   // remote stdout -> program stdin
  spec.stdout_fd = a[1];  // program stdout -> remote stdin
  spec.stderr_fd = 2;
  spec.new_session = false;
  auto p = SpawnCommand(spec, program, nullptr);  // as `/bin/sh -c program` runs it
  ::close(b[0]);
  ::close(a[1]);
  if (!p.ok()) return p.error();
  *to_remote = a[0];
  *from_remote = b[1];
  *pid = *p;
  return 0;
}

// -c: answer a domain's pending qrexec-client-vm request (as qrexec-policy-daemon does after
// allowing it): the target's daemon runs the service with its agent connecting to the
// source domain, and the source's daemon tells the waiting qrexec-client-vm (by request
// id) to serve that data port. Nothing is streamed through this process.
int ConnectExistingMain(const ClientArgs& a, uint32_t type) {
  auto c = ParseConnectExisting(a.connect_existing);
  if (!c.ok()) {
    Log(c.error().message);
    return 2;
  }
  UniqueFd target_conn;
  auto p = AskDaemon(a, type, c->source_domid, target_conn);
  if (!p.ok()) {
    Log(p.error().message);
    return kExitProblem;
  }
  std::string path = a.socket_dir + "/qrexec." + c->source_name;
  auto fd = ConnectUnix(path);
  if (!fd.ok()) {
    Log(fd.error().Wrap("cannot reach the qrexec-daemon of '" + c->source_name + "'").message);
    return kExitProblem;
  }
  auto s = StreamFromFd(std::move(fd.value()));
  auto ver = Handshake(*s, Channel::kDaemonToClient, kClientProtocolVersion, false);
  Status st = ver.ok() ? s->Send(EncodeServiceConnect(p->connect_domain, p->connect_port, c->ident))
                       : Status(ver.error());
  if (!st.ok()) {
    Log("SERVICE_CONNECT to the daemon of '" + c->source_name + "': " + st.error().message);
    return kExitProblem;
  }
  return 0;
}

int Main(const ClientArgs& a) {
  if (!ParseCmdline(a.cmdline).ok()) {
    Log("invalid command '" + a.cmdline + "': expected USER:COMMAND or USER:QUBESRPC SERVICE+ARG SOURCE");
    return 2;
  }
  uint32_t type = a.just_exec ? MSG_JUST_EXEC : MSG_EXEC_CMDLINE;
  if (!a.connect_existing.empty()) return ConnectExistingMain(a, type);
  UniqueFd daemon_conn;
  auto own = static_cast<uint32_t>(vchan::EffectiveOwnDomain(vchan::Options{}));
  auto p = AskDaemon(a, type, own, daemon_conn);
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

constexpr const char* kUsage =
    "qrexec-client: run a command or Qubes RPC service in a domain through its qrexec-daemon.\n"
    "Example: qrexec-client -d work DEFAULT:QUBESRPC qubes.VMShell+ dom0 <script.sh\n"
    "Exit code: the remote command's; 125 when the call could not be made.\n"
    "\n"
    "Usage: qrexec-client [OPTIONS] -d DOMAIN USER:COMMAND\n"
    "\n"
    "Positionals:\n"
    "  command TEXT                USER:COMMAND or USER:QUBESRPC SERVICE+ARG SOURCE\n"
    "\n"
    "Options:\n"
    "  -h,--help                   print this help and exit\n"
    "  --socket-dir DIR            directory of the daemons' qrexec.<domain> sockets\n"
    "                              (default /var/run/qubes; env QREXEC_SOCKET_DIR)\n"
    "  -d,--domain TEXT REQUIRED   target domain name or id\n"
    "  -l,--local-program TEXT     run this local command (sh -c) with its stdin/stdout\n"
    "                              connected to the remote's\n"
    "  -e,--just-exec              start the command with stdio on /dev/null (MSG_JUST_EXEC)\n"
    "  -c,--connect-existing TEXT  REQUEST_ID,SRC_DOMAIN_NAME,SRC_DOMAIN_ID: connect the service\n"
    "                              to that domain's waiting qrexec-client-vm request instead of\n"
    "                              to this process\n"
    "  -t,-T,-p                    accepted for Qubes compatibility; no effect\n"
    "  -w SECONDS                  accepted for Qubes compatibility (timeout); no effect\n";

// Command-line parsing with getopt_long rather than CLI11: every call starts this program,
// and CLI11 (with the iostreams it pulls in) made up most of its start-up beyond exec
// (measured: spawn of a static no-op 3.2 ms, of a static CLI11 parser 4.4 ms, on the 2-core
// build VM with SCHED_FIFO). Returns -1 to go on, else the exit code.
int ParseArgs(int argc, char** argv, ClientArgs& a) {
  if (const char* env = std::getenv("QREXEC_SOCKET_DIR"); env && *env) a.socket_dir = env;
  enum { kSocketDir = 256 };
  static const option kLong[] = {
      {"help", no_argument, nullptr, 'h'},
      {"socket-dir", required_argument, nullptr, kSocketDir},
      {"domain", required_argument, nullptr, 'd'},
      {"local-program", required_argument, nullptr, 'l'},
      {"just-exec", no_argument, nullptr, 'e'},
      {"connect-existing", required_argument, nullptr, 'c'},
      {nullptr, 0, nullptr, 0},
  };
  auto usage_error = [](const std::string& message) {
    Log(message + "\nRun with --help for more information.");
    return 2;
  };
  opterr = 0;
  bool have_domain = false;
  for (;;) {
    int longindex = 0;
    int c = ::getopt_long(argc, argv, ":hd:l:ec:tTpw:", kLong, &longindex);
    if (c == -1) break;
    switch (c) {
      case 'h':
        (void)!::write(1, kUsage, std::strlen(kUsage));
        return 0;
      case kSocketDir: a.socket_dir = optarg; break;
      case 'd':
        a.domain = optarg;
        have_domain = true;
        break;
      case 'l': a.local_program = optarg; break;
      case 'e': a.just_exec = true; break;
      case 'c': a.connect_existing = optarg; break;
      case 't':
      case 'T':
      case 'p':
      case 'w': break;  // Qubes compatibility; no effect
      case ':':
        return usage_error(std::string("option ") + argv[optind - 1] + " needs a value");
      default:
        return usage_error(std::string("unknown option ") +
                           (optopt ? std::string("-") + static_cast<char>(optopt) : argv[optind - 1]));
    }
  }
  if (optind >= argc) return usage_error("command is required (USER:COMMAND)");
  if (optind + 1 < argc) return usage_error(std::string("unexpected argument '") + argv[optind + 1] + "'");
  a.cmdline = argv[optind];
  if (!have_domain) return usage_error("-d,--domain is required");
  return -1;
}

}  // namespace
}  // namespace odyssey::qrexec

int main(int argc, char** argv) {
  using namespace odyssey::qrexec;
  IgnoreSigpipe();
  SetLogPrefix("qrexec-client");
  ClientArgs a;
  if (int code = ParseArgs(argc, argv, a); code >= 0) return code;
  if (a.domain.empty() || a.domain.find('/') != std::string::npos) {
    Log("invalid domain '" + a.domain + "'");
    return 2;
  }
  return Main(a);
}
