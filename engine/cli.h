// The odyssey CLI's commands as functions (odyssey_main.cc wires them to CLI11), so the demo
// and tests can call them. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "engine/client.h"

namespace odyssey::engine {

struct CliContext {
  ConnectOptions connect;
  bool json = false;
};

// Result of one disposable call made by the CLI.
struct CallOutcome {
  int exit_code = 125;
  std::string name;        // the disposable's name
  bool pool_hit = false;
  bool destroyed = false;
  double latency_ms = 0;   // request sent -> exit reply received
  std::string error;       // daemon-side error, if any
};

// Runs argv (or a service when service is non-empty) in a disposable with the given
// descriptors (-1: this process's own stdio). Prints nothing itself.
struct CallArgs {
  std::vector<std::string> argv;
  std::string service, service_arg;
  std::string template_name;  // empty: the daemon's default
  int timeout_s = -1;
  int stdin_fd = 0, stdout_fd = 1, stderr_fd = 2;
  bool gui = false;  // show its windows on $DISPLAY (sent with $XAUTHORITY) when DISPLAY is set
};
CallOutcome CallInDisposable(AdminClient& client, const CallArgs& args);

int CmdRun(const CliContext& ctx, const CallArgs& args);
int CmdOpen(const CliContext& ctx, const std::string& target, const std::string& template_name,
            bool view_only);
int CmdLs(const CliContext& ctx);
int CmdKill(const CliContext& ctx, const std::string& name);
int CmdPool(const CliContext& ctx, const std::string& template_name, int size, bool wait);
int CmdTemplate(const CliContext& ctx, const std::string& action, const std::string& name,
                const std::string& root, int pool_size);
int CmdPolicyCheck(const CliContext& ctx, const std::string& source, const std::string& target,
                   const std::string& service, const std::string& arg);
int CmdSimple(const CliContext& ctx, const std::string& op);  // ping, stats, calls, shutdown
int CmdDemo(const CliContext& ctx, const std::string& sample, const std::string& url);

// True for "scheme://…" with a scheme of letters, digits, + . -
bool LooksLikeUrl(const std::string& s);
// The qubes.OpenInVM 256-byte header name: characters outside [0-9A-Za-z._+@-] become '_'.
std::string SanitizeBasename(const std::string& name);

}  // namespace odyssey::engine
