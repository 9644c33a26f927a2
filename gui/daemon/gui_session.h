// GuiSession: the host side of one domain's GUI (the body of gui-daemon). It connects to
// the domain's gui-agent over vchan, validates everything the agent sends (gui/validate.h)
// and shows each guest window as a host X11 window inside a frame in the domain's label
// colour that the guest can neither draw over nor change, titled "[domain] guest title".
// Host input goes only to the focused window of the domain; the clipboard crosses only on
// the host-trapped chords Ctrl+Shift+C / Ctrl+Shift+V, with a notice. A broken protocol
// ends the session, never the process. It never trusts a size, string or id from the guest.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/result.h"
#include "base/unique_fd.h"
#include "gui/protocol.h"

namespace odyssey::gui {

// The host clipboard buffer Ctrl+Shift+C fills and Ctrl+Shift+V offers. Share one between
// the sessions of all domains so that a copy in one can be pasted into another.
struct ClipboardBuffer {
  std::mutex mu;
  std::string data;           // guarded by mu; already capped to the session's clipboard_max
  std::string source_domain;  // guarded by mu; domain the data came from
};

struct SessionOptions {
  int domid = -1;              // the domain's vchan id (the agent's vchan server side)
  std::string domain_name;     // shown as "[name] title"; also WM_CLASS "name:class"
  std::string vchan_socket_dir;        // empty: $VCHAN_SOCKET_DIR or /var/run/vchan
  std::optional<int> own_domain;       // our vchan id; nullopt: $VCHAN_DOMAIN or 0
  std::chrono::milliseconds connect_timeout{10000};  // waiting for the agent's socket
  std::string display;         // host X display; empty: $DISPLAY
  uint32_t label_color = 0xcc0000;  // frame colour 0xRRGGBB (disposables: red)
  size_t clipboard_max = kClipboardDefaultMax;  // clamped to 256..256000
  bool utf8_titles = false;    // keep well-formed UTF-8 in titles
  std::shared_ptr<ClipboardBuffer> clipboard;  // null: a buffer private to this session
  // Called on the session thread when the number of mapped guest windows drops from one or
  // more to zero (the user closed the last window, or the agent went away). The engine
  // destroys a disposable from here. May fire again if windows reappear.
  std::function<void()> on_last_window_closed;
  // End the session (OK) when the last mapped window closed, as gui-daemon --exit-when-closed
  // does for a disposable: its windows are gone, so is the reason to show it.
  bool end_when_last_window_closed = false;
  // Called on the session thread once the vchan is connected and before the host display is
  // opened (gui-daemon drops root there); an error ends the session.
  std::function<Status()> after_vchan_connected;
  // Called on the session thread with each notice for the user (clipboard copies and
  // pastes, refused clipboard data). Default: printed to stderr.
  std::function<void(const std::string&)> on_notice;
};

// Counters a test or benchmark may read (a snapshot; thread-safe).
struct SessionStats {
  uint64_t messages = 0;      // validated guest messages
  uint64_t pixel_updates = 0; // MSG_PIXELS drawn
  uint64_t windows_created = 0;
  uint64_t windows_mapped_now = 0;
  uint64_t clipboard_dropped = 0;  // guest clipboard data nobody asked for
};

class SessionLoop;

class GuiSession {
 public:
  // Starts the session on its own thread; returns once the thread runs. Connecting to the
  // agent and the host display happens on that thread: failures end the session and are
  // reported by Wait().
  static Result<std::unique_ptr<GuiSession>> Start(SessionOptions opts);
  // Runs a session on the calling thread until the agent goes away (OK), the protocol is
  // broken or the display fails (error).
  static Status Run(SessionOptions opts);

  ~GuiSession();  // Stop() + Wait()
  GuiSession(const GuiSession&) = delete;
  GuiSession& operator=(const GuiSession&) = delete;

  // Asks the session to close its windows and end; returns at once. Idempotent.
  void Stop();
  // Blocks until the session ended; OK when the agent disconnected or Stop() was called.
  Status Wait();
  // True once the session thread has ended.
  bool finished() const;
  SessionStats stats() const;

 private:
  GuiSession() = default;

  UniqueFd stop_fd_;  // eventfd: written by Stop()
  std::shared_ptr<SessionLoop> loop_;
  std::thread thread_;
  Status result_;
  std::atomic<bool> finished_{false};
};

}  // namespace odyssey::gui
