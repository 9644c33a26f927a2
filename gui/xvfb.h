// Starts a private Xvfb server and picks its display number with -displayfd, so tests,
// benchmarks and gui-agent never collide on a fixed display. The server is killed (and
// reaped) when the XvfbServer is destroyed.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "base/result.h"

namespace odyssey::gui {

class XvfbServer {
 public:
  // Starts Xvfb with one screen of width x height x 24; returns once it accepts clients.
  static Result<std::unique_ptr<XvfbServer>> Start(int width = 1280, int height = 1024);
  // Whether an Xvfb binary is on PATH (tests skip without one).
  static bool Available();
  ~XvfbServer();
  XvfbServer(const XvfbServer&) = delete;
  XvfbServer& operator=(const XvfbServer&) = delete;

  const std::string& display() const { return display_; }  // ":N"
  pid_t pid() const { return pid_; }

 private:
  XvfbServer() = default;
  pid_t pid_ = -1;
  std::string display_;
};

}  // namespace odyssey::gui
