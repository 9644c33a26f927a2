// virtio-serial vchan backend, the guest side of a QEMU VM: both Server(port) and
// Client(port) open the character device <dir>/org.odyssey.vchan.<port>; the host side
// uses the socket backend on QEMU's chardev socket. It never interprets the bytes.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/vchan/fd_vchan.h"

namespace odyssey::vchan {

// One virtio-serial port (or a tty standing in for one) used as a vchan.
class VirtioVchan final : public FdVchan {
 public:
  // Opens the port device at path read-write (a tty stand-in is switched to raw mode).
  static Result<VchanPtr> Open(const std::string& path, const Options& opts);

  Result<size_t> Read(void* buf, size_t len) override;
  Result<size_t> Write(const void* buf, size_t len) override;
  Status Recv(void* buf, size_t len) override;
  Status Send(const void* buf, size_t len) override;
  size_t DataReady() override;
  size_t BufferSpace() override;
  State GetState() override;
  Result<bool> WaitFor(std::optional<std::chrono::milliseconds> timeout) override;
  int PollFd() const override { return fd_.get(); }
  void Close() override;

 private:
  VirtioVchan(std::string path, UniqueFd fd) : FdVchan(std::move(path)), fd_(std::move(fd)) {}
  // Refreshes host_seen_/peer_closed_ from poll(); returns the state.
  State Probe();
  // Waits for readability (POLLIN) or writability (POLLOUT); sleeps while the host side
  // is not connected yet (the device reports POLLHUP then). false on timeout.
  Result<bool> WaitIo(short events, std::optional<Clock::time_point> until);
  // Recv/Send: step (a Read or Write) in blocking mode until len bytes moved.
  Status TransferBlocking(size_t len, const TransferStep& step);
  Error PeerClosed(const char* what);

  UniqueFd fd_;
  bool host_seen_ = false;
  std::atomic<bool> closed_{false};
};

}  // namespace odyssey::vchan
