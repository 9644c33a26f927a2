#include "hal/vchan/socket/socket_vchan.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace odyssey::vchan {
namespace {

using std::chrono::milliseconds;

// Async connect retry tick, and the cap of the blocking client's backoff.
constexpr milliseconds kRetryTick{5};
// Per-skb overhead the kernel charges against SO_SNDBUF beyond the payload (sk_buff,
// skb_shared_info, head rounding), and the payload size of one skb it allocates at most.
constexpr size_t kSkbOverhead = 4608;
constexpr size_t kSkbPayload = 32768;

Status FillAddr(const std::string& path, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) {
    return Error{"vchan socket path too long (" + std::to_string(path.size()) + " >= " +
                     std::to_string(sizeof addr->sun_path) + "): " + path,
                 ENAMETOOLONG};
  }
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return OkStatus();
}

Status EpollAdd(int epfd, int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return Error::Errno("epoll_ctl(ADD)");
  return OkStatus();
}

void EpollDel(int epfd, int fd) { (void)::epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr); }

bool Retryable(int err) { return err == ENOENT || err == ECONNREFUSED || err == EAGAIN; }

}  // namespace

SocketVchan::SocketVchan(std::string path, const Options& opts)
    : FdVchan(std::move(path)),
      write_min_(opts.write_min),
      connect_deadline_(opts.connect_timeout
                            ? std::optional<Clock::time_point>(Clock::now() + *opts.connect_timeout)
                            : std::nullopt) {}

SocketVchan::~SocketVchan() { Close(); }

Status SocketVchan::InitEpoll() {
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) return Error::Errno("epoll_create1", path_);
  return OkStatus();
}

Result<VchanPtr> SocketVchan::CreateServer(const std::string& path, const Options& opts) {
  std::unique_ptr<SocketVchan> v(new SocketVchan(path, opts));
  sockaddr_un addr;
  ODYSSEY_TRY(FillAddr(path, &addr));
  // The directory is ours to create if missing (Qubes expects it to exist already).
  const std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty()) (void)::mkdir(dir.c_str(), 0755);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Error::Errno("unlink", path);
  v->listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!v->listen_) return Error::Errno("socket", path);
  if (::bind(v->listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Error::Errno("bind", path);
  }
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) v->bound_ino_ = st.st_ino;
  if (::listen(v->listen_.get(), 1) != 0) {
    Error e = Error::Errno("listen", path);
    v->UnlinkOwnSocket();
    return e;
  }
  Status st2 = v->InitEpoll();
  if (st2.ok()) st2 = EpollAdd(v->epoll_.get(), v->listen_.get(), EPOLLIN);
  if (!st2.ok()) {
    v->UnlinkOwnSocket();
    return st2.error();
  }
  v->phase_.store(Phase::kListening, std::memory_order_release);
  return VchanPtr(std::move(v));
}

Result<VchanPtr> SocketVchan::CreateClient(const std::string& path, const Options& opts,
                                           bool async) {
  std::unique_ptr<SocketVchan> v(new SocketVchan(path, opts));
  sockaddr_un addr;
  ODYSSEY_TRY(FillAddr(path, &addr));
  ODYSSEY_TRY(v->InitEpoll());
  v->pending_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!v->pending_) return Error::Errno("socket", path);
  v->phase_.store(Phase::kConnecting, std::memory_order_release);
  if (async) {
    std::lock_guard<std::mutex> lock(v->mu_);
    ODYSSEY_TRY(v->TryConnect());
    if (v->phase() == Phase::kConnecting) {
      v->timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
      if (!v->timer_) return Error::Errno("timerfd_create", path);
      itimerspec its{};
      its.it_interval.tv_nsec = its.it_value.tv_nsec =
          std::chrono::duration_cast<std::chrono::nanoseconds>(kRetryTick).count();
      if (::timerfd_settime(v->timer_.get(), 0, &its, nullptr) != 0) {
        return Error::Errno("timerfd_settime", path);
      }
      ODYSSEY_TRY(EpollAdd(v->epoll_.get(), v->timer_.get(), EPOLLIN));
    }
    if (v->phase() == Phase::kFailed) return v->failure_;
    return VchanPtr(std::move(v));
  }
  ODYSSEY_TRY(v->Advance(true, std::nullopt));
  if (v->phase() != Phase::kConnected) return v->failure_;
  return VchanPtr(std::move(v));
}

Result<VchanPtr> SocketVchan::FromConnectedSocket(UniqueFd fd, const Options& opts) {
  std::unique_ptr<SocketVchan> v(new SocketVchan("", opts));
  ODYSSEY_TRY(v->InitEpoll());
  std::lock_guard<std::mutex> lock(v->mu_);
  ODYSSEY_TRY(v->OnConnected(std::move(fd)));
  return VchanPtr(std::move(v));
}

