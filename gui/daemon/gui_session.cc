#include "gui/daemon/gui_session.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <xcb/xcb.h>
#include <xcb/xcb_icccm.h>
#include <xcb/xcb_keysyms.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "gui/framer.h"
#include "gui/validate.h"
#include "hal/vchan/vchan.h"

namespace odyssey::gui {

// The whole session, driven by one poll loop on one thread: vchan in, X events in, vchan
// out. Owns the X connection and every host window it made.
class SessionLoop {
 public:
  explicit SessionLoop(SessionOptions opts) : opts_(std::move(opts)) {
    if (!opts_.clipboard) opts_.clipboard = std::make_shared<ClipboardBuffer>();
    opts_.clipboard_max = std::clamp(opts_.clipboard_max, kClipboardMinMax, kClipboardMaxMax);
  }
  ~SessionLoop() { Teardown(); }

  Status Run(int stop_fd);
  SessionStats stats() const {
    SessionStats s;
    s.messages = messages_.load();
    s.pixel_updates = pixel_updates_.load();
    s.windows_created = windows_created_.load();
    s.windows_mapped_now = mapped_now_.load();
    s.clipboard_dropped = clipboard_dropped_.load();
    return s;
  }

 private:
  // Frame insets around the guest content; the guest never draws there.
  struct Insets {
    uint32_t left, top, right, bottom;
  };
  struct HostWindow {
    xcb_window_t frame = 0;    // outer window, background = label colour
    xcb_window_t content = 0;  // child window at the insets, background = pixmap
    xcb_pixmap_t pixmap = 0;   // the guest's pixels, width x height
    uint32_t width = 0, height = 0;
    int32_t x = 0, y = 0;
    Insets insets{};
    bool mapped = false;
    bool override_redirect = false;
    std::string title;  // "[domain] sanitized guest title"
  };

  Status ConnectVchan();
  Status Connect();  // after ConnectVchan() and ConnectX(): the validating stream
  void LastWindowClosed();
  Status ConnectX();
  Status Loop(int stop_fd);
  void Teardown();

  // Guest side.
  Status ReadGuest();
  void OnGuestEvent(const GuestEvent& ev);
  void OnCreate(const EvCreate& ev);
  void OnDestroy(uint32_t id);
  void OnMap(const EvMap& ev);
  void OnUnmap(uint32_t id);
  void OnConfigure(const EvConfigure& ev);
  void OnPixels(const EvPixels& ev);
  void OnTitle(const EvTitle& ev);
  void OnClass(const EvClass& ev);
  void OnHints(const EvHints& ev);
  void OnClipboard(const EvClipboard& ev);
  void SetMapped(HostWindow& w, bool mapped);
  Status Send(std::vector<uint8_t> bytes);
  Status FlushOut();

  // Host side.
  Status HandleXEvents();
  void OnXEvent(xcb_generic_event_t* ev);
  void OnKey(xcb_key_press_event_t* ev, bool press);
  void OnFrameConfigure(xcb_configure_notify_event_t* ev);
  void DrawTitleBar(const HostWindow& w);
  HostWindow* ByFrame(xcb_window_t frame, uint32_t* id);
  HostWindow* ByContent(xcb_window_t content, uint32_t* id);
  xcb_atom_t Atom(const char* name);
  void SetStringProperty(xcb_window_t w, xcb_atom_t prop, xcb_atom_t type, const std::string& s);
  Insets InsetsFor(bool override_redirect) const;
  void PlaceOnScreen(HostWindow& w, int32_t x, int32_t y);
  void Notice(const std::string& text);

  SessionOptions opts_;
  vchan::VchanPtr vchan_;
  std::unique_ptr<GuestStream> stream_;
  std::deque<uint8_t> out_;  // bytes queued for the guest

  xcb_connection_t* conn_ = nullptr;
  xcb_screen_t* screen_ = nullptr;
  xcb_key_symbols_t* keysyms_ = nullptr;
  xcb_gcontext_t gc_ = 0;        // for pixmap uploads
  xcb_gcontext_t title_gc_ = 0;  // title text on the label colour
  xcb_font_t font_ = 0;
  uint32_t max_request_bytes_ = 0;
  xcb_atom_t wm_protocols_ = 0, wm_delete_window_ = 0, net_wm_name_ = 0, utf8_string_ = 0;

  std::unordered_map<uint32_t, HostWindow> windows_;  // by guest id
  std::unordered_map<xcb_window_t, uint32_t> by_frame_, by_content_;
  uint32_t focused_ = 0;  // guest id of the focused window, 0 = none of ours
  std::unordered_set<uint8_t> trapped_keys_;  // keycodes whose release we swallow
  bool clipboard_pending_ = false;
  bool ever_mapped_ = false;
  bool agent_gone_ = false;
  bool all_closed_ = false;  // the last window closed and end_when_last_window_closed is set
  Status send_error_;  // set when the agent stops reading; ends the session

