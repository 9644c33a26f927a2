// Host-side validation of everything a guest's gui-agent sends. GuestStream is the daemon's
// parser: it takes raw vchan bytes and hands out only sanitized events. Rules (specs/gui.md):
// exact length per type before the body is read, unknown types and windows refused, a
// second CREATE of an id refused, window sizes capped, rectangles inside their window,
// titles and classes reduced to a safe character set. A rule broken is a protocol error:
// the stream dies and the daemon drops that domain; it never aborts. Must never trust any
// untrusted_ field it reads, and never draws anything itself.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <variant>

#include "base/result.h"
#include "gui/framer.h"
#include "gui/protocol.h"

namespace odyssey::gui {

// A rectangle that passed validation (in window or screen coordinates, as stated).
struct Rect {
  int32_t x = 0;
  int32_t y = 0;
  uint32_t width = 0;
  uint32_t height = 0;
};

// What the host allows a guest.
struct Limits {
  uint32_t screen_width = 1920;   // host screen, for override-redirect rules
  uint32_t screen_height = 1080;
  size_t clipboard_max = kClipboardDefaultMax;  // 256..256000
  size_t max_windows = kMaxWindows;
  bool utf8_titles = false;  // keep valid UTF-8 in titles instead of replacing it with '_'
};

// Sanitized events, in the order the guest sent them.
struct EvVersion { uint32_t negotiated; };
struct EvCreate { uint32_t window; Rect rect; uint32_t parent; bool override_redirect; };
struct EvDestroy { uint32_t window; };
struct EvMap { uint32_t window; uint32_t transient_for; bool override_redirect; };
struct EvUnmap { uint32_t window; };
struct EvConfigure { uint32_t window; Rect rect; bool override_redirect; };
// SHMIMAGE: a damaged rectangle of a shared buffer (window coordinates, inside the window).
struct EvDamage { uint32_t window; Rect rect; };
// MSG_PIXELS: rect inside the window; pixels = rect.width*rect.height BGRX, valid only
// during the sink call.
struct EvPixels { uint32_t window; Rect rect; std::span<const uint8_t> pixels; };
struct EvTitle { uint32_t window; std::string title; };         // sanitized, ≤127 bytes
struct EvClass { uint32_t window; std::string res_class; std::string res_name; };
struct EvHints { uint32_t window; MsgWindowHints hints; };       // sizes clamped to caps
struct EvFlags { uint32_t window; uint32_t flags_set; uint32_t flags_unset; };
struct EvClipboard { std::string data; };                        // ≤ clipboard_max bytes
struct EvCursor { uint32_t window; uint32_t cursor; };

using GuestEvent = std::variant<EvVersion, EvCreate, EvDestroy, EvMap, EvUnmap, EvConfigure,
                                EvDamage, EvPixels, EvTitle, EvClass, EvHints, EvFlags,
                                EvClipboard, EvCursor>;

// Titles: at most 127 bytes up to the first NUL; printable ASCII kept, every other byte
// becomes '_' (with utf8, well-formed UTF-8 sequences of printable characters are kept).
std::string SanitizeTitle(std::span<const char> untrusted, bool utf8);
// WM_CLASS parts: printable ASCII without spaces or ':' (so "domain:class" stays unambiguous).
std::string SanitizeClass(std::span<const char> untrusted);

// The daemon's parser for one domain's stream.
class GuestStream {
 public:
  using Sink = std::function<void(const GuestEvent&)>;
  GuestStream(const Limits& limits, Sink sink);

  // Consumes bytes from the guest; the first 4 bytes are its version. Returns a protocol
  // error on the first broken rule; the stream is then dead.
  Status Feed(std::span<const uint8_t> untrusted_data);
  bool dead() const { return dead_ || framer_.dead(); }
  bool negotiated() const { return version_have_ == 4 && !dead_; }
  uint32_t version() const { return negotiated_; }
  size_t window_count() const { return windows_.size(); }

 private:
  struct WindowState {
    uint32_t width;
    uint32_t height;
    bool override_redirect;
  };

  Status CheckHeader(const MsgHeader& untrusted_hdr) const;
  Status HandleMessage(const MsgHeader& hdr, std::span<const uint8_t> untrusted_body);
  Status HandleCreate(uint32_t window, const MsgCreate& untrusted);
  Status HandleConfigure(uint32_t window, const MsgConfigure& untrusted);
  Status HandleRect(const MsgHeader& hdr, std::span<const uint8_t> untrusted_body);
  Status HandleWindowDump(uint32_t window, std::span<const uint8_t> untrusted_body);
  Result<Rect> CheckSize(int32_t untrusted_x, int32_t untrusted_y, uint32_t untrusted_w,
                         uint32_t untrusted_h) const;
  bool OverrideRedirectAllowed(uint32_t width, uint32_t height) const;

  Limits limits_;
  Sink sink_;
  Framer framer_;
  uint8_t version_bytes_[4] = {};
  size_t version_have_ = 0;
  uint32_t negotiated_ = 0;
  bool dead_ = false;
  std::unordered_map<uint32_t, WindowState> windows_;
};

}  // namespace odyssey::gui
