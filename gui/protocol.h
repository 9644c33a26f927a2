// The GUI wire protocol between gui-agent (inside a domain) and gui-daemon (host): the Qubes
// GUI message set (version 1.8) carried over vchan port 6000, plus one Odyssey extension
// (MSG_PIXELS) that carries pixels inline because a socket vchan has no grant references.
// Host byte order, packed structs. This header only describes bytes: it never trusts them.
// Every field a guest sends is untrusted until gui/validate.h has checked it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace odyssey::gui {

// vchan port of the GUI channel; the agent is the vchan server, the daemon the client.
inline constexpr int kVchanPort = 6000;

// Version = major << 16 | minor. The guest sends its version (u32) first; the host answers
// with min(minors) for the same major and closes on another major, then sends XConf.
//   1.0  base message set
//   1.4  WINDOW_DUMP replaces MFNDUMP
//   1.7  CURSOR
//   1.8  WINDOW_DUMP_ACK
// MSG_PIXELS (Odyssey) is accepted at every minor: Qubes agents never send it.
inline constexpr uint32_t kVersionMajor = 1;
inline constexpr uint32_t kVersionMinor = 8;
inline constexpr uint32_t kVersion = (kVersionMajor << 16) | kVersionMinor;
inline constexpr uint32_t VersionMajor(uint32_t v) { return v >> 16; }
inline constexpr uint32_t VersionMinor(uint32_t v) { return v & 0xffff; }

// Message types (explicit numbers: they are the wire format).
enum MsgType : uint32_t {
  MSG_KEYPRESS = 124,         // host→guest  MsgKeypress
  MSG_BUTTON = 125,           // host→guest  MsgButton
  MSG_MOTION = 126,           // host→guest  MsgMotion
  MSG_CROSSING = 127,         // host→guest  MsgCrossing
  MSG_FOCUS = 128,            // host→guest  MsgFocus
  MSG_CREATE = 130,           // guest→host  MsgCreate
  MSG_DESTROY = 131,          // guest→host, echoed by the host as an ack; no body
  MSG_MAP = 132,              // both        MsgMapInfo
  MSG_UNMAP = 133,            // guest→host  no body
  MSG_CONFIGURE = 134,        // both        MsgConfigure
  MSG_SHMIMAGE = 136,         // guest→host  MsgShmImage (damage of a shared buffer)
  MSG_CLOSE = 137,            // host→guest  no body
  MSG_CLIPBOARD_REQ = 139,    // host→guest  no body
  MSG_CLIPBOARD_DATA = 140,   // both        bytes, length in untrusted_len
  MSG_WMNAME = 141,           // guest→host  MsgWmName
  MSG_WINDOW_HINTS = 144,     // guest→host  MsgWindowHints
  MSG_WINDOW_FLAGS = 145,     // both        MsgWindowFlags
  MSG_WMCLASS = 146,          // guest→host  MsgWmClass
  MSG_WINDOW_DUMP = 147,      // guest→host  MsgWindowDumpHdr + buffer reference
  MSG_CURSOR = 148,           // guest→host  MsgCursor
  MSG_WINDOW_DUMP_ACK = 149,  // host→guest  no body
  // Odyssey extension: MsgPixels followed by width*height*4 bytes of BGRX pixels, rows top
  // to bottom, no padding. Replaces SHMIMAGE when there is no shared memory (socket vchan).
  MSG_PIXELS = 160,
};

#pragma pack(push, 1)

// Every message starts with this header. The host compares untrusted_len with the exact
// size expected for the type (MSG_PIXELS: derived from its rectangle) and nothing else.
struct MsgHeader {
  uint32_t type;
  uint32_t window;
  uint32_t untrusted_len;
};
static_assert(sizeof(MsgHeader) == 12);

// Screen configuration the host sends after the version.
struct XConf {
  uint32_t w;
  uint32_t h;
  uint32_t depth;
  uint32_t mem;  // KiB of window memory the guest may use
};
static_assert(sizeof(XConf) == 16);

struct MsgKeypress {
  uint32_t type;  // X KeyPress (2) or KeyRelease (3)
  uint32_t x;
  uint32_t y;
  uint32_t state;
  uint32_t keycode;
};
static_assert(sizeof(MsgKeypress) == 20);

struct MsgButton {
  uint32_t type;  // X ButtonPress (4) or ButtonRelease (5)
  uint32_t x;
  uint32_t y;
  uint32_t state;
  uint32_t button;
};
static_assert(sizeof(MsgButton) == 20);