  std::atomic<uint64_t> messages_{0}, pixel_updates_{0}, windows_created_{0}, mapped_now_{0},
      clipboard_dropped_{0};
};

namespace {

constexpr size_t kReadChunk = 1 << 16;
// Bytes read from the guest per loop turn before X events get their turn.
constexpr size_t kReadBudget = 8 << 20;
// Host→guest messages are small; a guest that lets this much pile up is not reading.
constexpr size_t kMaxOutQueue = 8 << 20;
constexpr uint32_t kTitleBarHeight = 18;
constexpr uint32_t kBorder = 3;
constexpr uint32_t kOverrideRedirectBorder = 2;

}  // namespace

SessionLoop::Insets SessionLoop::InsetsFor(bool override_redirect) const {
  if (override_redirect) {
    return {kOverrideRedirectBorder, kOverrideRedirectBorder, kOverrideRedirectBorder,
            kOverrideRedirectBorder};
  }
  return {kBorder, kTitleBarHeight, kBorder, kBorder};
}

void SessionLoop::Notice(const std::string& text) {
  if (opts_.on_notice) {
    opts_.on_notice(text);
  } else {
    std::fprintf(stderr, "gui-daemon[%s]: %s\n", opts_.domain_name.c_str(), text.c_str());
  }
}

Status SessionLoop::ConnectVchan() {
  vchan::Options vo;
  vo.socket_dir = opts_.vchan_socket_dir;
  vo.own_domain = opts_.own_domain;
  vo.connect_timeout = opts_.connect_timeout;
  auto v = vchan::Vchan::Client(opts_.domid, kVchanPort, vo);
  if (!v.ok()) return v.error().Wrap("gui: connecting to the agent of " + opts_.domain_name);
  vchan_ = std::move(v.value());
  vchan_->SetNonBlocking(true);
  return OkStatus();
}

Status SessionLoop::Connect() {
  Limits limits;
  limits.screen_width = screen_->width_in_pixels;
  limits.screen_height = screen_->height_in_pixels;
  limits.clipboard_max = opts_.clipboard_max;
  limits.utf8_titles = opts_.utf8_titles;
  stream_ = std::make_unique<GuestStream>(limits, [this](const GuestEvent& ev) {
    ++messages_;
    OnGuestEvent(ev);
  });
  return OkStatus();
}

xcb_atom_t SessionLoop::Atom(const char* name) {
  auto cookie = xcb_intern_atom(conn_, 0, static_cast<uint16_t>(std::strlen(name)), name);
  xcb_intern_atom_reply_t* reply = xcb_intern_atom_reply(conn_, cookie, nullptr);
  xcb_atom_t atom = reply ? reply->atom : xcb_atom_t{XCB_ATOM_NONE};
  free(reply);
  return atom;
}

Status SessionLoop::ConnectX() {
  const char* display = opts_.display.empty() ? nullptr : opts_.display.c_str();
  int screen_num = 0;
  conn_ = xcb_connect(display, &screen_num);
  if (xcb_connection_has_error(conn_)) {
    return Error{"gui: cannot open host display " + (display ? opts_.display : "$DISPLAY"), 0};
  }
  auto it = xcb_setup_roots_iterator(xcb_get_setup(conn_));
  for (int i = 0; i < screen_num && it.rem; ++i) xcb_screen_next(&it);
  screen_ = it.data;
  if (!screen_ || screen_->root_depth != 24) {
    return Error{"gui: the host screen must have depth 24", 0};
  }
  // Our pixel format is 32 bits per pixel; make sure the server stores depth 24 that way.
  bool bpp32 = false;
  auto fmt = xcb_setup_pixmap_formats_iterator(xcb_get_setup(conn_));
  for (; fmt.rem; xcb_format_next(&fmt)) {
    if (fmt.data->depth == 24 && fmt.data->bits_per_pixel == 32) bpp32 = true;
  }
  if (!bpp32) return Error{"gui: the host display stores depth 24 without 32 bpp", 0};
  max_request_bytes_ = xcb_get_maximum_request_length(conn_) * 4;
  keysyms_ = xcb_key_symbols_alloc(conn_);
  wm_protocols_ = Atom("WM_PROTOCOLS");
  wm_delete_window_ = Atom("WM_DELETE_WINDOW");
  net_wm_name_ = Atom("_NET_WM_NAME");
  utf8_string_ = Atom("UTF8_STRING");

  gc_ = xcb_generate_id(conn_);
  uint32_t gc_values[] = {0};
  xcb_create_gc(conn_, gc_, screen_->root, XCB_GC_GRAPHICS_EXPOSURES, gc_values);
  // The built-in "fixed" font exists on every X server.
  font_ = xcb_generate_id(conn_);
  xcb_open_font(conn_, font_, 5, "fixed");
  uint32_t rgb = opts_.label_color & 0xffffff;
  uint32_t luma = ((rgb >> 16) * 3 + ((rgb >> 8) & 0xff) * 6 + (rgb & 0xff)) / 10;
  title_gc_ = xcb_generate_id(conn_);
  uint32_t title_values[] = {luma > 140 ? 0x000000u : 0xffffffu, rgb, font_, 0};
  xcb_create_gc(conn_, title_gc_, screen_->root,
                XCB_GC_FOREGROUND | XCB_GC_BACKGROUND | XCB_GC_FONT | XCB_GC_GRAPHICS_EXPOSURES,
                title_values);
  xcb_flush(conn_);
  return OkStatus();
}

Status SessionLoop::Run(int stop_fd) {
  // The channel first: a caller may drop privileges in after_vchan_connected, so that the
  // host display is opened only with the user's own rights.
  ODYSSEY_TRY(ConnectVchan());
  if (opts_.after_vchan_connected) ODYSSEY_TRY(opts_.after_vchan_connected());
  ODYSSEY_TRY(ConnectX());
  ODYSSEY_TRY(Connect());
  Status st = Loop(stop_fd);
  Teardown();
  return st;
}

Status SessionLoop::Loop(int stop_fd) {
  while (true) {
    pollfd fds[3] = {{vchan_->PollFd(), POLLIN, 0},
                     {xcb_get_file_descriptor(conn_), POLLIN, 0},
                     {stop_fd, POLLIN, 0}};
    // With output queued, poll briefly: PollFd() promises readability, not writability.
    int timeout = out_.empty() ? -1 : 20;
    ODYSSEY_TRY(HandleXEvents());  // xcb may hold events already read from the socket
    if (poll(fds, stop_fd >= 0 ? 3 : 2, timeout) < 0 && errno != EINTR) {
      return Error::Errno("poll", "gui session");
    }
    if (stop_fd >= 0 && (fds[2].revents & POLLIN)) return OkStatus();
    if (fds[0].revents) {
      ODYSSEY_TRY(ReadGuest());
      if (agent_gone_) return OkStatus();
    }
    ODYSSEY_TRY(HandleXEvents());
    ODYSSEY_TRY(FlushOut());
    if (!send_error_.ok()) return send_error_;
    if (agent_gone_ || all_closed_) return OkStatus();
  }
}

Status SessionLoop::ReadGuest() {
  uint8_t buf[kReadChunk];
  size_t total = 0;
  while (total < kReadBudget) {
    auto n = vchan_->Read(buf, sizeof(buf));
    if (!n.ok()) {
      // The peer closed (EOF), or closed with our input unread (reset): the agent is gone,
      // which is a clean end of the session.
      if (n.error().code == 0 || n.error().code == ECONNRESET || n.error().code == EPIPE) {
        agent_gone_ = true;
        return OkStatus();
      }
      return n.error().Wrap("gui: reading from the agent of " + opts_.domain_name);
    }
    if (*n == 0) break;
    total += *n;
    Status st = stream_->Feed(std::span<const uint8_t>(buf, *n));
    if (!st.ok()) return st.error().Wrap("domain " + opts_.domain_name);
    xcb_flush(conn_);
  }
  return OkStatus();
}

Status SessionLoop::Send(std::vector<uint8_t> bytes) {
  if (out_.size() + bytes.size() > kMaxOutQueue) {
    // Callers in event handlers cannot return it: the loop ends the session on it.
    send_error_ = Error{"gui: the agent of " + opts_.domain_name + " does not read its input", 0};
    return send_error_;
  }
  out_.insert(out_.end(), bytes.begin(), bytes.end());
  return FlushOut();
}

Status SessionLoop::FlushOut() {
  uint8_t buf[kReadChunk];
  while (!out_.empty() && vchan_) {
    size_t n = std::min(out_.size(), sizeof(buf));
    std::copy_n(out_.begin(), n, buf);
    auto w = vchan_->Write(buf, n);
    if (!w.ok()) {
      if (w.error().code == 0 || w.error().code == EPIPE || w.error().code == ECONNRESET) {
        agent_gone_ = true;
        out_.clear();
        return OkStatus();
      }
      return w.error().Wrap("gui: writing to the agent");
    }
    if (*w == 0) break;
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(*w));
  }
  return OkStatus();
}

