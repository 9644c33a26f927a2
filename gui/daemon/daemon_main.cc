// gui-daemon: the host side of one domain's GUI. Shows the domain's windows on the host
// display inside frames in its label colour; exits 0 when the agent goes away, 1 when the
// agent broke the protocol or the display failed. Never trusts the domain.
//
// odysseyd starts one per GUI disposable as root with --run-as UID:GID (the requesting
// user) and --exit-when-closed: the channel into the domain is connected as root, then the
// process becomes the user before it opens the user's display with the user's DISPLAY and
// XAUTHORITY, so it can reach nothing of the user's the user could not.
#include <CLI/CLI.hpp>
#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <string>

#include "gui/daemon/gui_session.h"

namespace {

// Qubes' label colours by name, or 0xRRGGBB / #RRGGBB.
bool ParseColor(const std::string& s, uint32_t* out) {
  static const std::map<std::string, uint32_t> kLabels = {
      {"red", 0xcc0000},  {"orange", 0xf57900}, {"yellow", 0xedd400}, {"green", 0x73d216},
      {"gray", 0x555753}, {"blue", 0x3465a4},   {"purple", 0x75507b}, {"black", 0x000000}};
  if (auto it = kLabels.find(s); it != kLabels.end()) {
    *out = it->second;
    return true;
  }
  std::string hex = s.rfind("0x", 0) == 0 ? s.substr(2) : s.rfind('#', 0) == 0 ? s.substr(1) : s;
  if (hex.size() != 6 || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    return false;
  }
  *out = static_cast<uint32_t>(std::stoul(hex, nullptr, 16));
  return true;
}

// Becomes uid:gid for good (no supplementary groups, no way back to root).
odyssey::Status DropTo(uid_t uid, gid_t gid) {
  if (setgroups(0, nullptr) != 0) return odyssey::Error::Errno("setgroups", "gui-daemon");
  if (setresgid(gid, gid, gid) != 0) return odyssey::Error::Errno("setresgid", std::to_string(gid));
  if (setresuid(uid, uid, uid) != 0) return odyssey::Error::Errno("setresuid", std::to_string(uid));
  if (uid != 0 && setuid(0) == 0) return odyssey::Error{"gui-daemon: could regain root", EPERM};
  (void)prctl(PR_SET_DUMPABLE, 1);
  return odyssey::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gui-daemon: show one domain's windows on the host display, behind frames in "
               "its label colour that the domain cannot draw over"};
  odyssey::gui::SessionOptions opts;
  std::string color = "red";
  int own_domain = -1;
  int timeout_ms = 10000;
  app.add_option("--domid", opts.domid, "vchan id of the domain (its gui-agent listens)")->required();
  app.add_option("--name", opts.domain_name, "domain name shown as [name] in titles")->required();
  app.add_option("--socket-dir", opts.vchan_socket_dir,
                 "socket vchan directory (default $VCHAN_SOCKET_DIR or /var/run/vchan)");
  app.add_option("--own-domain", own_domain, "our own vchan id (default $VCHAN_DOMAIN or 0)");
  app.add_option("--display", opts.display, "host X display (default $DISPLAY)");
  app.add_option("--label", color,
                 "frame colour: red, orange, yellow, green, gray, blue, purple, black or "
                 "0xRRGGBB (default red, for disposables)");
  app.add_option("--clipboard-max", opts.clipboard_max,
                 "largest clipboard transfer in bytes (256..256000, default 64000)");
  app.add_flag("--utf8-titles", opts.utf8_titles, "keep well-formed UTF-8 in window titles");
  app.add_option("--connect-timeout-ms", timeout_ms, "how long to wait for the agent (ms)");
  std::string run_as;
  app.add_option("--run-as", run_as,
                 "UID:GID to become once the channel is connected, before the display is opened");
  app.add_flag("--exit-when-closed", opts.end_when_last_window_closed,
               "exit (0) when the domain's last window closed");
  CLI11_PARSE(app, argc, argv);
  if (!run_as.empty()) {
    unsigned uid = 0, gid = 0;
    char extra = 0;
    if (std::sscanf(run_as.c_str(), "%u:%u%c", &uid, &gid, &extra) != 2) {
      std::fprintf(stderr, "gui-daemon: bad --run-as %s (want UID:GID)\n", run_as.c_str());
      return 2;
    }
    opts.after_vchan_connected = [uid, gid] { return DropTo(uid, gid); };
  }
  if (!ParseColor(color, &opts.label_color)) {
    std::fprintf(stderr, "gui-daemon: bad --label %s\n", color.c_str());
    return 2;
  }
  if (own_domain >= 0) opts.own_domain = own_domain;
  opts.connect_timeout = std::chrono::milliseconds(timeout_ms);
  odyssey::Status st = odyssey::gui::GuiSession::Run(opts);
  if (!st.ok()) {
    std::fprintf(stderr, "gui-daemon[%s]: %s\n", opts.domain_name.c_str(),
                 st.error().message.c_str());
    return 1;
  }
  return 0;
}
