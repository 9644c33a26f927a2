// FdVchan: the base of the backends whose channel is one file-descriptor stream (socket,
// virtio-serial). It holds what they share: the path their errors name, the non-blocking
// and peer-closed flags, Wait() as WaitFor() without a timeout, and poll() helpers. Like
// every backend it never interprets the bytes it carries.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "base/result.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan {

// poll() timeout in ms until `until` (-1: forever), never negative.
int PollTimeout(std::optional<std::chrono::steady_clock::time_point> until);
// Polls one fd, retrying on EINTR; returns revents (0 on timeout).
Result<short> PollOne(int fd, short events, int timeout_ms);

class FdVchan : public Vchan {
 public:
  Status Wait() final;
  void SetNonBlocking(bool on) final { nonblocking_.store(on, std::memory_order_relaxed); }

 protected:
  using Clock = std::chrono::steady_clock;

  // path: the socket or device, named in errors (may be empty for an inherited socket).
  explicit FdVchan(std::string path) : path_(std::move(path)) {}
  bool nonblocking() const { return nonblocking_.load(std::memory_order_relaxed); }
  // The error of I/O after Close(): "vchan <path>: closed", ENOTCONN.
  Error LocallyClosed() const;

  const std::string path_;
  std::atomic<bool> nonblocking_{false};
  std::atomic<bool> peer_closed_{false};
};

}  // namespace odyssey::vchan
