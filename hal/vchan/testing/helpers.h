// Test helpers shared by the vchan tests: socket-backend Options in a private TempDir, and
// a one-message round over a channel pair.
#pragma once

#include <string>

#include "hal/vchan/testing/temp_dir.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan::testing {

// Socket backend, sockets in dir (never /var/run/vchan), we are domain `own`.
inline Options SocketOpts(const TempDir& dir, int own) {
  Options o;
  o.backend = Backend::kSocket;
  o.socket_dir = dir.path();
  o.own_domain = own;
  return o;
}

// Send()s msg on `from` and returns what Recv() of as many bytes on `to` got; a failed
// call returns a marker instead (and never goes on to block in Recv).
inline std::string Carry(Vchan& from, Vchan& to, const std::string& msg) {
  if (!from.Send(msg.data(), msg.size()).ok()) return "<Send failed>";
  std::string got(msg.size(), '\0');
  if (!to.Recv(got.data(), got.size()).ok()) return "<Recv failed>";
  return got;
}

}  // namespace odyssey::vchan::testing