void SessionLoop::OnGuestEvent(const GuestEvent& ev) {
  std::visit(
      [this](const auto& e) {
        using T = std::decay_t<decltype(e)>;
        if constexpr (std::is_same_v<T, EvVersion>) {
          std::vector<uint8_t> b(sizeof(uint32_t) + sizeof(XConf));
          uint32_t v = e.negotiated;
          XConf conf{screen_->width_in_pixels, screen_->height_in_pixels, 24,
                     static_cast<uint32_t>(uint64_t{screen_->width_in_pixels} *
                                           screen_->height_in_pixels * 4 / 1024)};
          std::memcpy(b.data(), &v, sizeof(v));
          std::memcpy(b.data() + sizeof(v), &conf, sizeof(conf));
          (void)Send(std::move(b));
        } else if constexpr (std::is_same_v<T, EvCreate>) {
          OnCreate(e);
        } else if constexpr (std::is_same_v<T, EvDestroy>) {
          OnDestroy(e.window);
        } else if constexpr (std::is_same_v<T, EvMap>) {
          OnMap(e);
        } else if constexpr (std::is_same_v<T, EvUnmap>) {
          OnUnmap(e.window);
        } else if constexpr (std::is_same_v<T, EvConfigure>) {
          OnConfigure(e);
        } else if constexpr (std::is_same_v<T, EvPixels>) {
          OnPixels(e);
        } else if constexpr (std::is_same_v<T, EvTitle>) {
          OnTitle(e);
        } else if constexpr (std::is_same_v<T, EvClass>) {
          OnClass(e);
        } else if constexpr (std::is_same_v<T, EvHints>) {
          OnHints(e);
        } else if constexpr (std::is_same_v<T, EvClipboard>) {
          OnClipboard(e);
        }
        // EvDamage (no shared buffers here), EvFlags and EvCursor change nothing on the host.
      },
      ev);
}

