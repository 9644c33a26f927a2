#include "qrexec/transport.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <sys/uio.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "base/io.h"
#include "qrexec/util.h"

namespace odyssey::qrexec {
namespace {

class VchanStream : public MessageStream {
 public:
  explicit VchanStream(vchan::VchanPtr v) : v_(std::move(v)) {}
  ~VchanStream() override { v_->Close(); }
  void Close() override { v_->Close(); }
  int PollFd() const override { return v_->PollFd(); }

 protected:
  Status SendRaw(const void* buf, size_t len) override { return v_->Send(buf, len); }
  Result<size_t> RecvSome(void* buf, size_t len) override {
    for (;;) {
      auto n = v_->Read(buf, len);
      if (!n.ok() || *n > 0) return n;
      ODYSSEY_TRY(v_->Wait());  // blocking mode never returns 0; be safe if it does
    }
  }

 private:
  vchan::VchanPtr v_;
};

class FdStream : public MessageStream {
 public:
  explicit FdStream(UniqueFd fd) : fd_(std::move(fd)) {}
  void Close() override { ::shutdown(fd_.get(), SHUT_RDWR); }
  int PollFd() const override { return fd_.get(); }

 protected:
  Status SendRaw(const void* buf, size_t len) override { return WriteAll(fd_.get(), buf, len); }
  Result<size_t> RecvSome(void* buf, size_t len) override {
    for (;;) {
      ssize_t n = ::read(fd_.get(), buf, len);
      if (n > 0) return static_cast<size_t>(n);
      if (n == 0) return Error{"unexpected end of data", 0};
      if (errno != EINTR) return Error::Errno("read", "qrexec socket");
    }
  }

 private:
  UniqueFd fd_;
};

// Blocks SIGPIPE for a scope and swallows a SIGPIPE raised inside it.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SigpipeGuard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        timespec zero{0, 0};
        while (sigtimedwait(&set, nullptr, &zero) < 0 && errno == EINTR) {
        }
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

// Reads up to kBatchBytes from an fd with one readv() straight into the payload slots of
// consecutive data messages ([header|chunk][header|chunk]...), then sends all of them with
// one Send(): a 1 MiB burst costs a few syscalls instead of two per 64 KiB chunk.
class Framer {
 public:
  static constexpr size_t kBatchBytes = 256 * 1024;
  static constexpr size_t kMaxSlots = 64;
  explicit Framer(size_t chunk)
      : chunk_(chunk),
        slots_(std::max<size_t>(1, std::min<size_t>(kBatchBytes / chunk, kMaxSlots))),
        buf_(std::make_unique_for_overwrite<char[]>(slots_ * (sizeof(MsgHeader) + chunk))) {}

