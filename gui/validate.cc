#include "gui/validate.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace odyssey::gui {
namespace {

Error ProtocolError(const std::string& what) { return Error{"gui protocol error: " + what, 0}; }

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%x", v);
  return buf;
}

template <typename T>
T Load(std::span<const uint8_t> body) {
  T out;
  std::memcpy(&out, body.data(), sizeof(T));
  return out;
}

bool PrintableAscii(unsigned char c) { return c >= 0x20 && c < 0x7f; }

// Length of the well-formed UTF-8 sequence of a printable character at s[i], or 0.
size_t Utf8Printable(std::span<const char> s, size_t i) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = b(0);
  size_t n;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(k) & 0x3f);
  }
  bool overlong = (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000);
  bool surrogate = cp >= 0xd800 && cp <= 0xdfff;
  bool c1_control = cp >= 0x80 && cp < 0xa0;
  // Bidirectional overrides and isolates can make a title read as another one.
  bool bidi = (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
  if (overlong || surrogate || c1_control || bidi || cp > 0x10ffff) return 0;
  return n;
}

}  // namespace

std::string SanitizeTitle(std::span<const char> untrusted, bool utf8) {
  size_t end = 0;
  while (end < untrusted.size() && end < kMaxTitleBytes && untrusted[end] != '\0') ++end;
  untrusted = untrusted.first(end);
  std::string out;
  out.reserve(end);
  for (size_t i = 0; i < untrusted.size();) {
    unsigned char c = static_cast<unsigned char>(untrusted[i]);
    if (PrintableAscii(c)) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t n = utf8 ? Utf8Printable(untrusted, i) : 0;
    if (n) {
      out.append(untrusted.data() + i, n);
      i += n;
    } else {
      out.push_back('_');
      ++i;
    }
  }
  return out;
}

std::string SanitizeClass(std::span<const char> untrusted) {
  std::string out;
  for (char ch : untrusted) {
    if (ch == '\0') break;
    unsigned char c = static_cast<unsigned char>(ch);
    out.push_back(PrintableAscii(c) && c != ' ' && c != ':' ? ch : '_');
  }
  return out;
}

GuestStream::GuestStream(const Limits& limits, Sink sink)
    : limits_(limits),
      sink_(std::move(sink)),
      framer_([this](const MsgHeader& h) { return CheckHeader(h); },
              [this](const MsgHeader& h, std::span<const uint8_t> b) {
                return HandleMessage(h, b);
              }) {
  limits_.clipboard_max = std::clamp(limits_.clipboard_max, kClipboardMinMax, kClipboardMaxMax);
  limits_.max_windows = std::min(limits_.max_windows, kMaxWindows);
}

Status GuestStream::Feed(std::span<const uint8_t> untrusted_data) {
  if (dead_) return ProtocolError("stream already failed");
  if (version_have_ < 4) {
    size_t take = std::min(4 - version_have_, untrusted_data.size());
    std::memcpy(version_bytes_ + version_have_, untrusted_data.data(), take);
    version_have_ += take;
    untrusted_data = untrusted_data.subspan(take);
    if (version_have_ < 4) return OkStatus();
    uint32_t untrusted_version;
    std::memcpy(&untrusted_version, version_bytes_, 4);
    if (VersionMajor(untrusted_version) != kVersionMajor) {
      dead_ = true;
      return ProtocolError("guest protocol version " + Hex(untrusted_version) +
                           " has another major than " + Hex(kVersion));
    }
    uint32_t minor = std::min(VersionMinor(untrusted_version), kVersionMinor);
    negotiated_ = (kVersionMajor << 16) | minor;
    sink_(EvVersion{negotiated_});
  }
  if (untrusted_data.empty()) return OkStatus();
  Status st = framer_.Feed(untrusted_data);
  if (!st.ok()) dead_ = true;
  return st;
}

