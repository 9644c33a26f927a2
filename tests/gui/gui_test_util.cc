#include "tests/gui/gui_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcb/xtest.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace odyssey::gui::testing {

bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

Child::Child(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  // Everything the child needs is prepared before fork: other threads may hold the
  // allocator's locks, so the child only calls async-signal-safe functions.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings(env);
  for (char** e = environ; *e; ++e) env_strings.push_back(*e);  // earlier entries win
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return;
  pid_ = fork();
  if (pid_ == 0) {
    dup2(fds[1], 1);
    execvpe(args[0], args.data(), envp.data());
    _exit(127);
  }
  close(fds[1]);
  out_fd_ = fds[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
}

const std::string& Child::output() {
  char buf[4096];
  ssize_t n;
  while (out_fd_ >= 0 && (n = read(out_fd_, buf, sizeof(buf))) > 0) out_.append(buf, static_cast<size_t>(n));
  return out_;
}

bool Child::Exited(int* status) {
  if (!reaped_ && pid_ > 0 && waitpid(pid_, &status_, WNOHANG) == pid_) reaped_ = true;
  if (reaped_ && status) *status = status_;
  return reaped_;
}

Child::~Child() {
  if (pid_ > 0 && !Exited(nullptr)) {
    kill(pid_, SIGTERM);
    waitpid(pid_, &status_, 0);
  }
  if (out_fd_ >= 0) close(out_fd_);
}

XProbe::XProbe(const std::string& display) {
  conn_ = xcb_connect(display.c_str(), nullptr);
  if (!xcb_connection_has_error(conn_)) root_ = xcb_setup_roots_iterator(xcb_get_setup(conn_)).data->root;
}

XProbe::~XProbe() { xcb_disconnect(conn_); }

bool XProbe::ok() const { return !xcb_connection_has_error(conn_); }

xcb_atom_t XProbe::Atom(const std::string& name) {
  auto* r = xcb_intern_atom_reply(
      conn_, xcb_intern_atom(conn_, 0, static_cast<uint16_t>(name.size()), name.c_str()), nullptr);
  xcb_atom_t a = r ? r->atom : xcb_atom_t{XCB_ATOM_NONE};
  free(r);
  return a;
}

std::string XProbe::Property(xcb_window_t w, const std::string& name) {
  xcb_atom_t atom = Atom(name);
  auto* r = xcb_get_property_reply(
      conn_, xcb_get_property(conn_, 0, w, atom, XCB_GET_PROPERTY_TYPE_ANY, 0, 1024), nullptr);
  std::string out;
  if (r && r->format == 8) {
    out.assign(static_cast<const char*>(xcb_get_property_value(r)),
               static_cast<size_t>(xcb_get_property_value_length(r)));
  } else if (r && r->format == 32 && xcb_get_property_value_length(r) >= 4) {
    uint32_t v;
    std::memcpy(&v, xcb_get_property_value(r), 4);
    char buf[16];
    std::snprintf(buf, sizeof(buf), "0x%06x", v);
    out = buf;
  }
  free(r);
  return out;
}

std::vector<xcb_window_t> XProbe::FindByTitlePrefix(const std::string& prefix) {
  std::vector<xcb_window_t> found;
  auto* tree = xcb_query_tree_reply(conn_, xcb_query_tree(conn_, root_), nullptr);
  if (!tree) return found;
  xcb_window_t* kids = xcb_query_tree_children(tree);
  for (int i = 0; i < xcb_query_tree_children_length(tree); ++i) {
    if (Property(kids[i], "WM_NAME").rfind(prefix, 0) == 0) found.push_back(kids[i]);
  }
  free(tree);
  return found;
}

uint32_t XProbe::RootPixel(int x, int y) {
  auto* img = xcb_get_image_reply(
      conn_,
      xcb_get_image(conn_, XCB_IMAGE_FORMAT_Z_PIXMAP, root_, static_cast<int16_t>(x),
                    static_cast<int16_t>(y), 1, 1, ~0u),
      nullptr);
  uint32_t v = 0xffffffff;
  if (img && xcb_get_image_data_length(img) >= 4) {
    std::memcpy(&v, xcb_get_image_data(img), 4);
    v &= 0xffffff;
  }
  free(img);
  return v;
}

bool XProbe::RootPosition(xcb_window_t w, int* x, int* y) {
  auto* r = xcb_translate_coordinates_reply(conn_, xcb_translate_coordinates(conn_, w, root_, 0, 0),
                                            nullptr);
  if (!r) return false;
  *x = r->dst_x;
  *y = r->dst_y;
  free(r);
  return true;
}

bool XProbe::Geometry(xcb_window_t w, int* width, int* height) {
  auto* g = xcb_get_geometry_reply(conn_, xcb_get_geometry(conn_, w), nullptr);
  if (!g) return false;
  *width = g->width;
  *height = g->height;
  free(g);
  return true;
}

bool XProbe::Viewable(xcb_window_t w) {
  auto* a = xcb_get_window_attributes_reply(conn_, xcb_get_window_attributes(conn_, w), nullptr);
  bool viewable = a && a->map_state == XCB_MAP_STATE_VIEWABLE;
  free(a);
  return viewable;
}

xcb_window_t XProbe::FirstChild(xcb_window_t w) {
  auto* tree = xcb_query_tree_reply(conn_, xcb_query_tree(conn_, w), nullptr);
  xcb_window_t c = 0;
  if (tree && xcb_query_tree_children_length(tree) > 0) c = xcb_query_tree_children(tree)[0];
  free(tree);
  return c;
}

namespace {

void Be32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>(v >> (8 * i)));
}

