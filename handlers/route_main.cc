// odyssey-route FILE|URL...: says which rule matches each argument (FILE:LINE) and what
// would happen. Decides only; opens nothing.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "handlers/router.h"

namespace {

using odyssey::handlers::Router;
using odyssey::handlers::RouterOptions;

int Main(int argc, char** argv) {
  CLI::App app{"Explain how Odyssey would open each FILE or URL: the matching rule (FILE:LINE) "
               "and the action. Rules: drop-in *.rules files, first match wins."};
  std::vector<std::string> subjects, dirs;
  bool no_defaults = false, short_form = false, list = false;
  app.add_option("subjects", subjects, "files or URLs to route");
  app.add_option("--rules-dir", dirs,
                 "read rules from DIR instead of /etc/odyssey/handlers.d and "
                 "~/.config/odyssey/handlers.d (repeatable, in order; env ODYSSEY_HANDLERS_DIRS)");
  app.add_flag("--no-defaults", no_defaults, "do not append the shipped 50-default.rules");
  app.add_flag("--short", short_form, "print only 'ACTION<TAB>FILE:LINE' per subject");
  app.add_flag("--list", list, "print every rule in evaluation order and exit");
  CLI11_PARSE(app, argc, argv);

  RouterOptions options;
  if (!dirs.empty()) options.dirs = dirs;
  options.with_defaults = !no_defaults;
  auto router = Router::Create(options);
  if (!router.ok()) {
    std::fprintf(stderr, "odyssey-route: %s\n", router.error().message.c_str());
    return 2;
  }
  if (list) {
    for (const auto& r : router.value()->rules().rules())
      std::printf("%s\t%s\n", r.source.ToString().c_str(), r.text.c_str());
    return 0;
  }
  if (subjects.empty()) {
    std::fprintf(stderr, "odyssey-route: nothing to route (give a FILE or URL; see --help)\n");
    return 2;
  }
  int rc = 0;
  for (const auto& s : subjects) {
    auto d = router.value()->Route(s);
    if (!d.ok()) {
      std::fprintf(stderr, "odyssey-route: %s\n", d.error().message.c_str());
      rc = 1;
      continue;
    }
    for (const auto& note : d->notes) std::fprintf(stderr, "odyssey-route: warning: %s\n", note.c_str());
    if (short_form) {
      std::printf("%s\t%s\n", d->action.Spelling().c_str(), d->rule_source.c_str());
    } else {
      std::printf("%s", d->Explain().c_str());
    }
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