Status GuestStream::CheckHeader(const MsgHeader& untrusted_hdr) const {
  const uint32_t type = untrusted_hdr.type;
  const uint32_t window = untrusted_hdr.window;
  const size_t len = untrusted_hdr.untrusted_len;
  size_t min_len = 0, max_len = 0;
  switch (type) {
    case MSG_CREATE: min_len = max_len = sizeof(MsgCreate); break;
    case MSG_DESTROY: case MSG_UNMAP: min_len = max_len = 0; break;
    case MSG_MAP: min_len = max_len = sizeof(MsgMapInfo); break;
    case MSG_CONFIGURE: min_len = max_len = sizeof(MsgConfigure); break;
    case MSG_SHMIMAGE: min_len = max_len = sizeof(MsgShmImage); break;
    case MSG_WMNAME: min_len = max_len = sizeof(MsgWmName); break;
    case MSG_WINDOW_HINTS: min_len = max_len = sizeof(MsgWindowHints); break;
    case MSG_WINDOW_FLAGS: min_len = max_len = sizeof(MsgWindowFlags); break;
    case MSG_WMCLASS: min_len = max_len = sizeof(MsgWmClass); break;
    case MSG_CURSOR: min_len = max_len = sizeof(MsgCursor); break;
    case MSG_CLIPBOARD_DATA: min_len = 0; max_len = limits_.clipboard_max; break;
    case MSG_PIXELS:
      // The exact length follows from the rectangle; here only its upper bound.
      min_len = sizeof(MsgPixels) + kBytesPerPixel;
      max_len = sizeof(MsgPixels) + kMaxPixelBytes;
      break;
    case MSG_WINDOW_DUMP:
      min_len = sizeof(MsgWindowDumpHdr);
      max_len = sizeof(MsgWindowDumpHdr) +
                (size_t{kMaxWindowWidth} * kMaxWindowHeight * 4 + kPageSize - 1) / kPageSize * 4;
      break;
    default:
      return ProtocolError("unknown message type " + std::to_string(type));
  }
  if (len < min_len || len > max_len) {
    return ProtocolError(std::string(MsgTypeName(type)) + " with length " + std::to_string(len) +
                         ", expected " + std::to_string(min_len) +
                         (min_len == max_len ? "" : ".." + std::to_string(max_len)));
  }
  if (type == MSG_CLIPBOARD_DATA) return OkStatus();  // window id is ignored
  bool known = windows_.count(window) != 0;
  if (type == MSG_CREATE) {
    if (window == 0) return ProtocolError("MSG_CREATE of window 0");
    if (known) return ProtocolError("second MSG_CREATE of window " + Hex(window));
    if (windows_.size() >= limits_.max_windows) {
      return ProtocolError("more than " + std::to_string(limits_.max_windows) + " windows");
    }
    return OkStatus();
  }
  if (!known) {
    return ProtocolError(std::string(MsgTypeName(type)) + " for unknown window " + Hex(window));
  }
  return OkStatus();
}

Result<Rect> GuestStream::CheckSize(int32_t untrusted_x, int32_t untrusted_y, uint32_t untrusted_w,
                                    uint32_t untrusted_h) const {
  if (untrusted_w == 0 || untrusted_h == 0 || untrusted_w > kMaxWindowWidth ||
      untrusted_h > kMaxWindowHeight) {
    return ProtocolError("window size " + std::to_string(untrusted_w) + "x" +
                         std::to_string(untrusted_h) + " outside 1x1.." +
                         std::to_string(kMaxWindowWidth) + "x" + std::to_string(kMaxWindowHeight));
  }
  Rect r;
  // Positions are clamped, never refused: they are hints the host may override.
  r.x = std::clamp<int32_t>(untrusted_x, -static_cast<int32_t>(kMaxWindowWidth),
                            static_cast<int32_t>(kMaxWindowWidth));
  r.y = std::clamp<int32_t>(untrusted_y, -static_cast<int32_t>(kMaxWindowHeight),
                            static_cast<int32_t>(kMaxWindowHeight));
  r.width = untrusted_w;
  r.height = untrusted_h;
  return r;
}