void Chunk(std::string& png, const char* type, const std::string& data) {
  Be32(png, static_cast<uint32_t>(data.size()));
  std::string td = std::string(type, 4) + data;
  png += td;
  Be32(png, static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(td.data()),
                                        static_cast<uInt>(td.size()))));
}

}  // namespace

std::vector<uint32_t> XProbe::RootPixels(int x, int y, int width, int height) {
  auto* img = xcb_get_image_reply(
      conn_,
      xcb_get_image(conn_, XCB_IMAGE_FORMAT_Z_PIXMAP, root_, static_cast<int16_t>(x),
                    static_cast<int16_t>(y), static_cast<uint16_t>(width),
                    static_cast<uint16_t>(height), ~0u),
      nullptr);
  std::vector<uint32_t> pixels;
  const size_t n = static_cast<size_t>(width) * static_cast<size_t>(height);
  if (img && xcb_get_image_data_length(img) >= 0 &&
      static_cast<size_t>(xcb_get_image_data_length(img)) >= n * 4) {
    pixels.resize(n);
    std::memcpy(pixels.data(), xcb_get_image_data(img), n * 4);  // BGRX, little endian
    for (auto& p : pixels) p &= 0xffffff;
  }
  free(img);
  return pixels;
}

bool XProbe::SavePng(const std::string& path, int x, int y, int width, int height) {
  std::vector<uint32_t> px = RootPixels(x, y, width, height);
  if (px.empty()) return false;
  std::string raw;  // filter byte 0, then RGB, per row
  raw.reserve(static_cast<size_t>(height) * (1 + static_cast<size_t>(width) * 3));
  for (int r = 0; r < height; ++r) {
    raw.push_back(0);
    for (int c = 0; c < width; ++c) {
      uint32_t p = px[static_cast<size_t>(r) * width + c];
      raw.push_back(static_cast<char>(p >> 16));
      raw.push_back(static_cast<char>(p >> 8));
      raw.push_back(static_cast<char>(p));
    }
  }
  uLongf zlen = compressBound(raw.size());
  std::string z(zlen, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &zlen,
                reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 9) != Z_OK)
    return false;
  z.resize(zlen);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  Be32(ihdr, static_cast<uint32_t>(width));
  Be32(ihdr, static_cast<uint32_t>(height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  Chunk(png, "IHDR", ihdr);
  Chunk(png, "IDAT", z);
  Chunk(png, "IEND", "");
  std::ofstream out(path, std::ios::binary);
  out << png;
  return static_cast<bool>(out);
}

void XProbe::FakeKey(uint8_t keycode, bool press) {
  xcb_test_fake_input(conn_, press ? XCB_KEY_PRESS : XCB_KEY_RELEASE, keycode, XCB_CURRENT_TIME,
                      XCB_NONE, 0, 0, 0);
  Sync();
}

void XProbe::FakeButton(uint8_t button, bool press) {
  xcb_test_fake_input(conn_, press ? XCB_BUTTON_PRESS : XCB_BUTTON_RELEASE, button,
                      XCB_CURRENT_TIME, XCB_NONE, 0, 0, 0);
  Sync();
}

void XProbe::FakeMotion(int x, int y) {
  xcb_test_fake_input(conn_, XCB_MOTION_NOTIFY, 0, XCB_CURRENT_TIME, root_,
                      static_cast<int16_t>(x), static_cast<int16_t>(y), 0);
  Sync();
}

void XProbe::Sync() { free(xcb_get_input_focus_reply(conn_, xcb_get_input_focus(conn_), nullptr)); }

}  // namespace odyssey::gui::testing
