#include "gui/agent/agent.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <xcb/composite.h>
#include <xcb/damage.h>
#include <xcb/xcb.h>
#include <xcb/xtest.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "gui/framer.h"
#include "gui/protocol.h"
#include "hal/vchan/vchan.h"

namespace odyssey::gui {
namespace {

template <typename T>
T Load(std::span<const uint8_t> body) {
  T out;
  std::memcpy(&out, body.data(), sizeof(T));
  return out;
}

struct Dirty {
  bool any = false;
  int32_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // half-open bounding box
  void Add(int32_t x, int32_t y, int32_t w, int32_t h) {
    if (w <= 0 || h <= 0) return;
    if (!any) {
      x0 = x, y0 = y, x1 = x + w, y1 = y + h;
      any = true;
      return;
    }
    x0 = std::min(x0, x), y0 = std::min(y0, y);
    x1 = std::max(x1, x + w), y1 = std::max(y1, y + h);
  }
};

struct GuestWindow {
  int32_t x = 0, y = 0;
  uint32_t width = 1, height = 1;
  bool override_redirect = false;
  bool mapped = false;
  xcb_damage_damage_t damage = 0;
  Dirty dirty;
};

class Agent {
 public:
  explicit Agent(const AgentOptions& opts) : opts_(opts) {}
  ~Agent() {
    if (conn_) xcb_disconnect(conn_);
    if (command_fd_ >= 0) ::close(command_fd_);
  }
  Status Run();

 private:
  Status ConnectX();
  Status Handshake();
  Status Loop();
  // --until-closed: true once the command exited and no window is left (see AgentOptions).
  bool CommandDone();
  int PollTimeoutMs() const;
  Status SendMsg(const std::vector<uint8_t>& bytes) { return vchan_->Send(bytes.data(), bytes.size()); }

  // Guest X side.
  void Scan();
  Status AddWindow(xcb_window_t w, int32_t x, int32_t y, uint32_t width, uint32_t height,
                   bool override_redirect);
  Status RemoveWindow(xcb_window_t w);
  Status OnXEvent(xcb_generic_event_t* ev);
  Status SendTitle(xcb_window_t w);
  Status SendClass(xcb_window_t w);
  Status FlushDamage();
  Status SendPixels(xcb_window_t id, GuestWindow& w);
  std::string GetStringProperty(xcb_window_t w, xcb_atom_t prop, size_t max);
  xcb_atom_t Atom(const char* name);

  // Host side.
  Status OnHostHeader(const MsgHeader& hdr) const;
  Status OnHostMessage(const MsgHeader& hdr, std::span<const uint8_t> body);
  void FakeMotion(const GuestWindow& w, uint32_t x, uint32_t y);
  void CloseWindow(xcb_window_t w);
  void OnSelectionRequest(xcb_selection_request_event_t* ev);
  Status OnSelectionNotify(xcb_selection_notify_event_t* ev);