bool GuestStream::OverrideRedirectAllowed(uint32_t width, uint32_t height) const {
  // At most 90 % of the screen: a bigger one could pose as the whole desktop.
  uint64_t area = uint64_t{width} * height;
  uint64_t screen = uint64_t{limits_.screen_width} * limits_.screen_height;
  return area * 10 <= screen * 9;
}

Status GuestStream::HandleCreate(uint32_t window, const MsgCreate& untrusted) {
  auto rect = CheckSize(untrusted.x, untrusted.y, untrusted.width, untrusted.height);
  if (!rect.ok()) return rect.error();
  bool override_redirect =
      untrusted.override_redirect != 0 && OverrideRedirectAllowed(rect->width, rect->height);
  // A parent other than a window of this domain is dropped, never followed.
  uint32_t parent = windows_.count(untrusted.parent) ? untrusted.parent : 0;
  windows_[window] = WindowState{rect->width, rect->height, override_redirect};
  sink_(EvCreate{window, *rect, parent, override_redirect});
  return OkStatus();
}

Status GuestStream::HandleConfigure(uint32_t window, const MsgConfigure& untrusted) {
  auto rect = CheckSize(untrusted.x, untrusted.y, untrusted.width, untrusted.height);
  if (!rect.ok()) return rect.error();
  auto& w = windows_.at(window);
  bool override_redirect =
      untrusted.override_redirect != 0 && OverrideRedirectAllowed(rect->width, rect->height);
  w = WindowState{rect->width, rect->height, override_redirect};
  sink_(EvConfigure{window, *rect, override_redirect});
  return OkStatus();
}

Status GuestStream::HandleRect(const MsgHeader& hdr, std::span<const uint8_t> untrusted_body) {
  auto untrusted = Load<MsgShmImage>(untrusted_body);
  const auto& w = windows_.at(hdr.window);
  uint64_t x = static_cast<uint32_t>(untrusted.x), y = static_cast<uint32_t>(untrusted.y);
  bool inside = untrusted.x >= 0 && untrusted.y >= 0 && untrusted.width > 0 &&
                untrusted.height > 0 && x + untrusted.width <= w.width &&
                y + untrusted.height <= w.height;
  if (!inside) {
    return ProtocolError(std::string(MsgTypeName(hdr.type)) + " rectangle " +
                         std::to_string(untrusted.x) + "," + std::to_string(untrusted.y) + " " +
                         std::to_string(untrusted.width) + "x" + std::to_string(untrusted.height) +
                         " outside window " + std::to_string(w.width) + "x" +
                         std::to_string(w.height));
  }
  Rect r{untrusted.x, untrusted.y, untrusted.width, untrusted.height};
  if (hdr.type == MSG_SHMIMAGE) {
    sink_(EvDamage{hdr.window, r});
    return OkStatus();
  }
  // Both factors are ≤ the window caps, so this cannot overflow 64 bits.
  uint64_t pixel_bytes = uint64_t{r.width} * r.height * kBytesPerPixel;
  if (pixel_bytes > kMaxPixelBytes || untrusted_body.size() != sizeof(MsgPixels) + pixel_bytes) {
    return ProtocolError("MSG_PIXELS length " + std::to_string(untrusted_body.size()) +
                         " for a " + std::to_string(r.width) + "x" + std::to_string(r.height) +
                         " rectangle");
  }
  sink_(EvPixels{hdr.window, r, untrusted_body.subspan(sizeof(MsgPixels))});
  return OkStatus();
}

Status GuestStream::HandleWindowDump(uint32_t window, std::span<const uint8_t> untrusted_body) {
  auto untrusted = Load<MsgWindowDumpHdr>(untrusted_body);
  const auto& w = windows_.at(window);
  if (untrusted.type != kWindowDumpTypeGrantRefs || (untrusted.bpp != 24 && untrusted.bpp != 32) ||
      untrusted.width != w.width || untrusted.height != w.height) {
    return ProtocolError("MSG_WINDOW_DUMP does not describe its window");
  }
  size_t pages = (size_t{w.width} * w.height * 4 + kPageSize - 1) / kPageSize;
  if (untrusted_body.size() != sizeof(MsgWindowDumpHdr) + pages * 4) {
    return ProtocolError("MSG_WINDOW_DUMP with a wrong number of references");
  }
  // Odyssey has no grant tables: the references are checked for size and dropped; pixels
  // come as MSG_PIXELS.
  return OkStatus();
}