void SessionLoop::SetStringProperty(xcb_window_t w, xcb_atom_t prop, xcb_atom_t type,
                                    const std::string& s) {
  xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, w, prop, type, 8,
                      static_cast<uint32_t>(s.size()), s.data());
}

void SessionLoop::PlaceOnScreen(HostWindow& w, int32_t x, int32_t y) {
  // Keep the whole frame on screen when it fits, so the label colour stays visible.
  int64_t fw = int64_t{w.width} + w.insets.left + w.insets.right;
  int64_t fh = int64_t{w.height} + w.insets.top + w.insets.bottom;
  int64_t sw = screen_->width_in_pixels, sh = screen_->height_in_pixels;
  int64_t fx = int64_t{x} - w.insets.left, fy = int64_t{y} - w.insets.top;
  fx = fw >= sw ? 0 : std::clamp<int64_t>(fx, 0, sw - fw);
  fy = fh >= sh ? 0 : std::clamp<int64_t>(fy, 0, sh - fh);
  w.x = x;
  w.y = y;
  uint32_t values[] = {static_cast<uint32_t>(fx), static_cast<uint32_t>(fy),
                       static_cast<uint32_t>(fw), static_cast<uint32_t>(fh)};
  xcb_configure_window(conn_, w.frame,
                       XCB_CONFIG_WINDOW_X | XCB_CONFIG_WINDOW_Y | XCB_CONFIG_WINDOW_WIDTH |
                           XCB_CONFIG_WINDOW_HEIGHT,
                       values);
}

void SessionLoop::OnCreate(const EvCreate& ev) {
  HostWindow w;
  w.width = ev.rect.width;
  w.height = ev.rect.height;
  w.override_redirect = ev.override_redirect;
  w.insets = InsetsFor(ev.override_redirect);
  w.title = "[" + opts_.domain_name + "]";
  uint32_t fw = w.width + w.insets.left + w.insets.right;
  uint32_t fh = w.height + w.insets.top + w.insets.bottom;

  w.frame = xcb_generate_id(conn_);
  uint32_t frame_values[] = {
      opts_.label_color & 0xffffff, ev.override_redirect ? 1u : 0u,
      XCB_EVENT_MASK_EXPOSURE | XCB_EVENT_MASK_STRUCTURE_NOTIFY | XCB_EVENT_MASK_FOCUS_CHANGE |
          XCB_EVENT_MASK_KEY_PRESS | XCB_EVENT_MASK_KEY_RELEASE};
  xcb_create_window(conn_, XCB_COPY_FROM_PARENT, w.frame, screen_->root, 0, 0,
                    static_cast<uint16_t>(fw), static_cast<uint16_t>(fh), 0,
                    XCB_WINDOW_CLASS_INPUT_OUTPUT, screen_->root_visual,
                    XCB_CW_BACK_PIXEL | XCB_CW_OVERRIDE_REDIRECT | XCB_CW_EVENT_MASK,
                    frame_values);

  w.pixmap = xcb_generate_id(conn_);
  xcb_create_pixmap(conn_, 24, w.pixmap, screen_->root, static_cast<uint16_t>(w.width),
                    static_cast<uint16_t>(w.height));
  // New pixmaps hold garbage: start black, as an undrawn guest window would be.
  uint32_t black[] = {0};
  xcb_change_gc(conn_, gc_, XCB_GC_FOREGROUND, black);
  xcb_rectangle_t all{0, 0, static_cast<uint16_t>(w.width), static_cast<uint16_t>(w.height)};
  xcb_poly_fill_rectangle(conn_, w.pixmap, gc_, 1, &all);

  w.content = xcb_generate_id(conn_);
  uint32_t content_values[] = {
      w.pixmap, XCB_EVENT_MASK_BUTTON_PRESS | XCB_EVENT_MASK_BUTTON_RELEASE |
                    XCB_EVENT_MASK_POINTER_MOTION | XCB_EVENT_MASK_ENTER_WINDOW |
                    XCB_EVENT_MASK_LEAVE_WINDOW};
  xcb_create_window(conn_, XCB_COPY_FROM_PARENT, w.content, w.frame,
                    static_cast<int16_t>(w.insets.left), static_cast<int16_t>(w.insets.top),
                    static_cast<uint16_t>(w.width), static_cast<uint16_t>(w.height), 0,
                    XCB_WINDOW_CLASS_INPUT_OUTPUT, screen_->root_visual,
                    XCB_CW_BACK_PIXMAP | XCB_CW_EVENT_MASK, content_values);
  xcb_map_window(conn_, w.content);

  xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, w.frame, wm_protocols_, XCB_ATOM_ATOM, 32, 1,
                      &wm_delete_window_);
  SetStringProperty(w.frame, XCB_ATOM_WM_NAME, XCB_ATOM_STRING, w.title);
  SetStringProperty(w.frame, net_wm_name_, utf8_string_, w.title);
  SetStringProperty(w.frame, Atom("_QUBES_VMNAME"), XCB_ATOM_STRING, opts_.domain_name);
  uint32_t color = opts_.label_color & 0xffffff;
  xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, w.frame, Atom("_QUBES_LABEL_COLOR"),
                      XCB_ATOM_CARDINAL, 32, 1, &color);
  std::string cls = opts_.domain_name + ":unknown";
  std::string wm_class = cls + '\0' + cls + '\0';
  SetStringProperty(w.frame, XCB_ATOM_WM_CLASS, XCB_ATOM_STRING, wm_class);

  by_frame_[w.frame] = ev.window;
  by_content_[w.content] = ev.window;
  auto& stored = windows_[ev.window] = w;
  PlaceOnScreen(stored, ev.rect.x, ev.rect.y);
  ++windows_created_;
}