Status SocketVchan::OnConnected(UniqueFd fd) {
  // The stream stays in blocking mode: blocking Send/Recv are then single syscalls, and
  // the non-blocking paths use MSG_DONTWAIT.
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK)) (void)::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  int sndbuf = 0;
  socklen_t len = sizeof sndbuf;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len) != 0) {
    return Error::Errno("getsockopt(SO_SNDBUF)", path_);
  }
  // Make an empty channel report at least write_min of space (see BufferSpace()).
  if (write_min_ > 0) {
    size_t want = write_min_ + write_min_ / 4 + 4 * kSkbOverhead;
    if (static_cast<size_t>(sndbuf) < want) {
      int half = static_cast<int>(std::min<size_t>(want / 2 + 1, 1 << 29));
      if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &half, sizeof half) != 0) {
        (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &half, sizeof half);
      }
      len = sizeof sndbuf;
      (void)::getsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, &len);
    }
  }
  sndbuf_ = static_cast<size_t>(sndbuf);
  conn_edge_.reset(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!conn_edge_) return Error::Errno("dup", path_);
  ODYSSEY_TRY(EpollAdd(epoll_.get(), fd.get(), EPOLLIN | EPOLLRDHUP));
  ODYSSEY_TRY(EpollAdd(epoll_.get(), conn_edge_.get(), EPOLLOUT | EPOLLET));
  // Registering the edge-triggered entry on a writable socket queues one "space" edge;
  // it says nothing new, so consume it here (level entries are simply reported again).
  epoll_event evs[4];
  (void)::epoll_wait(epoll_.get(), evs, 4, 0);
  conn_ = std::move(fd);
  phase_.store(Phase::kConnected, std::memory_order_release);
  return OkStatus();
}

void SocketVchan::UnlinkOwnSocket() {
  if (path_.empty() || bound_ino_ == 0) return;
  // Only if the path still names our socket: a newer server may have replaced it.
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && st.st_ino == bound_ino_ && S_ISSOCK(st.st_mode)) {
    (void)::unlink(path_.c_str());
  }
  bound_ino_ = 0;
}

Status SocketVchan::TryAccept() {
  for (;;) {
    int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      UniqueFd conn(fd);
      // Exactly one connection: stop listening, and take the name away so that a
      // second client waits for a new server instead of hanging in our backlog.
      EpollDel(epoll_.get(), listen_.get());
      listen_.reset();
      UnlinkOwnSocket();
      return OnConnected(std::move(conn));
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN) return OkStatus();
    return Error::Errno("accept", path_);
  }
}

