// Desktop integration for one user: installs odyssey-open as the default handler for
// documents and links (a .desktop file with a MimeType list and an "Open in Disposable VM"
// action, registered in mimeapps.list the way xdg-mime does), plus file-manager actions for
// Nautilus (scripts), Dolphin (service menu) and Thunar (custom actions). Remove undoes
// exactly that: previous defaults come back and files we did not write are never touched.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"

namespace odyssey::handlers {

// The file templates from handlers/desktop/, with @ODYSSEY_OPEN@ for the program path.
struct DesktopTemplates {
  std::string desktop;
  std::string nautilus;  // one script for every action: @TITLE@ and @ACTION@ filled in
  std::string dolphin;
  std::string thunar;
};
const DesktopTemplates& EmbeddedDesktopTemplates();

inline constexpr const char* kDesktopId = "odyssey-open.desktop";

struct IntegrateOptions {
  std::string open_program;  // absolute path of odyssey-open written into Exec= lines
  std::string data_home;     // $XDG_DATA_HOME or ~/.local/share
  std::string config_home;   // $XDG_CONFIG_HOME or ~/.config
  bool set_defaults = true;  // make odyssey-open the default for its MimeType list
  // From the environment (HOME, XDG_DATA_HOME, XDG_CONFIG_HOME).
  static IntegrateOptions FromEnvironment();
};

// What was done, one line per file or setting, for the user to read.
using Report = std::vector<std::string>;

Result<Report> InstallUserIntegration(const IntegrateOptions& options);
Result<Report> RemoveUserIntegration(const IntegrateOptions& options);

// The whole command for `odyssey-integrate` and `odyssey integrate`: installs (or removes),
// prints the report on stdout or "<program>: <error>" on stderr; the exit code.
int RunIntegrateCommand(const IntegrateOptions& options, bool remove, const char* program);

// The MIME types listed in the .desktop template's MimeType= line.
std::vector<std::string> DesktopMimeTypes();

}  // namespace odyssey::handlers
