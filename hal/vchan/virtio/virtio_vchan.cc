#include "hal/vchan/virtio/virtio_vchan.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace odyssey::vchan {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// While the host end is not connected, the device reports POLLHUP at once; poll again
// after this long.
constexpr milliseconds kHostPoll{5};
// A virtio port accepts a write of up to 32 KiB whenever poll() says POLLOUT; report a
// page, which also holds for the pty stand-in used in tests.
constexpr size_t kWritableChunk = 4096;

// revents of fd now; 0 if none or poll() failed.
short PollNow(int fd, short events) {
  auto ev = PollOne(fd, events, 0);
  return ev.ok() ? *ev : short{0};
}

// Sleeps while the host end is away: kHostPoll, cut short at until. false: until has passed.
bool SleepForHost(std::optional<Clock::time_point> until) {
  if (until && Clock::now() >= *until) return false;
  auto wake = Clock::now() + kHostPoll;
  if (until) wake = std::min(wake, *until);
  std::this_thread::sleep_until(wake);
  return true;
}

}  // namespace

Result<VchanPtr> VirtioVchan::Open(const std::string& path, const Options& /*opts*/) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) return Error::Errno("open", path).Wrap("virtio-serial vchan port");
  if (::isatty(fd.get())) {
    // A pty (tests) or an hvc console: no line discipline between us and the bytes.
    termios t;
    if (::tcgetattr(fd.get(), &t) == 0) {
      ::cfmakeraw(&t);
      (void)::tcsetattr(fd.get(), TCSANOW, &t);
    }
  }
  std::unique_ptr<VirtioVchan> v(new VirtioVchan(path, std::move(fd)));
  (void)v->Probe();
  return VchanPtr(std::move(v));
}

State VirtioVchan::Probe() {
  if (closed_.load() || peer_closed_.load()) return State::kClosed;
  short ev = PollNow(fd_.get(), POLLIN | POLLOUT);
  if (ev & (POLLHUP | POLLERR)) {
    if (host_seen_) {
      // Unread data still counts as open data; the close shows once it is read.
      if (!(ev & POLLIN)) peer_closed_.store(true);
      return State::kClosed;
    }
    return State::kWaiting;
  }
  host_seen_ = true;
  return State::kConnected;
}

Error VirtioVchan::PeerClosed(const char* what) {
  peer_closed_.store(true);
  return Error{std::string(what) + ": vchan peer closed (" + path_ + ")", 0};
}

Result<bool> VirtioVchan::WaitIo(short events, std::optional<Clock::time_point> until) {
  for (;;) {
    if (closed_.load()) return LocallyClosed();
    pollfd p{fd_.get(), events, 0};
    int n = ::poll(&p, 1, PollTimeout(until));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("poll", path_);
    }
    if (n == 0) return false;
    if (p.revents & events) return true;
    if (host_seen_) return true;  // hang-up after a connection: the caller sees EOF
    // Host side not there yet: nothing to block on, so poll gently.
    if (!SleepForHost(until)) return false;
  }
}

Result<size_t> VirtioVchan::Read(void* buf, size_t len) {
  if (closed_.load()) return LocallyClosed();
  if (len == 0) return size_t{0};
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, len);
    if (n > 0) {
      host_seen_ = true;
      return static_cast<size_t>(n);
    }
    // virtio: read() is 0 while the host is disconnected; pty: EIO once the master closed.
    const bool hangup = n == 0 || errno == EIO;
    if (n < 0 && errno == EINTR) continue;
    if (hangup && host_seen_) return PeerClosed("read");
    if (!hangup && errno != EAGAIN) return Error::Errno("read", path_);
    if (nonblocking()) return size_t{0};
    auto w = WaitIo(POLLIN, std::nullopt);
    if (!w.ok()) return w.error();
  }
}

Result<size_t> VirtioVchan::Write(const void* buf, size_t len) {
  if (closed_.load()) return LocallyClosed();
  if (len == 0) return size_t{0};
  for (;;) {
    ssize_t n = ::write(fd_.get(), buf, len);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) continue;
    const bool hangup = n == 0 || errno == EIO || errno == EPIPE;
    if (hangup && host_seen_) {
      peer_closed_.store(true);
      return Error::Errno(EPIPE, "write", path_ + ": vchan peer closed");
    }
    if (!hangup && errno != EAGAIN) return Error::Errno("write", path_);
    if (nonblocking()) return size_t{0};
    auto w = WaitIo(POLLOUT, std::nullopt);
    if (!w.ok()) return w.error();
  }
}

Status VirtioVchan::TransferBlocking(size_t len, const TransferStep& step) {
  // Recv/Send always block: Read/Write see blocking mode until the whole length moved.
  const bool saved = nonblocking_.exchange(false);
  Status st = TransferAll(len, step);
  nonblocking_.store(saved);
  return st;
}

Status VirtioVchan::Recv(void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  return TransferBlocking(len,
                          [this, p](size_t done, size_t left) { return Read(p + done, left); });
}

Status VirtioVchan::Send(const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  return TransferBlocking(len,
                          [this, p](size_t done, size_t left) { return Write(p + done, left); });
}

size_t VirtioVchan::DataReady() {
  if (closed_.load()) return 0;
  int n = 0;
  if (::ioctl(fd_.get(), FIONREAD, &n) == 0 && n >= 0) return static_cast<size_t>(n);
  // virtio ports have no FIONREAD: readable means at least one byte.
  return (PollNow(fd_.get(), POLLIN) & POLLIN) ? 1 : 0;
}

size_t VirtioVchan::BufferSpace() {
  if (Probe() != State::kConnected) return 0;
  return (PollNow(fd_.get(), POLLOUT) & POLLOUT) ? kWritableChunk : 0;
}

State VirtioVchan::GetState() { return Probe(); }

Result<bool> VirtioVchan::WaitFor(std::optional<milliseconds> timeout) {
  // Space on a virtio port is level-triggered and nearly always there, so Wait() reports
  // data, connection and hang-up only; Write/Send block for space themselves.
  std::optional<Clock::time_point> until;
  if (timeout) until = Clock::now() + *timeout;
  if (!host_seen_) {
    // The event a waiting port reports is the host connecting.
    for (;;) {
      if (Probe() != State::kWaiting) return true;
      if (!SleepForHost(until)) return false;
    }
  }
  return WaitIo(POLLIN, until);
}

void VirtioVchan::Close() {
  if (closed_.exchange(true)) return;
  // Release the device but keep the descriptor number valid (and readable) for whoever
  // still polls PollFd(): an eventfd takes its place.
  UniqueFd placeholder(::eventfd(1, EFD_CLOEXEC));
  if (placeholder) {
    (void)::dup3(placeholder.get(), fd_.get(), O_CLOEXEC);
  } else {
    fd_.reset();
  }
}

}  // namespace odyssey::vchan