Status GuestStream::HandleMessage(const MsgHeader& hdr, std::span<const uint8_t> untrusted_body) {
  const uint32_t window = hdr.window;
  switch (hdr.type) {
    case MSG_CREATE:
      return HandleCreate(window, Load<MsgCreate>(untrusted_body));
    case MSG_DESTROY:
      windows_.erase(window);
      sink_(EvDestroy{window});
      return OkStatus();
    case MSG_MAP: {
      auto untrusted = Load<MsgMapInfo>(untrusted_body);
      auto& w = windows_.at(window);
      w.override_redirect =
          untrusted.override_redirect != 0 && OverrideRedirectAllowed(w.width, w.height);
      uint32_t transient_for =
          windows_.count(untrusted.transient_for) && untrusted.transient_for != window
              ? untrusted.transient_for
              : 0;
      sink_(EvMap{window, transient_for, w.override_redirect});
      return OkStatus();
    }
    case MSG_UNMAP:
      sink_(EvUnmap{window});
      return OkStatus();
    case MSG_CONFIGURE:
      return HandleConfigure(window, Load<MsgConfigure>(untrusted_body));
    case MSG_SHMIMAGE:
    case MSG_PIXELS:
      return HandleRect(hdr, untrusted_body);
    case MSG_WMNAME: {
      auto untrusted = Load<MsgWmName>(untrusted_body);
      sink_(EvTitle{window, SanitizeTitle(untrusted.data, limits_.utf8_titles)});
      return OkStatus();
    }
    case MSG_WMCLASS: {
      auto untrusted = Load<MsgWmClass>(untrusted_body);
      sink_(EvClass{window, SanitizeClass(untrusted.res_class), SanitizeClass(untrusted.res_name)});
      return OkStatus();
    }
    case MSG_WINDOW_HINTS: {
      auto h = Load<MsgWindowHints>(untrusted_body);
      for (uint32_t* v : {&h.min_width, &h.max_width, &h.base_width, &h.width_inc}) {
        *v = std::min(*v, kMaxWindowWidth);
      }
      for (uint32_t* v : {&h.min_height, &h.max_height, &h.base_height, &h.height_inc}) {
        *v = std::min(*v, kMaxWindowHeight);
      }
      // Only PMinSize (16), PMaxSize (32), PResizeInc (64), PBaseSize (256) are passed on.
      h.flags &= 16 | 32 | 64 | 256;
      sink_(EvHints{window, h});
      return OkStatus();
    }
    case MSG_WINDOW_FLAGS: {
      auto untrusted = Load<MsgWindowFlags>(untrusted_body);
      sink_(EvFlags{window, untrusted.flags_set & kWindowFlagsKnown,
                    untrusted.flags_unset & kWindowFlagsKnown});
      return OkStatus();
    }
    case MSG_CURSOR: {
      auto untrusted = Load<MsgCursor>(untrusted_body);
      // 0 = default, kCursorX11 | glyph = a glyph of the X cursor font (even, below 154);
      // anything else means the default.
      uint32_t glyph = untrusted.cursor & ~kCursorX11;
      bool x11 = (untrusted.cursor & kCursorX11) && glyph < 154 && glyph % 2 == 0;
      uint32_t cursor = x11 ? untrusted.cursor : 0;
      sink_(EvCursor{window, cursor});
      return OkStatus();
    }
    case MSG_CLIPBOARD_DATA:
      sink_(EvClipboard{std::string(untrusted_body.begin(), untrusted_body.end())});
      return OkStatus();
    case MSG_WINDOW_DUMP:
      return HandleWindowDump(window, untrusted_body);
    default:
      // CheckHeader refused every other type before its body was read.
      ODYSSEY_CHECK(false);
  }
  return OkStatus();
}

}  // namespace odyssey::gui
