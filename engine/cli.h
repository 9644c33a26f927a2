// The odyssey CLI's commands as functions (odyssey_main.cc wires them to CLI11), so the demo
// and tests can call them. Each returns the process exit code.
#pragma once

#include <cstdint>
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
  std::string vm;             // non-empty: the named persistent domain (`odyssey vm start`)
  int timeout_s = -1;
  int stdin_fd = 0, stdout_fd = 1, stderr_fd = 2;
  bool gui = false;  // show its windows on $DISPLAY (sent with $XAUTHORITY) when DISPLAY is set
};
CallOutcome CallInDisposable(AdminClient& client, const CallArgs& args);

int CmdRun(const CliContext& ctx, const CallArgs& args);
// `odyssey call [--dispvm[=T]] SERVICE[+ARG]`: the service in a disposable with this
// process's stdin/stdout/stderr; returns its exit code (126 when the policy refused, 125
// when the call could not be made). vm non-empty: in that named persistent domain instead.
int CmdCall(const CliContext& ctx, const std::string& service_and_arg,
            const std::string& template_name, const std::string& vm);

// `odyssey open`: routes each target with the handlers rules (content MIME type / URL) and
// does what the matching rule says, through odysseyd (handlers/commands.h).
struct OpenArgs {
  std::vector<std::string> targets;   // files, file:// URLs, URLs
  std::string template_name;          // non-empty: skip the rules, disposable of this template
  std::string vm;                     // non-empty: skip the rules, this named domain
  bool no_route = false;              // skip the rules: disposable of the default template
  bool view_only = false;
  bool dry_run = false;
  std::vector<std::string> rules_dirs;  // empty: the default drop-in directories
};
int CmdOpen(const CliContext& ctx, const OpenArgs& args);

// `odyssey route`: the handlers' routing explanation (same code as odyssey-route).
struct RouteArgs {
  std::vector<std::string> subjects, rules_dirs;
  bool no_defaults = false, short_form = false, list = false;
};
int CmdRoute(const RouteArgs& args);

// `odyssey integrate --user [--remove]`: the desktop integration (same code as
// odyssey-integrate): odyssey-open as the default handler, file-manager actions.
struct IntegrateArgs {
  bool remove = false, no_defaults = false;
  std::string open_program;  // empty: odyssey-open next to odyssey, else the build tree's
};
int CmdIntegrate(const IntegrateArgs& args);

// `odyssey convert`: the trusted converter (same code as odyssey-convert), rendering in a
// disposable of odysseyd.
struct ConvertArgs {
  std::string file;
  bool image = false;              // false: by content (image/* -> PNG, else PDF)
  bool force_pdf = false;
  std::string template_name;
  std::string quarantine_dir;
  bool keep_original = false;
  uint32_t dpi = 100;
};
int CmdConvert(const CliContext& ctx, const ConvertArgs& args);
int CmdLs(const CliContext& ctx);
// `odyssey vm start NAME [--template T]` / `odyssey vm stop NAME`: named persistent domains
// (the targets of `vm:NAME` rules and `call --vm`), listed by `odyssey ls`.
int CmdVm(const CliContext& ctx, const std::string& action, const std::string& name,
          const std::string& template_name);
int CmdKill(const CliContext& ctx, const std::string& name);
int CmdPool(const CliContext& ctx, const std::string& template_name, int size, bool wait);
int CmdTemplate(const CliContext& ctx, const std::string& action, const std::string& name,
                const std::string& root, int pool_size);
// `template build NAME --kind vm [--rebuild]`: builds (or reuses) the guest image, adds the
// template (checksums verified, accelerator probed) and waits for its snapshot and pool.
int CmdTemplateBuild(const CliContext& ctx, const std::string& name, const std::string& kind,
                     bool rebuild, int pool_size);
int CmdPolicyCheck(const CliContext& ctx, const std::string& source, const std::string& target,
                   const std::string& service, const std::string& arg);
int CmdSimple(const CliContext& ctx, const std::string& op);  // ping, stats, calls, shutdown
int CmdDemo(const CliContext& ctx, const std::string& sample, const std::string& url);


}  // namespace odyssey::engine