  AgentOptions opts_;
  vchan::VchanPtr vchan_;
  xcb_connection_t* conn_ = nullptr;
  xcb_screen_t* screen_ = nullptr;
  xcb_window_t helper_ = 0;  // our own unmapped window for selections; never reported
  uint8_t damage_event_base_ = 0;
  std::map<xcb_window_t, GuestWindow> windows_;
  xcb_atom_t wm_name_ = 0, net_wm_name_ = 0, utf8_ = 0, wm_protocols_ = 0, wm_delete_ = 0,
             clipboard_ = 0, targets_ = 0, odyssey_sel_ = 0;
  std::string clipboard_data_;  // what the host pasted; served to guest apps
  bool clipboard_req_pending_ = false;
  int command_fd_ = -1;  // pidfd of opts_.command_pid; readable once it exited
  bool command_exited_ = false;
  bool ever_mapped_ = false;
  std::chrono::steady_clock::time_point command_exit_time_;
};

xcb_atom_t Agent::Atom(const char* name) {
  auto cookie = xcb_intern_atom(conn_, 0, static_cast<uint16_t>(std::strlen(name)), name);
  xcb_intern_atom_reply_t* r = xcb_intern_atom_reply(conn_, cookie, nullptr);
  xcb_atom_t a = r ? r->atom : xcb_atom_t{XCB_ATOM_NONE};
  free(r);
  return a;
}

Status Agent::ConnectX() {
  const char* display = opts_.display.empty() ? nullptr : opts_.display.c_str();
  int screen_num = 0;
  conn_ = xcb_connect(display, &screen_num);
  if (xcb_connection_has_error(conn_)) return Error{"gui-agent: cannot open the domain's display", 0};
  auto it = xcb_setup_roots_iterator(xcb_get_setup(conn_));
  for (int i = 0; i < screen_num && it.rem; ++i) xcb_screen_next(&it);
  screen_ = it.data;
  if (!screen_ || screen_->root_depth != 24) return Error{"gui-agent: the display must have depth 24", 0};

  const xcb_query_extension_reply_t* damage = xcb_get_extension_data(conn_, &xcb_damage_id);
  const xcb_query_extension_reply_t* composite = xcb_get_extension_data(conn_, &xcb_composite_id);
  const xcb_query_extension_reply_t* xtest = xcb_get_extension_data(conn_, &xcb_test_id);
  if (!damage || !damage->present || !composite || !composite->present || !xtest ||
      !xtest->present) {
    return Error{"gui-agent: the display lacks Composite, DAMAGE or XTEST", 0};
  }
  damage_event_base_ = damage->first_event;
  free(xcb_damage_query_version_reply(conn_, xcb_damage_query_version(conn_, 1, 1), nullptr));
  free(xcb_composite_query_version_reply(conn_, xcb_composite_query_version(conn_, 0, 4), nullptr));
  free(xcb_test_get_version_reply(conn_, xcb_test_get_version(conn_, 2, 2), nullptr));

  wm_name_ = XCB_ATOM_WM_NAME;
  net_wm_name_ = Atom("_NET_WM_NAME");
  utf8_ = Atom("UTF8_STRING");
  wm_protocols_ = Atom("WM_PROTOCOLS");
  wm_delete_ = Atom("WM_DELETE_WINDOW");
  clipboard_ = Atom("CLIPBOARD");
  targets_ = Atom("TARGETS");
  odyssey_sel_ = Atom("_ODYSSEY_CLIPBOARD");

  helper_ = xcb_generate_id(conn_);
  uint32_t values[] = {1, XCB_EVENT_MASK_PROPERTY_CHANGE};
  xcb_create_window(conn_, XCB_COPY_FROM_PARENT, helper_, screen_->root, -10, -10, 1, 1, 0,
                    XCB_WINDOW_CLASS_INPUT_OUTPUT, screen_->root_visual,
                    XCB_CW_OVERRIDE_REDIRECT | XCB_CW_EVENT_MASK, values);
  // Window contents stay readable when windows overlap; the server still draws the screen.
  xcb_composite_redirect_subwindows(conn_, screen_->root, XCB_COMPOSITE_REDIRECT_AUTOMATIC);
  uint32_t root_mask[] = {XCB_EVENT_MASK_SUBSTRUCTURE_NOTIFY};
  xcb_change_window_attributes(conn_, screen_->root, XCB_CW_EVENT_MASK, root_mask);
  xcb_flush(conn_);
  return OkStatus();
}

Status Agent::Handshake() {
  vchan::Options vo;
  vo.socket_dir = opts_.vchan_socket_dir;
  vo.own_domain = opts_.own_domain;
  auto v = vchan::Vchan::Server(opts_.host_domain, kVchanPort, vo);
  if (!v.ok()) return v.error().Wrap("gui-agent: listening on vchan");
  vchan_ = std::move(v.value());
  uint32_t version = kVersion;
  ODYSSEY_TRY(vchan_->Send(&version, sizeof(version)));
  uint32_t host_version = 0;
  XConf conf{};
  ODYSSEY_TRY(vchan_->Recv(&host_version, sizeof(host_version)));
  if (VersionMajor(host_version) != kVersionMajor) {
    return Error{"gui-agent: the host speaks another protocol major version", 0};
  }
  ODYSSEY_TRY(vchan_->Recv(&conf, sizeof(conf)));
  return OkStatus();
}

std::string Agent::GetStringProperty(xcb_window_t w, xcb_atom_t prop, size_t max) {
  auto cookie = xcb_get_property(conn_, 0, w, prop, XCB_GET_PROPERTY_TYPE_ANY, 0,
                                 static_cast<uint32_t>((max + 3) / 4));
  xcb_get_property_reply_t* r = xcb_get_property_reply(conn_, cookie, nullptr);
  std::string out;
  if (r && r->format == 8) {
    out.assign(static_cast<const char*>(xcb_get_property_value(r)),
               static_cast<size_t>(xcb_get_property_value_length(r)));
  }
  free(r);
  if (out.size() > max) out.resize(max);
  return out;
}

Status Agent::SendTitle(xcb_window_t w) {
  std::string title = GetStringProperty(w, net_wm_name_, sizeof(MsgWmName::data) - 1);
  if (title.empty()) title = GetStringProperty(w, wm_name_, sizeof(MsgWmName::data) - 1);
  MsgWmName msg{};
  std::memcpy(msg.data, title.data(), std::min(title.size(), sizeof(msg.data) - 1));
  return SendMsg(Encode(MSG_WMNAME, w, msg));
}

Status Agent::SendClass(xcb_window_t w) {
  std::string v = GetStringProperty(w, XCB_ATOM_WM_CLASS, 128);
  std::string name = v.substr(0, v.find('\0'));
  std::string cls = v.size() > name.size() + 1 ? v.substr(name.size() + 1) : "";
  cls = cls.substr(0, cls.find('\0'));
  MsgWmClass msg{};
  std::memcpy(msg.res_class, cls.data(), std::min(cls.size(), sizeof(msg.res_class) - 1));
  std::memcpy(msg.res_name, name.data(), std::min(name.size(), sizeof(msg.res_name) - 1));
  return SendMsg(Encode(MSG_WMCLASS, w, msg));
}

Status Agent::AddWindow(xcb_window_t id, int32_t x, int32_t y, uint32_t width, uint32_t height,
                        bool override_redirect) {
  if (id == helper_ || windows_.count(id)) return OkStatus();
  GuestWindow w;
  w.x = x;
  w.y = y;
  w.width = std::clamp<uint32_t>(width, 1, kMaxWindowWidth);
  w.height = std::clamp<uint32_t>(height, 1, kMaxWindowHeight);
  w.override_redirect = override_redirect;
  uint32_t mask[] = {XCB_EVENT_MASK_PROPERTY_CHANGE};
  xcb_change_window_attributes(conn_, id, XCB_CW_EVENT_MASK, mask);
  w.damage = xcb_generate_id(conn_);
  xcb_damage_create(conn_, w.damage, id, XCB_DAMAGE_REPORT_LEVEL_RAW_RECTANGLES);
  windows_[id] = w;
  ODYSSEY_TRY(SendMsg(Encode(MSG_CREATE, id,
                             MsgCreate{x, y, w.width, w.height, 0, override_redirect ? 1u : 0u})));
  ODYSSEY_TRY(SendTitle(id));
  return SendClass(id);
}

Status Agent::RemoveWindow(xcb_window_t id) {
  if (!windows_.erase(id)) return OkStatus();
  return SendMsg(EncodeMessage(MSG_DESTROY, id));
}

void Agent::Scan() {
  xcb_query_tree_reply_t* tree =
      xcb_query_tree_reply(conn_, xcb_query_tree(conn_, screen_->root), nullptr);
  if (!tree) return;
  xcb_window_t* children = xcb_query_tree_children(tree);
  for (int i = 0; i < xcb_query_tree_children_length(tree); ++i) {
    xcb_window_t c = children[i];
    auto* attr = xcb_get_window_attributes_reply(conn_, xcb_get_window_attributes(conn_, c), nullptr);
    auto* geo = xcb_get_geometry_reply(conn_, xcb_get_geometry(conn_, c), nullptr);
    if (attr && geo && attr->_class == XCB_WINDOW_CLASS_INPUT_OUTPUT) {
      (void)AddWindow(c, geo->x, geo->y, geo->width, geo->height, attr->override_redirect);
      if (attr->map_state == XCB_MAP_STATE_VIEWABLE && windows_.count(c)) {
        auto& w = windows_[c];
        w.mapped = true;
        ever_mapped_ = true;
        w.dirty.Add(0, 0, static_cast<int32_t>(w.width), static_cast<int32_t>(w.height));
        (void)SendMsg(Encode(MSG_MAP, c, MsgMapInfo{0, w.override_redirect ? 1u : 0u}));
      }
    }
    free(attr);
    free(geo);
  }
  free(tree);
}

Status Agent::SendPixels(xcb_window_t id, GuestWindow& w) {
  Dirty d = w.dirty;
  w.dirty = Dirty{};
  int32_t x0 = std::max(d.x0, 0), y0 = std::max(d.y0, 0);
  int32_t x1 = std::min<int32_t>(d.x1, static_cast<int32_t>(w.width));
  int32_t y1 = std::min<int32_t>(d.y1, static_cast<int32_t>(w.height));
  if (!w.mapped || x0 >= x1 || y0 >= y1) return OkStatus();
  uint32_t width = static_cast<uint32_t>(x1 - x0);
  size_t row_bytes = size_t{width} * kBytesPerPixel;
  int32_t rows_per_msg = static_cast<int32_t>(std::max<size_t>(1, kMaxPixelBytes / row_bytes));
  for (int32_t y = y0; y < y1; y += rows_per_msg) {
    int32_t rows = std::min(rows_per_msg, y1 - y);
    auto cookie = xcb_get_image(conn_, XCB_IMAGE_FORMAT_Z_PIXMAP, id, static_cast<int16_t>(x0),
                                static_cast<int16_t>(y), static_cast<uint16_t>(width),
                                static_cast<uint16_t>(rows), ~0u);
    xcb_generic_error_t* err = nullptr;
    xcb_get_image_reply_t* img = xcb_get_image_reply(conn_, cookie, &err);
    free(err);
    if (!img) return OkStatus();  // unmapped or gone meanwhile: its events follow
    size_t want = row_bytes * static_cast<size_t>(rows);
    if (static_cast<size_t>(xcb_get_image_data_length(img)) >= want) {
      MsgPixels r{x0, y, width, static_cast<uint32_t>(rows)};
      std::vector<uint8_t> body(sizeof(r) + want);
      std::memcpy(body.data(), &r, sizeof(r));
      std::memcpy(body.data() + sizeof(r), xcb_get_image_data(img), want);
      Status st = SendMsg(EncodeMessage(MSG_PIXELS, id, body.data(), body.size()));
      if (!st.ok()) {
        free(img);
        return st;
      }
    }
    free(img);
  }
  return OkStatus();
}

Status Agent::FlushDamage() {
  for (auto& [id, w] : windows_) {
    if (w.dirty.any) ODYSSEY_TRY(SendPixels(id, w));
  }
  return OkStatus();
}

Status Agent::OnXEvent(xcb_generic_event_t* ev) {
  uint8_t type = ev->response_type & 0x7f;
  if (type == damage_event_base_ + XCB_DAMAGE_NOTIFY) {
    auto* d = reinterpret_cast<xcb_damage_notify_event_t*>(ev);
    auto it = windows_.find(d->drawable);
    if (it != windows_.end()) it->second.dirty.Add(d->area.x, d->area.y, d->area.width, d->area.height);
    return OkStatus();
  }
  switch (type) {
    case XCB_CREATE_NOTIFY: {
      auto* c = reinterpret_cast<xcb_create_notify_event_t*>(ev);
      if (c->parent != screen_->root) break;
      return AddWindow(c->window, c->x, c->y, c->width, c->height, c->override_redirect);
    }
    case XCB_DESTROY_NOTIFY:
      return RemoveWindow(reinterpret_cast<xcb_destroy_notify_event_t*>(ev)->window);
    case XCB_REPARENT_NOTIFY: {
      auto* r = reinterpret_cast<xcb_reparent_notify_event_t*>(ev);
      if (r->parent != screen_->root) return RemoveWindow(r->window);
      break;
    }
    case XCB_MAP_NOTIFY: {
      auto* m = reinterpret_cast<xcb_map_notify_event_t*>(ev);
      auto it = windows_.find(m->window);
      if (it == windows_.end()) break;
      GuestWindow& w = it->second;
      w.mapped = true;
      ever_mapped_ = true;
      w.override_redirect = m->override_redirect;
      w.dirty.Add(0, 0, static_cast<int32_t>(w.width), static_cast<int32_t>(w.height));
      return SendMsg(Encode(MSG_MAP, m->window, MsgMapInfo{0, w.override_redirect ? 1u : 0u}));
    }
    case XCB_UNMAP_NOTIFY: {
      auto* u = reinterpret_cast<xcb_unmap_notify_event_t*>(ev);
      auto it = windows_.find(u->window);
      if (it == windows_.end() || u->event != screen_->root) break;
      it->second.mapped = false;
      return SendMsg(EncodeMessage(MSG_UNMAP, u->window));
    }
    case XCB_CONFIGURE_NOTIFY: {
      auto* c = reinterpret_cast<xcb_configure_notify_event_t*>(ev);
      auto it = windows_.find(c->window);
      if (it == windows_.end() || c->event != screen_->root) break;
      GuestWindow& w = it->second;
      uint32_t width = std::clamp<uint32_t>(c->width, 1, kMaxWindowWidth);
      uint32_t height = std::clamp<uint32_t>(c->height, 1, kMaxWindowHeight);
      if (w.x == c->x && w.y == c->y && w.width == width && w.height == height &&
          w.override_redirect == static_cast<bool>(c->override_redirect)) {
        break;
      }
      bool resized = w.width != width || w.height != height;
      w.x = c->x, w.y = c->y, w.width = width, w.height = height;
      w.override_redirect = c->override_redirect;
      // Pixels of the old size must not follow the new geometry: drop them, resend all.
      w.dirty = Dirty{};
      if (resized) w.dirty.Add(0, 0, static_cast<int32_t>(width), static_cast<int32_t>(height));
      return SendMsg(Encode(MSG_CONFIGURE, c->window,
                            MsgConfigure{w.x, w.y, width, height, w.override_redirect ? 1u : 0u}));
    }
    case XCB_PROPERTY_NOTIFY: {
      auto* p = reinterpret_cast<xcb_property_notify_event_t*>(ev);
      if (!windows_.count(p->window)) break;
      if (p->atom == wm_name_ || p->atom == net_wm_name_) return SendTitle(p->window);
      if (p->atom == XCB_ATOM_WM_CLASS) return SendClass(p->window);
      break;
    }
    case XCB_SELECTION_REQUEST:
      OnSelectionRequest(reinterpret_cast<xcb_selection_request_event_t*>(ev));
      break;
    case XCB_SELECTION_NOTIFY:
      return OnSelectionNotify(reinterpret_cast<xcb_selection_notify_event_t*>(ev));
    default:
      break;  // X errors (0) and events we do not track
  }
  return OkStatus();
}

void Agent::OnSelectionRequest(xcb_selection_request_event_t* ev) {
  xcb_selection_notify_event_t reply{};
  reply.response_type = XCB_SELECTION_NOTIFY;
  reply.time = ev->time;
  reply.requestor = ev->requestor;
  reply.selection = ev->selection;
  reply.target = ev->target;
  reply.property = XCB_ATOM_NONE;
  xcb_atom_t property = ev->property == XCB_ATOM_NONE ? ev->target : ev->property;
  if (ev->target == targets_) {
    xcb_atom_t list[] = {targets_, utf8_, XCB_ATOM_STRING};
    xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, ev->requestor, property, XCB_ATOM_ATOM, 32,
                        3, list);
    reply.property = property;
  } else if (ev->target == utf8_ || ev->target == XCB_ATOM_STRING) {
    xcb_change_property(conn_, XCB_PROP_MODE_REPLACE, ev->requestor, property, ev->target, 8,
                        static_cast<uint32_t>(clipboard_data_.size()), clipboard_data_.data());
    reply.property = property;
  }
  xcb_send_event(conn_, 0, ev->requestor, XCB_EVENT_MASK_NO_EVENT,
                 reinterpret_cast<const char*>(&reply));
}

Status Agent::OnSelectionNotify(xcb_selection_notify_event_t* ev) {
  if (!clipboard_req_pending_ || ev->requestor != helper_) return OkStatus();
  clipboard_req_pending_ = false;
  std::string data;
  if (ev->property != XCB_ATOM_NONE) {
    data = GetStringProperty(helper_, ev->property, kClipboardMaxMax);
    xcb_delete_property(conn_, helper_, ev->property);
  }
  data.resize(std::min(data.size(), kClipboardDefaultMax));
  return SendMsg(EncodeMessage(MSG_CLIPBOARD_DATA, 0, data.data(), data.size()));
}

Status Agent::OnHostHeader(const MsgHeader& hdr) const {
  size_t want;
  switch (hdr.type) {
    case MSG_KEYPRESS: want = sizeof(MsgKeypress); break;
    case MSG_BUTTON: want = sizeof(MsgButton); break;
    case MSG_MOTION: want = sizeof(MsgMotion); break;
    case MSG_CROSSING: want = sizeof(MsgCrossing); break;
    case MSG_FOCUS: want = sizeof(MsgFocus); break;
    case MSG_MAP: want = sizeof(MsgMapInfo); break;
    case MSG_CONFIGURE: want = sizeof(MsgConfigure); break;
    case MSG_WINDOW_FLAGS: want = sizeof(MsgWindowFlags); break;
    case MSG_DESTROY: case MSG_CLOSE: case MSG_CLIPBOARD_REQ: case MSG_WINDOW_DUMP_ACK:
      want = 0;
      break;
    case MSG_CLIPBOARD_DATA:
      if (hdr.untrusted_len > kClipboardMaxMax) return Error{"gui-agent: clipboard too large", 0};
      return OkStatus();
    default:
      return Error{"gui-agent: unknown message type " + std::to_string(hdr.type) + " from host", 0};
  }
  if (hdr.untrusted_len != want) {
    return Error{std::string("gui-agent: wrong length for ") + MsgTypeName(hdr.type), 0};
  }
  return OkStatus();
}

void Agent::FakeMotion(const GuestWindow& w, uint32_t x, uint32_t y) {
  int32_t rx = w.x + static_cast<int32_t>(std::min(x, w.width - 1));
  int32_t ry = w.y + static_cast<int32_t>(std::min(y, w.height - 1));
  xcb_test_fake_input(conn_, XCB_MOTION_NOTIFY, 0, XCB_CURRENT_TIME, screen_->root,
                      static_cast<int16_t>(rx), static_cast<int16_t>(ry), 0);
}

void Agent::CloseWindow(xcb_window_t w) {
  auto cookie = xcb_get_property(conn_, 0, w, wm_protocols_, XCB_ATOM_ATOM, 0, 64);
  xcb_get_property_reply_t* r = xcb_get_property_reply(conn_, cookie, nullptr);
  bool supports_delete = false;
  if (r && r->format == 32) {
    auto* atoms = static_cast<xcb_atom_t*>(xcb_get_property_value(r));
    int n = xcb_get_property_value_length(r) / 4;
    supports_delete = std::find(atoms, atoms + n, wm_delete_) != atoms + n;
  }
  free(r);
  if (!supports_delete) {
    xcb_kill_client(conn_, w);
    return;
  }
  xcb_client_message_event_t msg{};
  msg.response_type = XCB_CLIENT_MESSAGE;
  msg.format = 32;
  msg.window = w;
  msg.type = wm_protocols_;
  msg.data.data32[0] = wm_delete_;
  msg.data.data32[1] = XCB_CURRENT_TIME;
  xcb_send_event(conn_, 0, w, XCB_EVENT_MASK_NO_EVENT, reinterpret_cast<const char*>(&msg));
}

Status Agent::OnHostMessage(const MsgHeader& hdr, std::span<const uint8_t> body) {
  if (hdr.type == MSG_CLIPBOARD_REQ) {
    clipboard_req_pending_ = true;
    xcb_convert_selection(conn_, helper_, clipboard_, utf8_, odyssey_sel_, XCB_CURRENT_TIME);
    return OkStatus();
  }
  if (hdr.type == MSG_CLIPBOARD_DATA) {
    clipboard_data_.assign(body.begin(), body.end());
    xcb_set_selection_owner(conn_, helper_, clipboard_, XCB_CURRENT_TIME);
    xcb_set_selection_owner(conn_, helper_, XCB_ATOM_PRIMARY, XCB_CURRENT_TIME);
    return OkStatus();
  }
  auto it = windows_.find(hdr.window);
  if (it == windows_.end()) return OkStatus();  // raced with a destroy: nothing to do
  GuestWindow& w = it->second;
  switch (hdr.type) {
    case MSG_KEYPRESS: {
      auto k = Load<MsgKeypress>(body);
      if ((k.type != 2 && k.type != 3) || k.keycode < 8 || k.keycode > 255) break;
      xcb_test_fake_input(conn_, static_cast<uint8_t>(k.type), static_cast<uint8_t>(k.keycode),
                          XCB_CURRENT_TIME, XCB_NONE, 0, 0, 0);
      break;
    }
    case MSG_BUTTON: {
      auto b = Load<MsgButton>(body);
      if ((b.type != 4 && b.type != 5) || b.button < 1 || b.button > 255) break;
      FakeMotion(w, b.x, b.y);
      xcb_test_fake_input(conn_, static_cast<uint8_t>(b.type), static_cast<uint8_t>(b.button),
                          XCB_CURRENT_TIME, XCB_NONE, 0, 0, 0);
      break;
    }
    case MSG_MOTION: {
      auto m = Load<MsgMotion>(body);
      FakeMotion(w, m.x, m.y);
      break;
    }
    case MSG_FOCUS: {
      auto f = Load<MsgFocus>(body);
      if (f.type == 9 && w.mapped) {
        xcb_set_input_focus(conn_, XCB_INPUT_FOCUS_POINTER_ROOT, hdr.window, XCB_CURRENT_TIME);
      }
      break;
    }
    case MSG_CONFIGURE: {
      auto c = Load<MsgConfigure>(body);
      uint32_t size[] = {std::clamp<uint32_t>(c.width, 1, kMaxWindowWidth),
                         std::clamp<uint32_t>(c.height, 1, kMaxWindowHeight)};
      xcb_configure_window(conn_, hdr.window, XCB_CONFIG_WINDOW_WIDTH | XCB_CONFIG_WINDOW_HEIGHT,
                           size);
      break;
    }
    case MSG_CLOSE:
      CloseWindow(hdr.window);
      break;
    default:
      break;  // CROSSING, MAP, WINDOW_FLAGS, DESTROY acks, DUMP_ACK: nothing to do here
  }
  return OkStatus();
}

Status Agent::Loop() {
  Framer framer([this](const MsgHeader& h) { return OnHostHeader(h); },
                [this](const MsgHeader& h, std::span<const uint8_t> b) { return OnHostMessage(h, b); });
  vchan_->SetNonBlocking(true);
  std::vector<uint8_t> buf(1 << 16);
  while (true) {
    // Drain X events (some may sit in xcb's queue already), then send what got damaged.
    while (xcb_generic_event_t* ev = xcb_poll_for_event(conn_)) {
      Status st = OnXEvent(ev);
      free(ev);
      ODYSSEY_TRY(st);
    }
    if (xcb_connection_has_error(conn_)) return Error{"gui-agent: lost the domain's display", 0};
    ODYSSEY_TRY(FlushDamage());
    xcb_flush(conn_);
    // GetImage round trips may have queued events behind our back: poll() would not see
    // them on the socket, so handle them before sleeping.
    if (xcb_generic_event_t* ev = xcb_poll_for_queued_event(conn_)) {
      Status st = OnXEvent(ev);
      free(ev);
      ODYSSEY_TRY(st);
      continue;
    }
    if (CommandDone()) return OkStatus();
    pollfd fds[3] = {{vchan_->PollFd(), POLLIN, 0},
                     {xcb_get_file_descriptor(conn_), POLLIN, 0},
                     {command_exited_ ? -1 : command_fd_, POLLIN, 0}};
    if (poll(fds, 3, PollTimeoutMs()) < 0 && errno != EINTR) return Error::Errno("poll", "gui-agent");
    if (fds[2].revents) {
      command_exited_ = true;
      command_exit_time_ = std::chrono::steady_clock::now();
    }
    if (fds[0].revents) {
      while (true) {
        auto n = vchan_->Read(buf.data(), buf.size());
        if (!n.ok()) {
          int code = n.error().code;
          // EOF, or a reset when the daemon closed with our output unread: it went away.
          if (code == 0 || code == ECONNRESET || code == EPIPE) return OkStatus();
          return n.error().Wrap("gui-agent: reading from the host");
        }
        if (*n == 0) break;
        ODYSSEY_TRY(framer.Feed(std::span<const uint8_t>(buf.data(), *n)));
      }
      xcb_flush(conn_);
    }
  }
}

bool Agent::CommandDone() {
  if (!command_exited_) return false;
  for (const auto& [id, w] : windows_)
    if (w.mapped) return false;
  return ever_mapped_ || std::chrono::steady_clock::now() - command_exit_time_ >= opts_.linger;
}

int Agent::PollTimeoutMs() const {
  // Only the linger after the command's exit needs a clock; everything else is an event.
  if (!command_exited_ || ever_mapped_) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      opts_.linger - (std::chrono::steady_clock::now() - command_exit_time_));
  return static_cast<int>(std::max<int64_t>(left.count(), 0)) + 1;
}

Status Agent::Run() {
  if (opts_.command_pid > 0) {
    command_fd_ = static_cast<int>(::syscall(SYS_pidfd_open, opts_.command_pid, 0));
    if (command_fd_ < 0) return Error::Errno("pidfd_open", "gui-agent's command");
  }
  ODYSSEY_TRY(ConnectX());
  ODYSSEY_TRY(Handshake());
  Scan();
  return Loop();
}

}  // namespace

Status RunAgent(const AgentOptions& opts) {
  Agent agent(opts);
  return agent.Run();
}

}  // namespace odyssey::gui
