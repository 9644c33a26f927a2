// odyssey-open FILE|URL...: the default handler Odyssey installs. Routes each argument by
// the rules (content MIME type / URL), then asks the engine to act: open in a disposable
// or a named domain (with safe write-back), convert to a trusted PDF/PNG, refuse, or, only
// where a rule says "local", open on the host.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>

#include "handlers/commands.h"
#include "handlers/convert.h"
#include "handlers/exec_runner.h"
#include "handlers/open_in_vm.h"
#include "handlers/router.h"

namespace {

using namespace odyssey::handlers;

struct Flags {
  bool force_dispvm = false;
  std::string dispvm_template;
  bool view_only = false;
  bool convert = false;
  bool dry_run = false;
  std::string runner;
};

// The engine's own `odyssey open`, used while no service runner is configured.
std::vector<std::string> EngineOpenCommand(const Decision& d, const Flags& f) {
  const char* cli = std::getenv("ODYSSEY_CLI");
  std::vector<std::string> argv = {cli && *cli ? cli : "odyssey", "open"};
  // The rules were applied here already: tell `odyssey open` where, not to route again.
  if (d.action.kind == Action::Kind::kVm) argv.insert(argv.end(), {"--vm", d.action.name});
  else if (!d.action.name.empty()) argv.insert(argv.end(), {"--dispvm", d.action.name});
  else argv.push_back("--no-route");
  if (d.action.view_only || f.view_only) argv.push_back("--view-only");
  argv.push_back("--");  // a file named like an option stays a file
  argv.push_back(d.is_url ? d.subject : d.path);
  return argv;
}

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

int Fail(const std::string& msg) { return CommandFail("odyssey-open", msg); }

int Act(const Decision& d, const Flags& f) {
  const bool use_runner = !f.runner.empty() || std::getenv("ODYSSEY_RUNNER");
  ExecRunner runner(f.runner.empty() ? ExecRunner::DefaultCommand() : SplitCommand(f.runner));
  const bool opens_in_domain = d.action.kind == Action::Kind::kDispVm || d.action.kind == Action::Kind::kVm;
  if (!opens_in_domain || use_runner)
    return ActOnDecision(runner, d, ActOptions{f.view_only, f.dry_run, "odyssey-open"});
  // No service runner configured: hand disposables to the engine's own `odyssey open`.
  std::fprintf(stderr, "odyssey-open: %s -> %s (rule %s)\n", d.subject.c_str(), d.action.Spelling().c_str(),
               d.rule_source.c_str());
  auto argv = EngineOpenCommand(d, f);
  if (f.dry_run) return std::printf("would run: %s\n", Joined(argv).c_str()), 0;
  auto rc = SpawnAndWait(argv, -1, -1, -1);
  return rc.ok() ? rc.value() : Fail(rc.error().message);
}

int Main(int argc, char** argv) {
  CLI::App app{"Open FILEs or URLs the way Odyssey's routing rules say (see odyssey-route): "
               "in a disposable by default, with edits written back safely."};
  std::vector<std::string> subjects, dirs;
  Flags f;
  app.add_option("subjects", subjects, "files, file:// URLs or URLs")->required();
  app.add_option("--dispvm", f.dispvm_template,
                 "skip the rules: open in a disposable (--dispvm=TEMPLATE: of that template)");
  app.add_flag("--view-only", f.view_only, "never take an edited file back");
  app.add_flag("--convert", f.convert, "skip the rules: convert to a trusted PDF (PNG for images)");
  app.add_flag("--dry-run", f.dry_run, "say what would happen, do nothing");
  app.add_option("--rules-dir", dirs, "read rules from DIR (repeatable; see odyssey-route)")
      ->allow_extra_args(false);  // one DIR each: a following "--" still ends the options
  app.add_option("--runner", f.runner, "command that runs a service in a domain (default $ODYSSEY_RUNNER; "
                                       "without one, disposables are opened with `odyssey open`)");
  // A bare --dispvm is a flag: taken out here, because CLI11 would take the next argument (a
  // file, or the "--" that ends the options) as its template. `--dispvm=T` names a template.
  std::vector<char*> args;
  bool bare_dispvm = false, options_ended = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    options_ended = options_ended || a == "--";
    if (!options_ended && i > 0 && a == "--dispvm") bare_dispvm = true;
    else args.push_back(argv[i]);
  }
  argc = static_cast<int>(args.size());
  argv = args.data();
  CLI11_PARSE(app, argc, argv);
  f.force_dispvm = bare_dispvm || app.count("--dispvm") > 0;

  if (std::getenv("ODYSSEY_OPEN_DEPTH"))
    return Fail("called again from a local opener (odyssey-open is the default handler): set "
                "ODYSSEY_LOCAL_OPENER to the real local application");
  RouterOptions ro;
  if (!dirs.empty()) ro.dirs = dirs;
  auto router = Router::Create(ro);
  if (!router.ok()) return Fail(router.error().message);
  int rc = 0;
  for (const auto& s : subjects) {
    auto d = router.value()->Route(s);
    if (!d.ok()) {
      rc = Fail(d.error().message);
      continue;
    }
    for (const auto& note : d->notes) std::fprintf(stderr, "odyssey-open: warning: %s\n", note.c_str());
    if (f.force_dispvm) {
      d->action = Action{Action::Kind::kDispVm, f.dispvm_template, false};
      d->rule_source = "--dispvm";
    } else if (f.convert) {
      bool image = d->mime.rfind("image/", 0) == 0;
      d->action = Action{image ? Action::Kind::kConvertImage : Action::Kind::kConvertPdf, "", false};
      d->rule_source = "--convert";
    }
    int one = Act(d.value(), f);
    if (one != 0) rc = one;
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
