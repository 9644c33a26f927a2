// gui_attach: the engine's glue to gui/ for GUI disposables. A run/call request may carry
// {"gui": {"display": ":0", "xauthority": "/home/u/.Xauthority"}} (the CLI adds it to
// `odyssey open FILE` when DISPLAY is set). Then the call's program runs inside the domain
// under gui-agent --until-closed (a private Xvfb; the program's DISPLAY), and odysseyd starts
// one gui-daemon process for the disposable that connects to that agent over the socket
// vchan as root, then becomes the requesting user and shows the windows on the user's
// display with the red disposable frame. When that gui-daemon ends (the last window closed,
// the agent went away, or it failed), the disposable is killed after a grace period in which
// a viewer's write-back can finish; normally the call has ended on its own by then.
//
// The request's strings are checked here and only ever reach the environment of the
// gui-daemon, which opens the display with the caller's uid, never with root's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "base/result.h"
#include "base/unique_fd.h"
#include "engine/backend.h"

namespace odyssey::engine {

// What a GUI call needs from its requester (the admin client).
struct GuiRequest {
  std::string display;     // the user's DISPLAY, e.g. ":0" or "host:10.0"
  std::string xauthority;  // the user's XAUTHORITY path, opened as the user; may be empty
  uint32_t uid = 0, gid = 0;  // the caller (SO_PEERCRED), whom the gui-daemon runs as
};

// Parses the optional "gui" object of a run/call request. nullopt when absent or null;
// an error naming the offending field when malformed.
Result<std::optional<GuiRequest>> ParseGuiRequest(const nlohmann::json& request, uint32_t uid,
                                                  uint32_t gid);

// gui-agent bound into HAL domains: $ODYSSEY_GUI_AGENT, else the one built with this tree,
// else /usr/lib/odyssey/gui-agent; "" when that file is not executable.
std::string GuiAgentPath();
// gui-daemon run on the host: $ODYSSEY_GUI_DAEMON, else the built one, else on PATH.
std::string GuiDaemonPath();

// Where gui-agent appears inside a domain (hal/native binds GuiAgentPath() there).
inline constexpr const char* kGuiAgentInside = "/odyssey/gui-agent";
// The private X server of a GUI disposable.
inline constexpr const char* kGuestScreen = "1920x1080";
// How long a disposable may outlive its gui-daemon (write-back of an edited file).
inline constexpr std::chrono::seconds kGuiGrace{10};

// Rewrites spec so that its command or service runs under gui-agent --until-closed inside
// the domain; a domain without gui-agent runs it directly, as before.
void WrapCallForGui(CallSpec* spec);

// One running gui-daemon process for one disposable, watched by a thread.
class GuiAttachment {
 public:
  struct Options {
    std::string domain_name;  // "[name] title"
    VchanAddress vchan;       // the domain's socket vchan
    GuiRequest request;
    std::string daemon_path = GuiDaemonPath();
    std::chrono::milliseconds grace = kGuiGrace;
    std::function<void()> on_end;  // watcher thread: grace after the gui-daemon exited
  };
  static Result<std::unique_ptr<GuiAttachment>> Start(Options options);
  // Stops the watcher (on_end no longer runs); SIGTERMs and reaps the gui-daemon if alive.
  ~GuiAttachment();
  GuiAttachment(const GuiAttachment&) = delete;
  GuiAttachment& operator=(const GuiAttachment&) = delete;
  pid_t pid() const { return pid_; }

 private:
  GuiAttachment() = default;
  void Watch();

  Options options_;
  pid_t pid_ = -1;
  UniqueFd pidfd_, stop_fd_;
  std::thread watcher_;
};

// The daemon's hook for one call. When request is set and member has a socket vchan and a
// gui-agent is available, wraps spec and starts the member's gui-daemon (on_end kills the
// call). Otherwise, or when starting fails (logged), spec is left as is: the call runs
// headless exactly as without a display. Returns the attachment to destroy after the call.
std::unique_ptr<GuiAttachment> AttachGui(const std::optional<GuiRequest>& request,
                                         const Member& member, CallSpec* spec,
                                         std::function<void()> on_end);

}  // namespace odyssey::engine