void SessionLoop::SetMapped(HostWindow& w, bool mapped) {
  if (w.mapped == mapped) return;
  w.mapped = mapped;
  if (mapped) {
    ++mapped_now_;
    ever_mapped_ = true;
    return;
  }
  if (--mapped_now_ == 0) LastWindowClosed();
}

void SessionLoop::LastWindowClosed() {
  if (opts_.end_when_last_window_closed) all_closed_ = true;
  if (opts_.on_last_window_closed) opts_.on_last_window_closed();
}

void SessionLoop::OnDestroy(uint32_t id) {
  auto it = windows_.find(id);
  if (it == windows_.end()) return;
  HostWindow& w = it->second;
  xcb_destroy_window(conn_, w.frame);
  xcb_free_pixmap(conn_, w.pixmap);
  by_frame_.erase(w.frame);
  by_content_.erase(w.content);
  if (focused_ == id) focused_ = 0;
  bool was_mapped = w.mapped;
  w.mapped = false;
  windows_.erase(it);
  // Echo as an acknowledgement: the agent may now reuse the id.
  (void)Send(EncodeMessage(MSG_DESTROY, id));
  if (was_mapped && --mapped_now_ == 0) LastWindowClosed();
}

void SessionLoop::OnMap(const EvMap& ev) {
  HostWindow& w = windows_.at(ev.window);
  if (w.override_redirect != ev.override_redirect) {
    w.override_redirect = ev.override_redirect;
    uint32_t v[] = {ev.override_redirect ? 1u : 0u};
    xcb_change_window_attributes(conn_, w.frame, XCB_CW_OVERRIDE_REDIRECT, v);
  }
  if (ev.transient_for) {
    auto parent = windows_.find(ev.transient_for);
    if (parent != windows_.end()) {
      xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, w.frame, XCB_ATOM_WM_TRANSIENT_FOR,
                          XCB_ATOM_WINDOW, 32, 1, &parent->second.frame);
    }
  }
  PlaceOnScreen(w, w.x, w.y);
  xcb_map_window(conn_, w.frame);
  SetMapped(w, true);
}

void SessionLoop::OnUnmap(uint32_t id) {
  HostWindow& w = windows_.at(id);
  xcb_unmap_window(conn_, w.frame);
  if (focused_ == id) focused_ = 0;
  SetMapped(w, false);
}

void SessionLoop::OnConfigure(const EvConfigure& ev) {
  HostWindow& w = windows_.at(ev.window);
  if (ev.rect.width != w.width || ev.rect.height != w.height) {
    // A new pixmap of the new size, keeping what overlaps of the old content.
    xcb_pixmap_t pm = xcb_generate_id(conn_);
    xcb_create_pixmap(conn_, 24, pm, screen_->root, static_cast<uint16_t>(ev.rect.width),
                      static_cast<uint16_t>(ev.rect.height));
    uint32_t black[] = {0};
    xcb_change_gc(conn_, gc_, XCB_GC_FOREGROUND, black);
    xcb_rectangle_t all{0, 0, static_cast<uint16_t>(ev.rect.width),
                        static_cast<uint16_t>(ev.rect.height)};
    xcb_poly_fill_rectangle(conn_, pm, gc_, 1, &all);
    xcb_copy_area(conn_, w.pixmap, pm, gc_, 0, 0, 0, 0,
                  static_cast<uint16_t>(std::min(w.width, ev.rect.width)),
                  static_cast<uint16_t>(std::min(w.height, ev.rect.height)));
    xcb_free_pixmap(conn_, w.pixmap);
    w.pixmap = pm;
    w.width = ev.rect.width;
    w.height = ev.rect.height;
    uint32_t bg[] = {pm};
    xcb_change_window_attributes(conn_, w.content, XCB_CW_BACK_PIXMAP, bg);
    uint32_t size[] = {w.width, w.height};
    xcb_configure_window(conn_, w.content, XCB_CONFIG_WINDOW_WIDTH | XCB_CONFIG_WINDOW_HEIGHT,
                         size);
    xcb_clear_area(conn_, 0, w.content, 0, 0, 0, 0);
  }
  if (w.override_redirect != ev.override_redirect) {
    w.override_redirect = ev.override_redirect;
    uint32_t v[] = {ev.override_redirect ? 1u : 0u};
    xcb_change_window_attributes(conn_, w.frame, XCB_CW_OVERRIDE_REDIRECT, v);
  }
  PlaceOnScreen(w, ev.rect.x, ev.rect.y);
}

