// odyssey: the command-line front end of Odyssey. Talks to odysseyd over its admin socket
// and starts one for the user when none is running (the embedded default).
// Built twice from this file: `odyssey` (ODYSSEY_CLI_CLIENT_ONLY: the admin client only, a
// handful of shared libraries, so `odyssey run` starts fast) and `odyssey-full` (every
// command, with handlers/ linked in); `odyssey` execs `odyssey-full` for open, route,
// convert, integrate and demo, with the same arguments.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "engine/cli.h"
#include "engine/config.h"

using namespace odyssey::engine;

namespace {

std::string DefaultSample() {
  for (std::string p : {ExecutableDir() + "/../share/odyssey/samples/sample.pdf",
                        std::string(ODYSSEY_SOURCE_DIR) + "/samples/sample.pdf"})
    if (::access(p.c_str(), R_OK) == 0) return std::filesystem::path(p).lexically_normal();
  return "samples/sample.pdf";
}

#ifdef ODYSSEY_CLI_CLIENT_ONLY
// $ODYSSEY_FULL_CLI, else odyssey-full next to this binary, else on PATH.
[[noreturn]] void ExecFull(char** argv) {
  std::string full;
  if (const char* e = std::getenv("ODYSSEY_FULL_CLI"); e && *e) full = e;
  else if (std::string next = ExecutableDir() + "/odyssey-full"; ::access(next.c_str(), X_OK) == 0)
    full = next;
  else full = "odyssey-full";
  ::execvp(full.c_str(), argv);
  std::fprintf(stderr, "odyssey: cannot run %s (%s): open, route, convert, integrate and demo live "
                       "there; "
                       "install it next to odyssey or set ODYSSEY_FULL_CLI\n",
               full.c_str(), std::strerror(errno));
  std::exit(125);
}
#endif

}  // namespace

