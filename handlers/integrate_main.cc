// odyssey-integrate --user [--remove]: installs (or removes) Odyssey's desktop integration
// for the current user: odyssey-open as the default handler for documents and links, and
// "Open in Disposable VM" in Nautilus, Dolphin and Thunar.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>

#include "handlers/integrate.h"

namespace {

using namespace odyssey::handlers;

// odyssey-open next to this program.
std::string SiblingOpenProgram() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  std::string self(buf, static_cast<size_t>(n));
  return self.substr(0, self.rfind('/')) + "/odyssey-open";
}

int Main(int argc, char** argv) {
  CLI::App app{"Install or remove Odyssey's desktop integration for this user: odyssey-open "
               "as the default handler (xdg-mime) for documents and links, and 'Open in "
               "Disposable VM' actions for Nautilus, Dolphin and Thunar. Files go under "
               "$XDG_DATA_HOME and $XDG_CONFIG_HOME."};
  bool user = false, remove = false, no_defaults = false;
  IntegrateOptions options = IntegrateOptions::FromEnvironment();
  options.open_program = SiblingOpenProgram();
  app.add_flag("--user", user, "for the current user (the only mode so far)")->required();
  app.add_flag("--remove", remove, "undo: remove our files, restore the previous defaults");
  app.add_flag("--no-defaults", no_defaults, "install the actions but do not change default applications");
  app.add_option("--open-program", options.open_program, "absolute path of odyssey-open for Exec= lines");
  CLI11_PARSE(app, argc, argv);
  (void)user;
  options.set_defaults = !no_defaults;
  return RunIntegrateCommand(options, remove, "odyssey-integrate");
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