struct MsgMotion {
  uint32_t x;
  uint32_t y;
  uint32_t state;
  uint32_t is_hint;
};
static_assert(sizeof(MsgMotion) == 16);

struct MsgCrossing {
  uint32_t type;  // X EnterNotify (7) or LeaveNotify (8)
  uint32_t x;
  uint32_t y;
  uint32_t state;
  uint32_t mode;
  uint32_t detail;
  uint32_t focus;
};
static_assert(sizeof(MsgCrossing) == 28);

struct MsgFocus {
  uint32_t type;  // X FocusIn (9) or FocusOut (10)
  uint32_t mode;
  uint32_t detail;
};
static_assert(sizeof(MsgFocus) == 12);

struct MsgCreate {
  int32_t x;
  int32_t y;
  uint32_t width;
  uint32_t height;
  uint32_t parent;
  uint32_t override_redirect;
};
static_assert(sizeof(MsgCreate) == 24);

struct MsgMapInfo {
  uint32_t transient_for;
  uint32_t override_redirect;
};
static_assert(sizeof(MsgMapInfo) == 8);

struct MsgConfigure {
  int32_t x;
  int32_t y;
  uint32_t width;
  uint32_t height;
  uint32_t override_redirect;
};
static_assert(sizeof(MsgConfigure) == 20);

struct MsgShmImage {
  int32_t x;
  int32_t y;
  uint32_t width;
  uint32_t height;
};
static_assert(sizeof(MsgShmImage) == 16);

// Same layout as MsgShmImage; the pixels follow.
using MsgPixels = MsgShmImage;

struct MsgWmName {
  char data[128];
};
static_assert(sizeof(MsgWmName) == 128);

struct MsgWindowHints {
  uint32_t flags;  // ICCCM WM_SIZE_HINTS flags
  uint32_t min_width;
  uint32_t min_height;
  uint32_t max_width;
  uint32_t max_height;
  uint32_t width_inc;
  uint32_t height_inc;
  uint32_t base_width;
  uint32_t base_height;
};
static_assert(sizeof(MsgWindowHints) == 36);

inline constexpr uint32_t kWindowFlagFullscreen = 1;
inline constexpr uint32_t kWindowFlagDemandsAttention = 2;
inline constexpr uint32_t kWindowFlagMinimize = 4;
inline constexpr uint32_t kWindowFlagsKnown = 7;

struct MsgWindowFlags {
  uint32_t flags_set;
  uint32_t flags_unset;
};
static_assert(sizeof(MsgWindowFlags) == 8);

struct MsgWmClass {
  char res_class[64];
  char res_name[64];
};
static_assert(sizeof(MsgWmClass) == 128);

struct MsgWindowDumpHdr {
  uint32_t type;
  uint32_t width;
  uint32_t height;
  uint32_t bpp;
};
static_assert(sizeof(MsgWindowDumpHdr) == 16);

inline constexpr uint32_t kCursorDefault = 0;
inline constexpr uint32_t kCursorX11 = 0x100;  // | glyph number of the X cursor font

struct MsgCursor {
  uint32_t cursor;
};
static_assert(sizeof(MsgCursor) == 4);

#pragma pack(pop)

// Host-side limits (Qubes' values unless noted).
inline constexpr uint32_t kMaxWindowWidth = 16384;
inline constexpr uint32_t kMaxWindowHeight = 6144;
inline constexpr size_t kMaxWindows = 500;
inline constexpr size_t kMaxTitleBytes = 127;
inline constexpr size_t kClipboardDefaultMax = 64000;
inline constexpr size_t kClipboardMinMax = 256;
inline constexpr size_t kClipboardMaxMax = 256000;
// Odyssey: one MSG_PIXELS carries at most this many pixel bytes; agents split larger
// rectangles into strips. Bounds the host's allocation per message.
inline constexpr size_t kMaxPixelBytes = 4u << 20;
// WINDOW_DUMP type 0 carries one u32 grant reference per 4 KiB page of the window buffer.
inline constexpr uint32_t kWindowDumpTypeGrantRefs = 0;
inline constexpr size_t kPageSize = 4096;
inline constexpr uint32_t kBytesPerPixel = 4;

// Printable name of a message type ("MSG_CREATE", or "unknown" for any other number).
const char* MsgTypeName(uint32_t type);

}  // namespace odyssey::gui