Status SocketVchan::TryConnect() {
  sockaddr_un addr;
  ODYSSEY_TRY(FillAddr(path_, &addr));
  for (;;) {
    if (::connect(pending_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      if (timer_) {
        EpollDel(epoll_.get(), timer_.get());
        timer_.reset();
      }
      return OnConnected(std::move(pending_));
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EISCONN) return OnConnected(std::move(pending_));
    if (!Retryable(err)) {
      FailLocked(Error::Errno(err, "connect", path_));
      return OkStatus();
    }
    if (connect_deadline_ && Clock::now() >= *connect_deadline_) {
      FailLocked(Error::Errno(ETIMEDOUT, "connect", path_)
                     .Wrap(std::string("vchan server did not appear in time (last: ") +
                           std::strerror(err) + ")"));
    }
    return OkStatus();
  }
}

void SocketVchan::FailLocked(Error error) {
  failure_ = std::move(error);
  phase_.store(Phase::kFailed, std::memory_order_release);
  pending_.reset();
  if (timer_) {
    EpollDel(epoll_.get(), timer_.get());
    timer_.reset();
  }
  SignalClosedLocked();
}

void SocketVchan::SignalClosedLocked() {
  if (epoll_ && !close_evt_) {
    close_evt_.reset(::eventfd(1, EFD_CLOEXEC));
    if (close_evt_) (void)EpollAdd(epoll_.get(), close_evt_.get(), EPOLLIN);
  }
}

Status SocketVchan::Advance(bool block, std::optional<Clock::time_point> until) {
  milliseconds backoff{1};
  for (;;) {
    Phase now_phase;
    {
      std::lock_guard<std::mutex> lock(mu_);
      now_phase = phase();
      if (now_phase == Phase::kListening) {
        ODYSSEY_TRY(TryAccept());
      } else if (now_phase == Phase::kConnecting) {
        if (timer_) {
          uint64_t ticks;
          (void)!::read(timer_.get(), &ticks, sizeof ticks);
        }
        ODYSSEY_TRY(TryConnect());
      } else {
        return OkStatus();
      }
      now_phase = phase();
    }
    if (now_phase != Phase::kListening && now_phase != Phase::kConnecting) return OkStatus();
    const auto now = Clock::now();
    if (!block || (until && now >= *until)) return OkStatus();
    // Wait without the lock, so that Close() from another thread can get in; the epoll fd
    // turns readable on a pending connection and after Close().
    if (now_phase == Phase::kListening) {
      auto ev = PollOne(epoll_.get(), POLLIN, PollTimeout(until));
      if (!ev.ok()) return ev.error();
      continue;
    }
    auto sleep_until = now + backoff;
    if (connect_deadline_) sleep_until = std::min(sleep_until, *connect_deadline_);
    if (until) sleep_until = std::min(sleep_until, *until);
    std::this_thread::sleep_until(sleep_until);
    backoff = std::min(backoff * 2, kRetryTick * 2);
  }
}

Error SocketVchan::PeerClosed(const char* what) {
  peer_closed_.store(true, std::memory_order_relaxed);
  return Error{std::string(what) + ": vchan peer closed", 0};
}

Result<bool> SocketVchan::EnsureConnected(bool block) {
  for (;;) {
    switch (phase()) {
      case Phase::kConnected: return true;
      case Phase::kClosed: return LocallyClosed();
      case Phase::kFailed: return failure_;
      default: break;
    }
    ODYSSEY_TRY(Advance(block, std::nullopt));
    if (!block && phase() != Phase::kConnected) {
      if (phase() == Phase::kFailed) return failure_;
      return false;
    }
  }
}

bool SocketVchan::ConnectedNow() {
  if (phase() == Phase::kConnected) return true;
  auto c = EnsureConnected(false);
  return c.ok() && *c;
}

Result<bool> SocketVchan::ReadyToMove(bool nonblocking, size_t len) {
  if (phase() != Phase::kConnected) {
    auto c = EnsureConnected(!nonblocking);
    if (!c.ok()) return c.error();
    if (!*c) return false;
  }
  return len != 0;
}

Error SocketVchan::RecvFailed(ssize_t n, const char* what) {
  if (n == 0) {
    if (phase() == Phase::kClosed) return LocallyClosed();
    return PeerClosed(what);
  }
  if (errno == ECONNRESET || errno == EPIPE) {
    peer_closed_.store(true, std::memory_order_relaxed);
    return Error::Errno(what, "vchan peer died");
  }
  return Error::Errno(what, path_);
}

Error SocketVchan::SendFailed(ssize_t n, const char* what) {
  if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
    if (phase() == Phase::kClosed) return LocallyClosed();
    peer_closed_.store(true, std::memory_order_relaxed);
    return Error::Errno(what, "vchan peer closed");
  }
  return Error::Errno(what, path_);
}

Result<size_t> SocketVchan::Read(void* buf, size_t len) {
  const bool nonblocking = this->nonblocking();
  auto ready = ReadyToMove(nonblocking, len);
  if (!ready.ok()) return ready.error();
  if (!*ready) return size_t{0};
  for (;;) {
    ssize_t n = ::recv(conn_.get(), buf, len, nonblocking ? MSG_DONTWAIT : 0);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return size_t{0};
    return RecvFailed(n, "read");
  }
}

Result<size_t> SocketVchan::Write(const void* buf, size_t len) {
  const bool nonblocking = this->nonblocking();
  auto ready = ReadyToMove(nonblocking, len);
  if (!ready.ok()) return ready.error();
  if (!*ready) return size_t{0};
  for (;;) {
    if (phase() == Phase::kClosed) return LocallyClosed();
    ssize_t n = ::send(conn_.get(), buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (nonblocking) return size_t{0};
      // Full. The kernel wakes a blocked writer only once three quarters of the buffer
      // are free again, which is also when poll() would report POLLOUT; half a buffer
      // then fits at once, so one blocking send does what poll + send would.
      const size_t part = std::min(len, std::max<size_t>(sndbuf_ / 2, 1));
      n = ::send(conn_.get(), buf, part, MSG_NOSIGNAL);
      if (n > 0) return static_cast<size_t>(n);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    }
    return SendFailed(n, "write");
  }
}

