// odyssey-route FILE|URL...: says which rule matches each argument (FILE:LINE) and what
// would happen. Decides only; opens nothing. (`odyssey route` runs the same code.)
#include <CLI/CLI.hpp>

#include "handlers/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Explain how Odyssey would open each FILE or URL: the matching rule (FILE:LINE) "
               "and the action. Rules: drop-in *.rules files, first match wins."};
  odyssey::handlers::RouteCommand cmd;
  app.add_option("subjects", cmd.subjects, "files or URLs to route");
  app.add_option("--rules-dir", cmd.dirs,
                 "read rules from DIR instead of /etc/odyssey/handlers.d and "
                 "~/.config/odyssey/handlers.d (repeatable, in order; env ODYSSEY_HANDLERS_DIRS)");
  app.add_flag("--no-defaults", cmd.no_defaults, "do not append the shipped 50-default.rules");
  app.add_flag("--short", cmd.short_form, "print only 'ACTION<TAB>FILE:LINE' per subject");
  app.add_flag("--list", cmd.list, "print every rule in evaluation order and exit");
  CLI11_PARSE(app, argc, argv);
  return odyssey::handlers::RunRouteCommand(cmd, "odyssey-route");
}