void SessionLoop::OnPixels(const EvPixels& ev) {
  HostWindow& w = windows_.at(ev.window);
  const size_t row_bytes = size_t{ev.rect.width} * kBytesPerPixel;
  // PutImage requests must fit the server's maximum request length: send strips of rows.
  size_t rows_per_request = std::max<size_t>(1, (max_request_bytes_ - 64) / row_bytes);
  for (uint32_t row = 0; row < ev.rect.height;) {
    uint32_t rows = static_cast<uint32_t>(std::min<size_t>(rows_per_request, ev.rect.height - row));
    xcb_put_image(conn_, XCB_IMAGE_FORMAT_Z_PIXMAP, w.pixmap, gc_,
                  static_cast<uint16_t>(ev.rect.width), static_cast<uint16_t>(rows),
                  static_cast<int16_t>(ev.rect.x), static_cast<int16_t>(ev.rect.y + row), 0, 24,
                  static_cast<uint32_t>(rows * row_bytes), ev.pixels.data() + row * row_bytes);
    row += rows;
  }
  // The content window's background is the pixmap: clearing repaints from it.
  xcb_clear_area(conn_, 0, w.content, static_cast<int16_t>(ev.rect.x),
                 static_cast<int16_t>(ev.rect.y), static_cast<uint16_t>(ev.rect.width),
                 static_cast<uint16_t>(ev.rect.height));
  ++pixel_updates_;
}

void SessionLoop::DrawTitleBar(const HostWindow& w) {
  if (w.insets.top < kTitleBarHeight) return;
  // ImageText8 takes at most 255 bytes; titles are at most 127 plus the prefix.
  std::string text = w.title.substr(0, 255);
  xcb_image_text_8(conn_, static_cast<uint8_t>(text.size()), w.frame, title_gc_, 4, 13,
                   text.c_str());
}

void SessionLoop::OnTitle(const EvTitle& ev) {
  HostWindow& w = windows_.at(ev.window);
  w.title = "[" + opts_.domain_name + "] " + ev.title;
  // WM_NAME is Latin-1: only the ASCII form goes there; UTF-8 titles go to _NET_WM_NAME.
  std::string ascii = w.title;
  for (char& c : ascii) {
    if (static_cast<unsigned char>(c) >= 0x80) c = '_';
  }
  SetStringProperty(w.frame, XCB_ATOM_WM_NAME, XCB_ATOM_STRING, ascii);
  SetStringProperty(w.frame, net_wm_name_, utf8_string_, w.title);
  xcb_clear_area(conn_, 0, w.frame, 0, 0, 0, static_cast<uint16_t>(w.insets.top));
  HostWindow shown = w;
  shown.title = ascii;
  DrawTitleBar(shown);
}

void SessionLoop::OnClass(const EvClass& ev) {
  HostWindow& w = windows_.at(ev.window);
  std::string name = opts_.domain_name + ":" + ev.res_name;
  std::string cls = opts_.domain_name + ":" + ev.res_class;
  SetStringProperty(w.frame, XCB_ATOM_WM_CLASS, XCB_ATOM_STRING, name + '\0' + cls + '\0');
}

void SessionLoop::OnHints(const EvHints& ev) {
  HostWindow& w = windows_.at(ev.window);
  const auto& h = ev.hints;
  uint32_t dw = w.insets.left + w.insets.right, dh = w.insets.top + w.insets.bottom;
  xcb_size_hints_t hints{};
  if (h.flags & 16) xcb_icccm_size_hints_set_min_size(&hints, static_cast<int32_t>(h.min_width + dw), static_cast<int32_t>(h.min_height + dh));
  if (h.flags & 32) xcb_icccm_size_hints_set_max_size(&hints, static_cast<int32_t>(h.max_width + dw), static_cast<int32_t>(h.max_height + dh));
  if (h.flags & 64) xcb_icccm_size_hints_set_resize_inc(&hints, static_cast<int32_t>(h.width_inc), static_cast<int32_t>(h.height_inc));
  if (h.flags & 256) xcb_icccm_size_hints_set_base_size(&hints, static_cast<int32_t>(h.base_width + dw), static_cast<int32_t>(h.base_height + dh));
  xcb_icccm_set_wm_normal_hints(conn_, w.frame, &hints);
}

