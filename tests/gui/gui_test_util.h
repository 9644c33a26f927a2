// Helpers shared by the GUI end-to-end tests and benchmarks: a child process with captured
// stdout, an X probe that finds windows and reads pixels and properties, a PNG writer for
// screenshots, and a condition wait with a generous deadline (a hang guard, not a timing
// assertion).
#pragma once

#include <sys/types.h>
#include <xcb/xcb.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace odyssey::gui::testing {

// Polls pred every few milliseconds until it holds or `limit` passed; returns pred().
bool WaitUntil(const std::function<bool()>& pred,
               std::chrono::milliseconds limit = std::chrono::seconds(60));

// A child process (argv[0] looked up on PATH unless it has a '/') with env additions and
// stdout captured. Killed with SIGTERM and reaped on destruction.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  bool started() const { return pid_ > 0; }
  // Everything the child wrote to stdout so far.
  const std::string& output();
  bool OutputHas(const std::string& s) { return output().find(s) != std::string::npos; }
  // Non-blocking: true once the child exited; *status = its waitpid status.
  bool Exited(int* status);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int out_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string out_;
};

// An X client for checking what a display shows.
class XProbe {
 public:
  explicit XProbe(const std::string& display);
  ~XProbe();
  bool ok() const;
  xcb_connection_t* conn() const { return conn_; }
  xcb_window_t root() const { return root_; }
  // Top-level windows (children of root) whose WM_NAME starts with prefix.
  std::vector<xcb_window_t> FindByTitlePrefix(const std::string& prefix);
  std::string Property(xcb_window_t w, const std::string& name);
  // Pixel (0xRRGGBB) at root coordinates.
  uint32_t RootPixel(int x, int y);
  // A rectangle of the root, row by row, as 0xRRGGBB; empty when it cannot be read.
  std::vector<uint32_t> RootPixels(int x, int y, int width, int height);
  // Position of w's top-left corner on the root.
  bool RootPosition(xcb_window_t w, int* x, int* y);
  bool Geometry(xcb_window_t w, int* width, int* height);
  // Whether w is mapped and all its ancestors are (it can take focus).
  bool Viewable(xcb_window_t w);
  xcb_window_t FirstChild(xcb_window_t w);
  // Writes the root (or a part of it) as an RGB PNG (zlib-compressed).
  bool SavePng(const std::string& path, int x, int y, int width, int height);
  xcb_atom_t Atom(const std::string& name);
  // XTEST input on this display.
  void FakeKey(uint8_t keycode, bool press);
  void FakeButton(uint8_t button, bool press);
  void FakeMotion(int x, int y);
  void Sync();

 private:
  xcb_connection_t* conn_ = nullptr;
  xcb_window_t root_ = 0;
};

}  // namespace odyssey::gui::testing