int main(int argc, char** argv) {
#ifdef ODYSSEY_CLI_CLIENT_ONLY
  char** const original_argv = argv;
#endif
  CLI::App app{"odyssey: open untrusted things (a command, a document, a link) in a fresh, "
               "isolated, throw-away disposable and get the result back.\nTalks to odysseyd "
               "and starts one for you if none is running."};
  app.require_subcommand(1);
  CliContext ctx;
  app.add_option("--socket", ctx.connect.socket_path,
                 "odysseyd admin socket (default $ODYSSEY_SOCKET or " + DefaultSocketPath() + ")");
  app.add_option("--config", ctx.connect.config_path, "config file for an odysseyd started for you");
  bool no_autostart = false;
  app.add_flag("--no-autostart", no_autostart, "fail instead of starting odysseyd when none runs");

  // run
  CallArgs run_args;
  std::string dispvm;
  auto* run = app.add_subcommand("run", "run a command in a disposable; its stdin/stdout/stderr "
                                        "are yours and its exit code becomes odyssey's");
  auto* dispvm_opt = run->add_option("--dispvm", dispvm,
                                     "disposable template (bare --dispvm: the default template)")
                         ->expected(0, 1);
  run->add_option("--timeout", run_args.timeout_s, "kill the disposable after S seconds (exit 124)");
  run->add_option("command", run_args.argv, "command and arguments (after --)");

  // call
  std::string call_service, call_dispvm, call_vm;
  auto* call = app.add_subcommand("call", "call a qrexec service in a disposable: SERVICE[+ARG] "
                                          "gets your stdin/stdout/stderr and its exit code becomes "
                                          "odyssey's (126: refused by policy)");
  auto* call_dispvm_opt = call->add_option("--dispvm", call_dispvm,
                                           "disposable template (bare --dispvm: the default)")
                              ->expected(0, 1);
  call->add_option("--vm", call_vm, "in the named persistent domain VM (see `odyssey vm start`)");
  call->add_option("service", call_service, "SERVICE or SERVICE+ARG, e.g. qubes.OpenURL");

  // open
  OpenArgs open_args;
  auto* open = app.add_subcommand("open", "open FILEs or URLs as the routing rules say (see "
                                          "`odyssey route`): by default in a disposable, "
                                          "qubes.OpenInVM with safe write-back / qubes.OpenURL");
  open->add_option("target", open_args.targets, "file paths, file:// URLs or URLs such as "
                                                "https://example.org/")->required();
  open->add_option("--dispvm", open_args.template_name,
                   "skip the rules: open in a disposable of TEMPLATE");
  open->add_option("--vm", open_args.vm,
                   "skip the rules: open in the named persistent domain VM (`odyssey vm start`)");
  open->add_flag("--no-route", open_args.no_route,
                 "skip the rules: open in a disposable of the default template");
  open->add_flag("--view-only", open_args.view_only, "never take an edited file back");
  open->add_flag("--dry-run", open_args.dry_run, "say what would happen, do nothing");
  open->add_option("--rules-dir", open_args.rules_dirs,
                   "read routing rules from DIR (repeatable; default /etc/odyssey/handlers.d "
                   "then ~/.config/odyssey/handlers.d, or $ODYSSEY_HANDLERS_DIRS)");

  // route
  RouteArgs route_args;
  auto* route = app.add_subcommand("route", "explain how `odyssey open` would open each FILE or "
                                            "URL: the matching rule (FILE:LINE) and the action");
  route->add_option("subjects", route_args.subjects, "files or URLs to route");
  route->add_option("--rules-dir", route_args.rules_dirs, "read rules from DIR (repeatable)");
  route->add_flag("--no-defaults", route_args.no_defaults, "do not append the shipped defaults");
  route->add_flag("--short", route_args.short_form, "print only 'ACTION<TAB>FILE:LINE'");
  route->add_flag("--list", route_args.list, "print every rule in evaluation order");

  // convert
  ConvertArgs convert_args;
  auto* convert = app.add_subcommand("convert", "turn an untrusted PDF or image into a trusted "
                                                "NAME.trusted.pdf / .png rebuilt from pixels "
                                                "rendered in a disposable; the original goes to "
                                                "quarantine");
  convert->add_option("file", convert_args.file, "the untrusted PDF or image")->required();
  convert->add_flag("--image", convert_args.image, "treat it as an image (default: by content)");
  convert->add_flag("--pdf", convert_args.force_pdf, "treat it as a PDF (default: by content)");
  convert->add_option("--dispvm", convert_args.template_name, "disposable template to render in");
  convert->add_option("--quarantine", convert_args.quarantine_dir,
                      "where the original goes (default ~/.local/share/odyssey/quarantine)");
  convert->add_flag("--keep-original", convert_args.keep_original, "leave the original in place");
  convert->add_option("--dpi", convert_args.dpi, "render resolution")->check(CLI::Range(10, 600));

  auto* vm = app.add_subcommand("vm", "named persistent domains: started from a template, kept "
                                      "across calls (`call --vm`, `open --vm`, rules' vm:NAME) "
                                      "until stopped");
  vm->require_subcommand(1);
  std::string vm_name, vm_template;
  auto* vm_start = vm->add_subcommand("start", "start the domain NAME (listed by `odyssey ls`)");
  vm_start->add_option("name", vm_name, "domain name ([a-z0-9_-], a letter first, at most 31)")->required();
  vm_start->add_option("--template", vm_template, "template to start it from (default: the default template)");
  auto* vm_stop = vm->add_subcommand("stop", "stop (destroy) the domain NAME");
  vm_stop->add_option("name", vm_name, "domain name")->required();

  auto* ls = app.add_subcommand("ls", "list disposables (running and ready in pools) and named domains");
  ls->add_flag("--json", ctx.json, "machine-readable output");

  std::string kill_name;
  auto* kill = app.add_subcommand("kill", "destroy a disposable (or a named domain) now");
  kill->add_option("name", kill_name, "disposable name (see `odyssey ls`)")->required();

  std::string pool_tmpl;
  int pool_size = -1;
  bool pool_wait = false;
  auto* pool = app.add_subcommand("pool", "show pools, or set a template's pool size");
  pool->add_option("template", pool_tmpl, "template (default: all; with --size: the default)");
  pool->add_option("--size", pool_size, "target number of prepared disposables")
      ->check(CLI::Range(0, 4096));
  pool->add_flag("--wait", pool_wait, "wait until in-flight preparation finished");
  pool->add_flag("--json", ctx.json, "machine-readable output");

  auto* tmpl = app.add_subcommand("template", "manage disposable templates");
  tmpl->require_subcommand(1);
  auto* tmpl_ls = tmpl->add_subcommand("ls", "list templates");
  tmpl_ls->add_flag("--json", ctx.json, "machine-readable output");
  std::string tmpl_name, tmpl_root;
  int tmpl_pool = -1;
  auto* tmpl_add = tmpl->add_subcommand("add", "add a template from a directory tree");
  tmpl_add->add_option("name", tmpl_name, "template name ([a-z0-9_-], a letter first, at most 31)")->required();
  tmpl_add->add_option("--root", tmpl_root, "root tree (default: the host's own, read-only)");
  tmpl_add->add_option("--pool-size", tmpl_pool, "pool size for this template");
  std::string tmpl_kind = "vm";
  bool tmpl_rebuild = false;
  auto* tmpl_build = tmpl->add_subcommand("build", "build a VM template: guest image, snapshot, pool");
  tmpl_build->add_option("name", tmpl_name, "template name ([a-z0-9_-], a letter first, at most 31)")->required();
  tmpl_build->add_option("--kind", tmpl_kind, "template kind (vm)")->check(CLI::IsMember({"vm"}));
  tmpl_build->add_flag("--rebuild", tmpl_rebuild, "rebuild the image and the snapshot even if cached");
  tmpl_build->add_option("--pool-size", tmpl_pool, "pool size for this template");
  auto* tmpl_rm = tmpl->add_subcommand("rm", "remove a template (destroys its pool)");
  tmpl_rm->add_option("name", tmpl_name, "template name")->required();

  auto* policy = app.add_subcommand("policy", "inspect the qrexec policy the engine obeys");
  policy->require_subcommand(1);
  std::string p_source = "@adminvm", p_target = "@dispvm", p_service, p_arg;
  auto* check = policy->add_subcommand("check", "would this call be allowed? (exit 0 allow, 1 deny)");
  check->add_option("service", p_service, "service name, e.g. qubes.OpenURL")->required();
  check->add_option("--arg", p_arg, "service argument (without '+')");
  check->add_option("--source", p_source, "calling domain (default @adminvm)");
  check->add_option("--target", p_target, "target (default @dispvm; e.g. @dispvm:host)");
  check->add_flag("--json", ctx.json, "machine-readable output");

  IntegrateArgs integrate_args;
  bool integrate_user = false;
  auto* integrate = app.add_subcommand(
      "integrate", "install (or --remove) the desktop integration for this user: odyssey-open as "
                   "the default handler (xdg-mime) for documents and links, and 'Open in Disposable "
                   "VM' actions for Nautilus, Dolphin and Thunar");
  integrate->add_flag("--user", integrate_user, "for the current user (the only mode so far)")->required();
  integrate->add_flag("--remove", integrate_args.remove, "undo: remove our files, restore the previous defaults");
  integrate->add_flag("--no-defaults", integrate_args.no_defaults,
                      "install the actions but do not change default applications");
  integrate->add_option("--open-program", integrate_args.open_program,
                        "absolute path of odyssey-open for Exec= lines (default: next to odyssey)");

  auto* ping = app.add_subcommand("ping", "check that odysseyd answers");
  auto* stats = app.add_subcommand("stats", "pool counters, memory, totals (JSON)");
  auto* calls = app.add_subcommand("calls", "recent calls from the state store (JSON)");
  auto* shutdown = app.add_subcommand("shutdown", "stop odysseyd (destroys every disposable)");

  std::string demo_sample = DefaultSample(), demo_url = "https://example.org/";
  auto* demo = app.add_subcommand("demo", "open the bundled sample PDF and a URL in disposables "
                                          "and show what happened and how fast");
  demo->add_option("--sample", demo_sample, "document to open");
  demo->add_option("--url", demo_url, "URL to open");

  // `run … -- CMD ARGS…`: everything after the first "--" following "run" is the command,
  // untouched by option parsing (so `--dispvm -- sh -c …` works).
  std::vector<std::string> command_after_dashes;
  bool have_dashes = false;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) != "run") continue;
    for (int j = i + 1; j < argc; ++j) {
      if (std::string(argv[j]) == "--") {
        have_dashes = true;
        for (int k = j + 1; k < argc; ++k) command_after_dashes.emplace_back(argv[k]);
        argc = j;
        break;
      }
    }
    break;
  }
  CLI11_PARSE(app, argc, argv);
  ctx.connect.autostart = !no_autostart;

  if (*run) {
    if (have_dashes) run_args.argv.insert(run_args.argv.end(), command_after_dashes.begin(),
                                          command_after_dashes.end());
    if (run_args.argv.empty()) {
      std::fprintf(stderr, "odyssey run: no command given (usage: odyssey run [--dispvm[=T]] -- CMD ARGS…)\n");
      return 2;
    }
    if (*dispvm_opt) run_args.template_name = dispvm;
    return CmdRun(ctx, run_args);
  }
  if (*call) {
    std::string call_tmpl = *call_dispvm_opt ? call_dispvm : "";
    // `--dispvm SERVICE` (bare --dispvm followed by the service) reads the service as the
    // option's value.
    if (*call_dispvm_opt && call_service.empty()) {
      call_service = call_dispvm;
      call_tmpl.clear();
    }
    return CmdCall(ctx, call_service, call_tmpl, call_vm);
  }
