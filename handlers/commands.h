// The user-facing commands of handlers/ as library functions, so that the stand-alone
// binaries (odyssey-route, odyssey-convert, odyssey-open) and the engine's CLI (`odyssey
// route`, `odyssey convert`, `odyssey open`) run the very same code and print the same
// things. Each returns a process exit code and prints on stdout/stderr, prefixed with
// `prog` ("odyssey-route", "odyssey route", ...). They never start a domain themselves:
// every service call goes through the DisposableRunner they are given.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "handlers/convert.h"
#include "handlers/disposable_runner.h"
#include "handlers/router.h"

namespace odyssey::handlers {

struct RouteCommand {
  std::vector<std::string> subjects;  // files, file:// URLs or URLs
  std::vector<std::string> dirs;      // empty: DefaultRuleDirs()
  bool no_defaults = false;           // do not append the shipped 50-default.rules
  bool short_form = false;            // "ACTION<TAB>FILE:LINE" per subject
  bool list = false;                  // print every rule in evaluation order
};
// Explains each subject's routing. 0: all routed; 1: some could not be; 2: bad rules/usage.
int RunRouteCommand(const RouteCommand& cmd, const std::string& prog);

// Converts file with options, showing a per-page progress bar on stderr; prints the output
// path on stdout and where the original went on stderr. 0 on success, 1 on any error.
int RunConvertCommand(DisposableRunner& runner, const std::string& file, ConvertOptions options,
                      const std::string& prog);

struct ActOptions {
  bool view_only = false;   // never take an edited file back (whatever the rule says)
  bool dry_run = false;     // say what would happen, do nothing
  std::string prog;         // message prefix
  // OpenSubjects: when set, this action replaces the rules' (e.g. `--dispvm T`), and the
  // decision names force_source instead of a rule.
  std::optional<Action> force_action;
  std::string force_source;
};
// Does what a routing decision says: deny (an error naming the rule FILE:LINE), local (the
// host opener: $ODYSSEY_LOCAL_OPENER, else xdg-open), convert:pdf / convert:image
// (RunConvertCommand), dispvm[:T] / vm:NAME (qubes.OpenInVM with safe write-back, or
// qubes.OpenURL) through the runner.
int ActOnDecision(DisposableRunner& runner, const Decision& decision, const ActOptions& options);

// Routes every subject with the rules (dirs empty: DefaultRuleDirs()) and acts on each.
// Returns 0 when all succeeded, else the last failure's code.
int OpenSubjects(DisposableRunner& runner, const std::vector<std::string>& subjects,
                 const std::vector<std::string>& dirs, const ActOptions& options);

// Prints "PROG: MESSAGE\n" on stderr and returns 1.
int CommandFail(const std::string& prog, const std::string& message);

}  // namespace odyssey::handlers