// Recv/Send: one blocking syscall per step (MSG_WAITALL / a blocking send), so that a
// whole message is normally one call, as on a raw socket.
Status SocketVchan::Recv(void* buf, size_t len) {
  auto c = EnsureConnected(true);
  if (!c.ok()) return c.error();
  char* p = static_cast<char*>(buf);
  return TransferAll(len, [this, p](size_t done, size_t left) -> Result<size_t> {
    ssize_t n = ::recv(conn_.get(), p + done, left, MSG_WAITALL);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) return size_t{0};
    return RecvFailed(n, "recv");
  });
}

Status SocketVchan::Send(const void* buf, size_t len) {
  auto c = EnsureConnected(true);
  if (!c.ok()) return c.error();
  const char* p = static_cast<const char*>(buf);
  return TransferAll(len, [this, p](size_t done, size_t left) -> Result<size_t> {
    if (phase() == Phase::kClosed) return LocallyClosed();
    ssize_t n = ::send(conn_.get(), p + done, left, MSG_NOSIGNAL);
    if (n > 0) return static_cast<size_t>(n);
    if (n < 0 && errno == EINTR) return size_t{0};
    return SendFailed(n, "send");
  });
}

size_t SocketVchan::DataReady() {
  if (!ConnectedNow()) return 0;
  int n = 0;
  if (::ioctl(conn_.get(), FIONREAD, &n) != 0 || n < 0) return 0;
  return static_cast<size_t>(n);
}

size_t SocketVchan::BufferSpace() {
  if (!ConnectedNow()) return 0;
  if (peer_closed_.load(std::memory_order_relaxed)) return 0;
  int queued = 0;
  if (::ioctl(conn_.get(), SIOCOUTQ, &queued) != 0 || queued < 0) return 0;
  const size_t used = static_cast<size_t>(queued);
  if (used >= sndbuf_) return 0;
  // The kernel charges each skb's true size (payload + overhead) against SO_SNDBUF and
  // refuses a new skb only once the charge reaches it; leave room for the overhead of
  // every skb a write of the whole space would need, so that the figure is a promise.
  const size_t raw = sndbuf_ - used;
  const size_t skbs = raw / kSkbPayload + 1;
  const size_t overhead = skbs * kSkbOverhead;
  return raw > overhead ? raw - overhead : 0;
}

State SocketVchan::GetState() {
  switch (phase()) {
    case Phase::kClosed:
    case Phase::kFailed:
      return State::kClosed;
    case Phase::kListening:
    case Phase::kConnecting: {
      auto c = EnsureConnected(false);
      if (!c.ok()) return State::kClosed;
      if (!*c) return State::kWaiting;
      break;
    }
    case Phase::kConnected:
      break;
  }
  if (peer_closed_.load(std::memory_order_relaxed)) return State::kClosed;
  auto ev = PollOne(conn_.get(), POLLRDHUP, 0);
  if (!ev.ok() || (*ev & (POLLRDHUP | POLLHUP | POLLERR))) {
    peer_closed_.store(true, std::memory_order_relaxed);
    return State::kClosed;
  }
  return State::kConnected;
}

Result<bool> SocketVchan::WaitFor(std::optional<milliseconds> timeout) {
  const std::optional<Clock::time_point> until =
      timeout ? std::optional<Clock::time_point>(Clock::now() + *timeout) : std::nullopt;
  switch (phase()) {
    case Phase::kClosed: return LocallyClosed();
    case Phase::kFailed: return failure_;
    case Phase::kListening:
    case Phase::kConnecting:
      ODYSSEY_TRY(Advance(true, until));
      if (phase() == Phase::kFailed) return failure_;
      if (phase() == Phase::kClosed) return LocallyClosed();
      return phase() == Phase::kConnected;  // connecting counts as the event
    case Phase::kConnected:
      break;
  }
  epoll_event evs[4];
  for (;;) {
    int n = ::epoll_wait(epoll_.get(), evs, 4, PollTimeout(until));
    if (n >= 0) return n > 0;
    if (errno != EINTR) return Error::Errno("epoll_wait", path_);
  }
}

void SocketVchan::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  const Phase was = phase();
  if (was == Phase::kClosed) return;
  phase_.store(Phase::kClosed, std::memory_order_release);
  if (was == Phase::kConnected) {
    // Wakes any thread blocked in this channel and sends EOF; the fd itself lives until
    // the destructor so that concurrent calls never touch a reused descriptor.
    (void)::shutdown(conn_.get(), SHUT_RDWR);
    return;
  }
  if (listen_) {
    EpollDel(epoll_.get(), listen_.get());
    listen_.reset();
    UnlinkOwnSocket();
  }
  if (timer_) {
    EpollDel(epoll_.get(), timer_.get());
    timer_.reset();
  }
  pending_.reset();
  SignalClosedLocked();
}

}  // namespace odyssey::vchan
