// gui-agent: runs inside a domain next to the domain's X server (a private Xvfb). Tracks the
// top-level windows with Composite + Damage, sends their geometry, titles and damaged
// pixels to the host's gui-daemon over vchan (agent = vchan server, port 6000), and injects
// the host's input with XTEST. It trusts the host; it never sends anything but the
// domain's own windows.
#pragma once

#include <optional>
#include <string>

#include "base/result.h"

namespace odyssey::gui {

struct AgentOptions {
  std::string display;           // the domain's X display; empty: $DISPLAY
  int host_domain = 0;           // vchan id of the gui-daemon's side
  std::string vchan_socket_dir;  // empty: $VCHAN_SOCKET_DIR or /var/run/vchan
  std::optional<int> own_domain; // our vchan id; nullopt: $VCHAN_DOMAIN or 0
};

// Runs until the daemon disconnects (OK) or the X server or the channel fails (error).
Status RunAgent(const AgentOptions& opts);

}  // namespace odyssey::gui
