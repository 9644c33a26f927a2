// qrexec-client-vm: domain -> domain call from inside a domain. Asks the local qrexec-agent
// (trigger socket) to request SERVICE+ARG in TARGET; the host's policy decides. If allowed,
// the agent hands back a data port and this process serves the data vchan itself.
// Exit code: the remote service's (126 if refused, 125 if the call failed).
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstring>

#include "base/io.h"
#include "qrexec/transport.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {
namespace {

struct VmArgs {
  std::string agent_socket = "/var/run/qubes/qrexec-agent";
  std::string source_qube;
  bool use_stdin_socket = false;
  std::string target;
  std::string service;
  std::vector<std::string> local_program;
};

int Main(const VmArgs& a) {
  if (!IsValidTargetSpec(a.target)) {
    Log("invalid target '" + a.target + "'");
    return 2;
  }
  if (!IsValidServiceName(a.service)) {
    Log("invalid service name '" + a.service + "'");
    return 2;
  }
  if (!a.source_qube.empty() && !IsValidDomainName(a.source_qube)) {
    Log("invalid --source-qube '" + a.source_qube + "'");
    return 2;
  }
  auto fd = ConnectUnix(a.agent_socket);
  if (!fd.ok()) {
    Log("cannot reach qrexec-agent: " + fd.error().message);
    return kExitProblem;
  }
  TriggerRequest req;
  req.target_domain = a.target;
  req.service_name = a.service;
  req.ident = "SOCKET";
  req.source_domain = a.source_qube;
  std::string msg = EncodeTrigger(req);
  if (!WriteAll(fd->get(), msg.data(), msg.size()).ok()) {
    Log("cannot send the request to qrexec-agent");
    return kExitProblem;
  }
  ExecParams p;
  if (!ReadExact(fd->get(), &p, sizeof p).ok()) {
    Log("Request refused");
    return kExitRefused;
  }
  fd->reset();
  if (p.connect_port < kFirstDataPort || p.connect_port > kLastDataPort) {
    Log("qrexec-agent gave data port " + std::to_string(p.connect_port));
    return kExitProblem;
  }
  auto server = vchan::Vchan::Server(static_cast<int>(p.connect_domain), static_cast<int>(p.connect_port), {});
  if (!server.ok()) {
    Log("data channel: " + server.error().message);
    return kExitProblem;
  }
  auto s = StreamFromVchan(std::move(server.value()));
  auto ver = Handshake(*s, Channel::kDataFromService, kProtocolVersion, true);
  if (!ver.ok()) {
    Log("data channel HELLO: " + ver.error().message);
    return kExitProblem;
  }
  CallerFds fds{0, 1, 2, true};
  pid_t local = -1;
  ChildReaper* reaper = nullptr;
  if (!a.local_program.empty()) {
    int to_remote[2], from_remote[2];
    if (::pipe2(to_remote, O_CLOEXEC) != 0 || ::pipe2(from_remote, O_CLOEXEC) != 0) {
      Log("pipe failed");
      return kExitProblem;
    }
    reaper = &ChildReaper::Install();
    SpawnSpec spec;
    spec.argv = a.local_program;
    spec.env = EnvironmentWithout({});
    spec.stdin_fd = from_remote[0];
    spec.stdout_fd = to_remote[1];
    spec.stderr_fd = 2;
    spec.new_session = false;
    auto pid = Spawn(spec, reaper);
    ::close(from_remote[0]);
    ::close(to_remote[1]);
    if (!pid.ok()) {
      Log("local program '" + a.local_program[0] + "': " + pid.error().message);
      return kExitProblem;
    }
    local = *pid;
    fds = CallerFds{to_remote[0], from_remote[1], 2, true};
  }
  auto code = RunCallerSide(*s, *ver, fds);
  if (local > 0) return ExitCodeFromStatus(reaper->Wait(local));
  if (!code.ok()) {
    Log("call failed: " + code.error().message);
    return kExitProblem;
  }
  return *code;
}

}  // namespace
}  // namespace odyssey::qrexec

int main(int argc, char** argv) {
  using namespace odyssey::qrexec;
  IgnoreSigpipe();
  SetLogPrefix("qrexec-client-vm");
  CLI::App app{
      "qrexec-client-vm: call a Qubes RPC service in another domain (policy decides).\n"
      "Example: qrexec-client-vm work qubes.Filecopy+ <data\n"
      "Exit code: the service's, or the local program's if one is given; 126 if refused."};
  VmArgs a;
  app.add_option("--agent-socket", a.agent_socket, "the local qrexec-agent's trigger socket")
      ->capture_default_str();
  app.add_flag("--use-stdin-socket", a.use_stdin_socket, "accepted for Qubes compatibility; no effect");
  app.add_option("--source-qube", a.source_qube, "requested source (sent as MSG_TRIGGER_SERVICE4)");
  app.add_option("target", a.target, "target domain, or @default, @dispvm, @dispvm:NAME")->required();
  app.add_option("service", a.service, "SERVICE+ARG")->required();
  app.add_option("local_program", a.local_program,
                 "program whose stdin/stdout are connected to the service's");
  app.prefix_command(false);
  CLI11_PARSE(app, argc, argv);
  return Main(a);
}