  // Bytes read (0 = EOF), or -1 with errno set.
  ssize_t ReadFrom(int fd) {
    iovec iov[kMaxSlots];
    for (size_t i = 0; i < slots_; ++i)
      iov[i] = {buf_.get() + i * (sizeof(MsgHeader) + chunk_) + sizeof(MsgHeader), chunk_};
    for (;;) {
      ssize_t n = ::readv(fd, iov, static_cast<int>(slots_));
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }

  // Frames the n bytes ReadFrom() returned as messages of `type` and sends them at once.
  Status Send(MessageStream& s, uint32_t type, size_t n) {
    size_t off = 0;
    while (n > 0) {
      size_t len = std::min(n, chunk_);
      MsgHeader h{type, static_cast<uint32_t>(len)};
      std::memcpy(buf_.get() + off, &h, sizeof h);
      off += sizeof h + len;
      n -= len;
    }
    return s.Send(std::string_view(buf_.get(), off));
  }

 private:
  const size_t chunk_;
  const size_t slots_;
  // Not zero-filled: an empty or short stream touches only the pages it uses.
  std::unique_ptr<char[]> buf_;
};

// stdin that is /dev/null or an empty regular file: EOF can be sent at once, without a
// pump thread (whose start and wake-up at the end cost two scheduling rounds per call).
bool IsEmptyInput(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  if (S_ISCHR(st.st_mode)) return st.st_rdev == makedev(1, 3);  // /dev/null
  if (!S_ISREG(st.st_mode)) return false;
  off_t pos = ::lseek(fd, 0, SEEK_CUR);
  return pos >= 0 && pos >= st.st_size;
}

}  // namespace

Status MessageStream::Send(std::string_view encoded) {
  std::lock_guard<std::mutex> lock(send_mu_);
  return SendRaw(encoded.data(), encoded.size());
}

namespace {
constexpr size_t kReadAhead = 128 * 1024;

bool IsDataType(uint32_t type) {
  return type == MSG_DATA_STDIN || type == MSG_DATA_STDOUT || type == MSG_DATA_STDERR;
}
}  // namespace

Status MessageStream::Refill() {
  if (!rbuf_) rbuf_ = std::make_unique_for_overwrite<char[]>(kReadAhead);
  auto n = RecvSome(rbuf_.get(), kReadAhead);
  if (!n.ok()) return n.error();
  rpos_ = 0;
  rlen_ = *n;
  return OkStatus();
}

Status MessageStream::RecvExact(void* buf, size_t len) {
  char* out = static_cast<char*>(buf);
  while (len > 0) {
    if (rpos_ == rlen_) ODYSSEY_TRY(Refill());
    size_t take = std::min(len, rlen_ - rpos_);
    std::memcpy(out, rbuf_.get() + rpos_, take);
    rpos_ += take;
    out += take;
    len -= take;
  }
  return OkStatus();
}

Result<Message> MessageStream::Recv(Channel channel, uint32_t version) {
  MsgHeader untrusted_header;
  ODYSSEY_TRY(RecvExact(&untrusted_header, sizeof untrusted_header));
  ODYSSEY_TRY(ValidateHeader(untrusted_header, channel, version));
  // Length validated: at most 64 KiB + a few bytes.
  Message m;
  m.type = untrusted_header.type;
  m.untrusted_body.resize(untrusted_header.len);
  if (untrusted_header.len > 0) ODYSSEY_TRY(RecvExact(m.untrusted_body.data(), untrusted_header.len));
  return m;
}

Result<Message> MessageStream::RecvStreaming(Channel channel, uint32_t version, const BodySink& sink,
                                             size_t* data_len) {
  *data_len = 0;
  MsgHeader untrusted_header;
  ODYSSEY_TRY(RecvExact(&untrusted_header, sizeof untrusted_header));
  ODYSSEY_TRY(ValidateHeader(untrusted_header, channel, version));
  Message m;
  m.type = untrusted_header.type;
  if (!IsDataType(m.type)) {
    m.untrusted_body.resize(untrusted_header.len);
    if (untrusted_header.len > 0) ODYSSEY_TRY(RecvExact(m.untrusted_body.data(), untrusted_header.len));
    return m;
  }
  // Length validated: at most the version's chunk size.
  size_t left = untrusted_header.len;
  *data_len = left;
  while (left > 0) {
    if (rpos_ == rlen_) ODYSSEY_TRY(Refill());
    size_t take = std::min(left, rlen_ - rpos_);
    sink(m.type, rbuf_.get() + rpos_, take);
    rpos_ += take;
    left -= take;
  }
  return m;
}

MessageStreamPtr StreamFromVchan(vchan::VchanPtr v) {
  return std::make_unique<VchanStream>(std::move(v));
}

MessageStreamPtr StreamFromFd(UniqueFd fd) { return std::make_unique<FdStream>(std::move(fd)); }

Result<uint32_t> Handshake(MessageStream& s, Channel channel, uint32_t local_version,
                           bool send_first) {
  if (send_first) ODYSSEY_TRY(s.Send(EncodeHello(local_version)));
  auto m = s.Recv(channel, kMinProtocolVersion);
  if (!m.ok()) return m.error().Wrap("waiting for HELLO");
  if (m->type != MSG_HELLO)
    return Error{"qrexec protocol: expected MSG_HELLO, got " + MsgTypeName(m->type), EPROTO};
  auto remote = ParseHello(m->untrusted_body);
  if (!remote.ok()) return remote.error();
  auto v = NegotiateVersion(local_version, *remote);
  if (!v.ok()) return v.error();
  if (!send_first) ODYSSEY_TRY(s.Send(EncodeHello(local_version)));
  return v;
}

void BlockSigpipeInThisThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

namespace {
// Set once a helper task on the shared pool has finished (pool threads are not joinable).
class Done {
 public:
  void Set() {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();  // under the lock: the waiter may destroy us as soon as it sees done_
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};
}  // namespace

Result<int> RunCallerSide(MessageStream& s, uint32_t version, const CallerFds& fds) {
  SigpipeGuard guard;
  const size_t chunk = MaxDataChunk(version);
  UniqueFd cancel_r, cancel_w;
  Done pump_done;
  bool pumping = false;
  if (fds.in < 0 || IsEmptyInput(fds.in)) {
    // A quick service may have sent its exit code and closed before this EOF goes out; the
    // exit code below is what counts, so a failed send here is not an error.
    (void)s.Send(EncodeHeader(MSG_DATA_STDIN, 0));
  } else {
    int cancel[2];
    if (::pipe2(cancel, O_CLOEXEC) != 0) return Error::Errno("pipe2", "stdin cancel");
    cancel_r.reset(cancel[0]);
    cancel_w.reset(cancel[1]);
    pumping = true;
    WorkerPool::Shared().Run([&s, &fds, &pump_done, chunk, rfd = cancel_r.get()] {
      Framer framer(chunk);
      bool send_eof = true;
      for (;;) {
        pollfd p[2] = {{fds.in, POLLIN, 0}, {rfd, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
          if (errno == EINTR) continue;
          break;
        }
        if (p[1].revents) {  // call over: stop without EOF
          send_eof = false;
          break;
        }
        ssize_t n = framer.ReadFrom(fds.in);
        if (n < 0 && errno == EAGAIN) continue;
        if (n <= 0) break;
        if (!framer.Send(s, MSG_DATA_STDIN, static_cast<size_t>(n)).ok()) {
          send_eof = false;
          break;
        }
      }
      if (send_eof) (void)s.Send(EncodeHeader(MSG_DATA_STDIN, 0));
      pump_done.Set();
    });
  }

  bool out_open = fds.out >= 0, err_open = fds.err >= 0;
  Status out_failed;  // the first failed write to fds.out (the caller stopped reading)
  // Body pieces go straight from the receive buffer to their fd.
  auto sink = [&](uint32_t type, const char* data, size_t len) {
    bool is_out = type == MSG_DATA_STDOUT;
    bool& open = is_out ? out_open : err_open;
    if (!open) return;  // discarded, or the reader went away (EPIPE)
    Status st = WriteAll(is_out ? fds.out : fds.err, data, len);
    if (!st.ok()) {
      open = false;
      if (is_out) out_failed = st;
    }
  };
  Result<int> result = Error{"data channel closed before the exit code", EPIPE};
  for (;;) {
    size_t len = 0;
    auto m = s.RecvStreaming(Channel::kDataFromService, version, sink, &len);
    if (!m.ok()) {
      result = m.error().Wrap("data channel");
      break;
    }
    if (m->type == MSG_DATA_EXIT_CODE) {
      auto code = ParseExitCode(m->untrusted_body);
      if (code.ok()) result = static_cast<int>(*code);
      else result = code.error();
      break;
    }
    if (m->type == MSG_HELLO) {
      result = Error{"qrexec protocol: HELLO in the middle of a data stream", EPROTO};
      break;
    }
    if (!out_failed.ok()) {
      // Like `yes | head`: when the caller stops reading the service's stdout, the call is
      // abandoned instead of draining an endless stream forever.
      result = Error{"the caller closed its end of the service's stdout (" +
                         out_failed.error().message + "); call abandoned",
                     EPIPE};
      break;
    }
    if (len == 0) {  // EOF of STDOUT or STDERR
      bool is_out = m->type == MSG_DATA_STDOUT;
      bool& open = is_out ? out_open : err_open;
      if (open && fds.close_on_eof) ::close(is_out ? fds.out : fds.err);
      open = false;
    }
  }
  if (pumping) {
    char c = 1;
    (void)!::write(cancel_w.get(), &c, 1);
    // The pump may be blocked in Send() if the service stopped reading; closing the stream
    // on errors unblocks it. On success the service is gone and the peer closes.
    if (!result.ok()) s.Close();
    pump_done.Wait();
  }
  return result;
}

Status RunServiceSide(MessageStream& s, uint32_t version, ServiceFds fds,
                      const std::function<int()>& wait_exit) {
  SigpipeGuard guard;
  const size_t chunk = MaxDataChunk(version);
  // Written by the reader at the caller's EOF when exit_on_client_eof is set.
  int eof_pipe[2];
  if (::pipe2(eof_pipe, O_CLOEXEC) != 0) return Error::Errno("pipe2", "client eof");
  UniqueFd eof_r(eof_pipe[0]), eof_w(eof_pipe[1]);
  Done reader_done;
  // Caller's STDIN -> service stdin. Ends at EOF, at a stream error, or when closed below.
  // (The pool takes copyable tasks: the fd travels raw and is owned again inside.)
  WorkerPool::Shared().Run([&s, &reader_done, version, in_fd = fds.in.release(),
                            notify = fds.exit_on_client_eof, wfd = eof_w.get()] {
    BlockSigpipeInThisThread();
    UniqueFd in(in_fd);
    bool open = in.valid();
    bool eof = false;
    auto sink = [&](uint32_t, const char* data, size_t len) {
      if (open && !WriteAll(in.get(), data, len).ok()) {
        open = false;
        in.reset();
      }
    };
    for (;;) {
      size_t len = 0;
      auto m = s.RecvStreaming(Channel::kDataToService, version, sink, &len);
      if (!m.ok() || m->type != MSG_DATA_STDIN) break;
      if (len == 0) {
        eof = true;
        break;
      }
    }
    if (in.valid()) {
      ::shutdown(in.get(), SHUT_WR);  // socket services: half-close; pipes: ENOTSOCK
      in.reset();
    }
    if (eof && notify) {
      char c = 1;
      (void)!::write(wfd, &c, 1);
    }
    reader_done.Set();
  });

  Framer framer(chunk);
  Status st;
  pollfd p[3] = {{fds.out.get(), POLLIN, 0}, {fds.err.get(), POLLIN, 0}, {eof_r.get(), POLLIN, 0}};
  uint32_t types[2] = {MSG_DATA_STDOUT, MSG_DATA_STDERR};
  UniqueFd* owned[2] = {&fds.out, &fds.err};
  if (!fds.out.valid()) {
    st = s.Send(EncodeHeader(MSG_DATA_STDOUT, 0));
    p[0].fd = -1;
  }
  if (!fds.err.valid()) p[1].fd = -1;
  while (st.ok() && (p[0].fd >= 0 || p[1].fd >= 0)) {
    if (::poll(p, 3, -1) < 0) {
      if (errno == EINTR) continue;
      st = Error::Errno("poll", "service output");
      break;
    }
    if (p[2].revents) {
      // exit-on-client-eof: stop forwarding; the service sees its fds closed.
      for (int i = 0; i < 2 && st.ok(); ++i) {
        if (p[i].fd < 0) continue;
        p[i].fd = -1;
        owned[i]->reset();
        st = s.Send(EncodeHeader(types[i], 0));
      }
      break;
    }
    // EOFs seen in the same round go out in one write (a service that exits closes both
    // at once: one wake-up of the caller instead of two).
    std::string eofs;
    for (int i = 0; i < 2 && st.ok(); ++i) {
      if (p[i].fd < 0 || !p[i].revents) continue;
      ssize_t n = framer.ReadFrom(p[i].fd);
      if (n < 0 && errno == EAGAIN) continue;
      if (n <= 0) {
        p[i].fd = -1;
        owned[i]->reset();
        eofs += EncodeHeader(types[i], 0);
        continue;
      }
      st = framer.Send(s, types[i], static_cast<size_t>(n));
    }
    if (st.ok() && !eofs.empty()) st = s.Send(eofs);
  }
  fds.out.reset();
  fds.err.reset();
  int code = wait_exit();
  if (st.ok()) st = s.Send(EncodeExitCode(code));
  s.Close();
  reader_done.Wait();
  return st;
}

void SetPipeSize(int fd, int bytes) { (void)::fcntl(fd, F_SETPIPE_SZ, bytes); }

}  // namespace odyssey::qrexec