void SessionLoop::OnClipboard(const EvClipboard& ev) {
  if (!clipboard_pending_) {
    ++clipboard_dropped_;
    Notice("refused clipboard data the user did not ask for (" + std::to_string(ev.data.size()) +
           " bytes)");
    return;
  }
  clipboard_pending_ = false;
  {
    std::lock_guard<std::mutex> lock(opts_.clipboard->mu);
    opts_.clipboard->data = ev.data;
    opts_.clipboard->source_domain = opts_.domain_name;
  }
  Notice("copied " + std::to_string(ev.data.size()) + " bytes from the clipboard of " +
         opts_.domain_name + "; Ctrl+Shift+V pastes them into the focused domain window");
}

SessionLoop::HostWindow* SessionLoop::ByFrame(xcb_window_t frame, uint32_t* id) {
  auto it = by_frame_.find(frame);
  if (it == by_frame_.end()) return nullptr;
  *id = it->second;
  return &windows_.at(it->second);
}

SessionLoop::HostWindow* SessionLoop::ByContent(xcb_window_t content, uint32_t* id) {
  auto it = by_content_.find(content);
  if (it == by_content_.end()) return nullptr;
  *id = it->second;
  return &windows_.at(it->second);
}

Status SessionLoop::HandleXEvents() {
  while (xcb_generic_event_t* ev = xcb_poll_for_event(conn_)) {
    OnXEvent(ev);
    free(ev);
  }
  if (xcb_connection_has_error(conn_)) return Error{"gui: lost the host display", 0};
  xcb_flush(conn_);
  return OkStatus();
}

void SessionLoop::OnKey(xcb_key_press_event_t* ev, bool press) {
  uint32_t id = 0;
  HostWindow* w = ByFrame(ev->event, &id);
  if (!w) w = ByContent(ev->event, &id);
  // Only the focused window of this domain gets keys: never one the pointer is merely over.
  if (!w || id != focused_) return;
  constexpr uint16_t kChord = XCB_MOD_MASK_CONTROL | XCB_MOD_MASK_SHIFT;
  xcb_keysym_t sym = xcb_key_symbols_get_keysym(keysyms_, ev->detail, 0);
  bool chord = (ev->state & kChord) == kChord && (sym == 'c' || sym == 'v');
  if (press && chord) {
    trapped_keys_.insert(ev->detail);
    if (sym == 'c') {
      clipboard_pending_ = true;
      (void)Send(EncodeMessage(MSG_CLIPBOARD_REQ, id));
    } else {
      std::string data, source;
      {
        std::lock_guard<std::mutex> lock(opts_.clipboard->mu);
        data = opts_.clipboard->data.substr(0, opts_.clipboard_max);
        source = opts_.clipboard->source_domain;
      }
      (void)Send(EncodeMessage(MSG_CLIPBOARD_DATA, id, data.data(), data.size()));
      Notice("pasted " + std::to_string(data.size()) + " bytes" +
             (source.empty() ? "" : " from " + source) + " into the clipboard of " +
             opts_.domain_name);
    }
    return;
  }
  if (!press && trapped_keys_.erase(ev->detail)) return;
  int32_t x = ev->event_x - (ev->event == w->frame ? static_cast<int32_t>(w->insets.left) : 0);
  int32_t y = ev->event_y - (ev->event == w->frame ? static_cast<int32_t>(w->insets.top) : 0);
  MsgKeypress k{press ? 2u : 3u, static_cast<uint32_t>(x), static_cast<uint32_t>(y), ev->state,
                ev->detail};
  (void)Send(Encode(MSG_KEYPRESS, id, k));
}

void SessionLoop::OnFrameConfigure(xcb_configure_notify_event_t* ev) {
  uint32_t id = 0;
  HostWindow* w = ByFrame(ev->window, &id);
  if (!w) return;
  int64_t cw = int64_t{ev->width} - w->insets.left - w->insets.right;
  int64_t ch = int64_t{ev->height} - w->insets.top - w->insets.bottom;
  if (cw <= 0 || ch <= 0 || (cw == w->width && ch == w->height)) return;
  // The user (or the window manager) resized the frame: ask the guest; its CONFIGURE
  // answer resizes the content.
  MsgConfigure c{w->x, w->y, static_cast<uint32_t>(std::min<int64_t>(cw, kMaxWindowWidth)),
                 static_cast<uint32_t>(std::min<int64_t>(ch, kMaxWindowHeight)),
                 w->override_redirect ? 1u : 0u};
  (void)Send(Encode(MSG_CONFIGURE, id, c));
}

