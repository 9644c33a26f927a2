// Starting the COMMAND of a `USER:COMMAND` call (qrexec-agent) or of `qrexec-client -l`.
// Qubes runs it as `/bin/sh -c COMMAND`. A command without any shell syntax is exec'd
// directly instead — one exec less (a static no-op costs ~1.6 ms to start here, far more in
// a TCG guest) — with exactly what `sh -c` would have exec'd: the same file found through
// the same PATH, the same argv, the same environment (dash adds PWD). Whenever that is not
// certain, and whenever the direct start fails, the command goes through /bin/sh, so every
// error message and exit code (127 not found, 126 not executable, ...) is the shell's own.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "qrexec/util.h"

namespace odyssey::qrexec {

// The words of `command` when it has no shell syntax at all: one or more words of
// [A-Za-z0-9_./:=,+@%-] separated by single spaces (no leading/trailing space, no quotes,
// $, globs, ~, redirections, operators or comments), the first word neither a shell
// builtin or keyword (dash's and bash's) nor containing '=' (an assignment). nullopt
// otherwise.
std::optional<std::vector<std::string>> PlainCommandWords(const std::string& command);

// What `/bin/sh -c command` (dash) run with environment `env` in the current directory
// would exec, when that is certain without running it.
struct DirectCommand {
  std::string path;               // the file: the first word if it has a '/', else the first
                                  // regular file PATH gives (dash's own default PATH if unset)
  std::vector<std::string> argv;  // the words; argv[0] as typed
  std::vector<std::string> env;   // env with PWD as dash exports it: kept when it names the
                                  // current directory, else getcwd()
};
// nullopt (use the shell) when the command is not plain, the environment holds a name the
// shell would drop or a duplicate, PATH has a '%' entry (dash's %func), or no regular file
// was found.
std::optional<DirectCommand> PlanDirectCommand(const std::string& command,
                                               const std::vector<std::string>& env);

// Starts `command` as `/bin/sh -c command` would run it, with spec's stdio, environment,
// session and (run_as) user; spec.argv and spec.path are ignored. Direct exec only without
// run_as (the child then changes directory, which changes PWD and relative PATH entries).
Result<pid_t> SpawnCommand(SpawnSpec spec, const std::string& command, ChildReaper* reaper);

}  // namespace odyssey::qrexec
