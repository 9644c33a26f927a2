// gui-agent: runs inside a domain next to the domain's X server (a private Xvfb). Tracks the
// top-level windows with Composite + Damage, sends their geometry, titles and damaged
// pixels to the host's gui-daemon over vchan (agent = vchan server, port 6000), and injects
// the host's input with XTEST. It trusts the host; it never sends anything but the
// domain's own windows.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "base/result.h"

namespace odyssey::gui {

struct AgentOptions {
  std::string display;           // the domain's X display; empty: $DISPLAY
  int host_domain = 0;           // vchan id of the gui-daemon's side
  std::string vchan_socket_dir;  // empty: $VCHAN_SOCKET_DIR or /var/run/vchan
  std::optional<int> own_domain; // our vchan id; nullopt: $VCHAN_DOMAIN or 0
  // A program the agent started on the display (gui-agent --until-closed), or -1. The agent
  // then also ends once that program has exited and no window of the domain is mapped any
  // more (waiting `linger` for a first window when none was ever mapped), so a disposable
  // ends when its viewer does, even one that forked into the background.
  pid_t command_pid = -1;
  std::chrono::milliseconds linger{2000};
};

// Runs until the daemon disconnects (OK), the command (if any) has exited with no window left
// (OK), or the X server or the channel fails (error). Never reaps command_pid.
Status RunAgent(const AgentOptions& opts);

}  // namespace odyssey::gui