void SessionLoop::OnXEvent(xcb_generic_event_t* ev) {
  uint32_t id = 0;
  switch (ev->response_type & 0x7f) {
    case XCB_KEY_PRESS:
      OnKey(reinterpret_cast<xcb_key_press_event_t*>(ev), true);
      break;
    case XCB_KEY_RELEASE:
      OnKey(reinterpret_cast<xcb_key_press_event_t*>(ev), false);
      break;
    case XCB_BUTTON_PRESS:
    case XCB_BUTTON_RELEASE: {
      auto* b = reinterpret_cast<xcb_button_press_event_t*>(ev);
      if (!ByContent(b->event, &id)) break;
      bool press = (ev->response_type & 0x7f) == XCB_BUTTON_PRESS;
      MsgButton m{press ? 4u : 5u, static_cast<uint32_t>(b->event_x),
                  static_cast<uint32_t>(b->event_y), b->state, b->detail};
      (void)Send(Encode(MSG_BUTTON, id, m));
      break;
    }
    case XCB_MOTION_NOTIFY: {
      auto* m = reinterpret_cast<xcb_motion_notify_event_t*>(ev);
      if (!ByContent(m->event, &id)) break;
      MsgMotion msg{static_cast<uint32_t>(m->event_x), static_cast<uint32_t>(m->event_y),
                    m->state, 0};
      (void)Send(Encode(MSG_MOTION, id, msg));
      break;
    }
    case XCB_ENTER_NOTIFY:
    case XCB_LEAVE_NOTIFY: {
      auto* c = reinterpret_cast<xcb_enter_notify_event_t*>(ev);
      if (!ByContent(c->event, &id)) break;
      MsgCrossing msg{static_cast<uint32_t>(ev->response_type & 0x7f),
                      static_cast<uint32_t>(c->event_x), static_cast<uint32_t>(c->event_y),
                      c->state, c->mode, c->detail,
                      (c->same_screen_focus & 1) ? 1u : 0u};
      (void)Send(Encode(MSG_CROSSING, id, msg));
      break;
    }
    case XCB_FOCUS_IN:
    case XCB_FOCUS_OUT: {
      auto* f = reinterpret_cast<xcb_focus_in_event_t*>(ev);
      if (!ByFrame(f->event, &id) || f->detail == XCB_NOTIFY_DETAIL_POINTER) break;
      bool in = (ev->response_type & 0x7f) == XCB_FOCUS_IN;
      if (in) {
        focused_ = id;
      } else if (focused_ == id) {
        focused_ = 0;
      }
      MsgFocus msg{in ? 9u : 10u, f->mode, f->detail};
      (void)Send(Encode(MSG_FOCUS, id, msg));
      break;
    }
    case XCB_EXPOSE: {
      auto* e = reinterpret_cast<xcb_expose_event_t*>(ev);
      HostWindow* w = ByFrame(e->window, &id);
      if (w && e->count == 0) DrawTitleBar(*w);
      break;
    }
    case XCB_CONFIGURE_NOTIFY:
      OnFrameConfigure(reinterpret_cast<xcb_configure_notify_event_t*>(ev));
      break;
    case XCB_CLIENT_MESSAGE: {
      auto* cm = reinterpret_cast<xcb_client_message_event_t*>(ev);
      if (cm->type == wm_protocols_ && cm->format == 32 &&
          cm->data.data32[0] == wm_delete_window_ && ByFrame(cm->window, &id)) {
        (void)Send(EncodeMessage(MSG_CLOSE, id));
      }
      break;
    }
    case XCB_MAPPING_NOTIFY:
      xcb_refresh_keyboard_mapping(keysyms_, reinterpret_cast<xcb_mapping_notify_event_t*>(ev));
      break;
    default:
      break;
  }
}

void SessionLoop::Teardown() {
  if (conn_) {
    bool had_mapped = mapped_now_ > 0;
    for (auto& [id, w] : windows_) {
      xcb_destroy_window(conn_, w.frame);
      xcb_free_pixmap(conn_, w.pixmap);
    }
    windows_.clear();
    by_frame_.clear();
    by_content_.clear();
    mapped_now_ = 0;
    if (had_mapped && opts_.on_last_window_closed) opts_.on_last_window_closed();
    if (keysyms_) xcb_key_symbols_free(keysyms_);
    keysyms_ = nullptr;
    xcb_flush(conn_);
    xcb_disconnect(conn_);
    conn_ = nullptr;
  }
  if (vchan_) {
    vchan_->Close();
    vchan_.reset();
  }
}

Result<std::unique_ptr<GuiSession>> GuiSession::Start(SessionOptions opts) {
  std::unique_ptr<GuiSession> s(new GuiSession());
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return Error::Errno("eventfd", "gui session");
  s->stop_fd_.reset(fd);
  s->loop_ = std::make_shared<SessionLoop>(std::move(opts));
  GuiSession* self = s.get();
  s->thread_ = std::thread([self] {
    self->result_ = self->loop_->Run(self->stop_fd_.get());
    self->finished_ = true;
  });
  return s;
}

Status GuiSession::Run(SessionOptions opts) {
  SessionLoop loop(std::move(opts));
  return loop.Run(-1);
}

void GuiSession::Stop() {
  uint64_t one = 1;
  if (stop_fd_.valid()) (void)!::write(stop_fd_.get(), &one, sizeof(one));
}

Status GuiSession::Wait() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

bool GuiSession::finished() const { return finished_.load(); }

SessionStats GuiSession::stats() const { return loop_ ? loop_->stats() : SessionStats{}; }

GuiSession::~GuiSession() {
  Stop();
  (void)Wait();
}

}  // namespace odyssey::gui