#ifdef ODYSSEY_CLI_CLIENT_ONLY
  if (*open || *route || *convert || *integrate || *demo) ExecFull(original_argv);
#else
  if (*open) return CmdOpen(ctx, open_args);
  if (*route) return CmdRoute(route_args);
  if (*convert) return CmdConvert(ctx, convert_args);
  if (*integrate) return CmdIntegrate(integrate_args);
  if (*demo) return CmdDemo(ctx, demo_sample, demo_url);
#endif
  if (*ls) return CmdLs(ctx);
  if (*kill) return CmdKill(ctx, kill_name);
  if (*vm_start) return CmdVm(ctx, "start", vm_name, vm_template);
  if (*vm_stop) return CmdVm(ctx, "stop", vm_name, "");
  if (*pool) return CmdPool(ctx, pool_tmpl, pool_size, pool_wait);
  if (*tmpl_ls) return CmdTemplate(ctx, "ls", "", "", -1);
  if (*tmpl_add) return CmdTemplate(ctx, "add", tmpl_name, tmpl_root, tmpl_pool);
  if (*tmpl_build) return CmdTemplateBuild(ctx, tmpl_name, tmpl_kind, tmpl_rebuild, tmpl_pool);
  if (*tmpl_rm) return CmdTemplate(ctx, "rm", tmpl_name, "", -1);
  if (*check) return CmdPolicyCheck(ctx, p_source, p_target, p_service, p_arg);
  if (*ping) return CmdSimple(ctx, "ping");
  if (*stats) return CmdSimple(ctx, "stats");
  if (*calls) return CmdSimple(ctx, "calls");
  if (*shutdown) {
    ctx.connect.autostart = false;
    return CmdSimple(ctx, "shutdown");
  }
  return 0;
}
