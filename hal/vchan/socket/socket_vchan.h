// Socket vchan backend: one Unix stream socket per channel, named and connected exactly as
// Qubes' socket vchan does (specs/qrexec.md "Socket vchan"), so Qubes' own socket-backend
// binaries interoperate with ours. Bytes go straight through the kernel socket: no helper
// thread, no user-space ring. It never interprets the bytes it carries.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/vchan/fd_vchan.h"

namespace odyssey::vchan {

// One socket-vchan channel: a listening server, a connecting client, or a connected stream.
class SocketVchan final : public FdVchan {
 public:
  // Unlinks path, binds and listens there; the one connection is accepted lazily.
  static Result<VchanPtr> CreateServer(const std::string& path, const Options& opts);
  // Connects to path, retrying while it is missing or refused until opts.connect_timeout.
  // async: returns at once; the connection completes on later calls / PollFd readiness.
  static Result<VchanPtr> CreateClient(const std::string& path, const Options& opts, bool async);
  // Wraps an already connected stream socket (socketpair, inherited fd). Takes ownership.
  static Result<VchanPtr> FromConnectedSocket(UniqueFd fd, const Options& opts = {});

  ~SocketVchan() override;

  Result<size_t> Read(void* buf, size_t len) override;
  Result<size_t> Write(const void* buf, size_t len) override;
  Status Recv(void* buf, size_t len) override;
  Status Send(const void* buf, size_t len) override;
  size_t DataReady() override;
  size_t BufferSpace() override;
  State GetState() override;
  Result<bool> WaitFor(std::optional<std::chrono::milliseconds> timeout) override;
  int PollFd() const override { return epoll_.get(); }
  void Close() override;

 private:
  enum class Phase { kListening, kConnecting, kConnected, kFailed, kClosed };

  explicit SocketVchan(std::string path, const Options& opts);
  Status InitEpoll();
  // Moves a listening/connecting channel forward. block: wait (up to until) for it.
  Status Advance(bool block, std::optional<Clock::time_point> until);
  // One non-blocking attempt each; called with mu_ held.
  Status TryAccept();
  Status TryConnect();
  Status OnConnected(UniqueFd fd);
  // Blocks (unless non-blocking) until connected. Returns false if not (yet) connected.
  Result<bool> EnsureConnected(bool block);
  // Whether connected now, moving a listening/connecting channel on without blocking.
  bool ConnectedNow();
  // Read/Write prologue: connects first (blocking unless nonblocking). false: nothing to
  // move now (len is 0, or not connected yet in non-blocking mode).
  Result<bool> ReadyToMove(bool nonblocking, size_t len);
  // The error of a recv()/send() that returned n (<= 0, not EINTR/EAGAIN), errno intact.
  Error RecvFailed(ssize_t n, const char* what);
  Error SendFailed(ssize_t n, const char* what);
  void UnlinkOwnSocket();
  // Connecting failed for good: keep the error, release the socket, wake PollFd().
  void FailLocked(Error error);
  // Makes PollFd() readable for good (closed or failed before any connection).
  void SignalClosedLocked();
  Error PeerClosed(const char* what);
  Phase phase() const { return phase_.load(std::memory_order_acquire); }

  const size_t write_min_;
  const std::optional<Clock::time_point> connect_deadline_;
  std::mutex mu_;  // guards phase transitions and the fds below except conn_
  std::atomic<Phase> phase_{Phase::kConnecting};
  UniqueFd epoll_;     // PollFd(): stable for the object's life
  UniqueFd listen_;    // server, until accepted
  ino_t bound_ino_ = 0;
  UniqueFd pending_;   // client socket, until connected
  UniqueFd timer_;     // async client: connect retry tick
  UniqueFd close_evt_; // makes PollFd readable after Close() before connection
  UniqueFd conn_;      // the connected stream; written once, before phase_ = kConnected
  UniqueFd conn_edge_; // dup of conn_ registered edge-triggered for "space freed"
  size_t sndbuf_ = 0;
  Error failure_;
};

}  // namespace odyssey::vchan
