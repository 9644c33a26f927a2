// qrexec-policy-daemon: answers the policy socket protocol (see daemon_protocol.h),
// reloading the policy whenever its files change.
#include <signal.h>

#include <cstdio>

#include "qrexec/policy/options_common.h"
#include "qrexec/policy/socket_server.h"

using namespace odyssey::qrexec::policy;

namespace {
SocketServer* g_server = nullptr;
void OnSignal(int) {
  if (g_server) g_server->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Answer qrexec policy requests on a Unix socket: request lines source=, intended_target=, "
      "service_and_arg= (optional assume_yes_for_ask=, just_evaluate=, domain_id=, process_ident=, "
      "requested_source=) and a blank line; reply result=allow|deny with target=, autostart=, ... "
      "The policy is reloaded when its files change."};
  CommonFlags flags;
  SocketServerOptions server_options;
  server_options.socket_path = "/var/run/qubes/policy.sock";
  app.add_option("--socket-path", server_options.socket_path, "Unix socket to listen on")->capture_default_str();
  app.add_option("--request-timeout", server_options.request_timeout_seconds,
                 "seconds a client may take to send its request")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--max-connections", server_options.max_connections, "requests served at once")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  flags.Add(app);
  CLI11_PARSE(app, argc, argv);

  ::signal(SIGPIPE, SIG_IGN);
  auto service = flags.MakeService("qrexec-policy-daemon");
  if (!service) return 3;
  PolicyPtr policy = service->CurrentPolicy();
  if (!policy->ok()) {
    std::fprintf(stderr, "qrexec-policy-daemon: policy error (everything is denied until fixed): %s\n",
                 policy->error().c_str());
  } else {
    std::fprintf(stderr, "qrexec-policy-daemon: %zu rules loaded from %s\n", policy->rule_count(),
                 flags.policy_dir.c_str());
  }
  // Hold SIGTERM/SIGINT until the handler can reach the server: a client may see the
  // socket (and a supervisor may stop us) as soon as it is bound.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop_signals, nullptr);
  auto server = SocketServer::Create(server_options, service);
  if (!server.ok()) {
    std::fprintf(stderr, "qrexec-policy-daemon: --socket-path %s: %s\n", server_options.socket_path.c_str(),
                 server.error().message.c_str());
    return 3;
  }
  g_server = server->get();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigprocmask(SIG_UNBLOCK, &stop_signals, nullptr);
  std::fprintf(stderr, "qrexec-policy-daemon: listening on %s\n", server_options.socket_path.c_str());
  odyssey::Status st = (*server)->Run();
  g_server = nullptr;
  if (!st.ok()) {
    std::fprintf(stderr, "qrexec-policy-daemon: %s\n", st.error().message.c_str());
    return 1;
  }
  return 0;
}
