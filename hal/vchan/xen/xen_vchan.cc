#include "hal/vchan/xen/xen_vchan.h"

#include <cerrno>
#include <string>

#ifdef ODYSSEY_HAVE_XENVCHAN
#include <poll.h>

#include <chrono>
#include <optional>

extern "C" {
#include <libxenvchan.h>
}
#endif

namespace odyssey::vchan {

#ifndef ODYSSEY_HAVE_XENVCHAN

bool XenVchanCompiled() { return false; }

Result<VchanPtr> XenVchanServer(int, int, const Options&) {
  return Error{"vchan: this build has no xen backend (libxenvchan was not found)", ENOSYS};
}

Result<VchanPtr> XenVchanClient(int, int, const Options&) {
  return Error{"vchan: this build has no xen backend (libxenvchan was not found)", ENOSYS};
}

#else

namespace {

// One libxenvchan channel. libxenvchan reports errors as -1 with errno set.
class XenVchan final : public Vchan {
 public:
  XenVchan(libxenvchan* ctrl, std::string name) : ctrl_(ctrl), name_(std::move(name)) {
    ctrl_->blocking = 1;
  }
  ~XenVchan() override {
    if (ctrl_ != nullptr) libxenvchan_close(ctrl_);
  }

  Result<size_t> Read(void* buf, size_t len) override {
    ODYSSEY_TRY(Usable());
    if (len == 0) return size_t{0};
    ctrl_->blocking = nonblocking_ ? 0 : 1;
    int n = libxenvchan_read(ctrl_, buf, len);
    ctrl_->blocking = 1;
    if (n < 0) return Eof("read");
    return static_cast<size_t>(n);
  }
  Result<size_t> Write(const void* buf, size_t len) override {
    ODYSSEY_TRY(Usable());
    if (len == 0) return size_t{0};
    // Blocking libxenvchan_write moves everything; partial semantics want "what fits, at
    // least one byte", so clamp to the free space first.
    if (!nonblocking_) {
      while (libxenvchan_buffer_space(ctrl_) == 0) {
        if (!libxenvchan_is_open(ctrl_)) return Eof("write");
        if (libxenvchan_wait(ctrl_) < 0) return Error::Errno("libxenvchan_wait", name_);
      }
      size_t space = static_cast<size_t>(libxenvchan_buffer_space(ctrl_));
      if (len > space) len = space;
    }
    ctrl_->blocking = 0;
    int n = libxenvchan_write(ctrl_, buf, len);
    ctrl_->blocking = 1;
    if (n < 0) return Eof("write");
    return static_cast<size_t>(n);
  }
  Status Recv(void* buf, size_t len) override {
    ODYSSEY_TRY(Usable());
    if (len == 0) return OkStatus();
    if (libxenvchan_recv(ctrl_, buf, len) != static_cast<int>(len)) return Eof("recv");
    return OkStatus();
  }
  Status Send(const void* buf, size_t len) override {
    ODYSSEY_TRY(Usable());
    if (len == 0) return OkStatus();
    if (libxenvchan_send(ctrl_, buf, len) != static_cast<int>(len)) return Eof("send");
    return OkStatus();
  }
  size_t DataReady() override {
    if (ctrl_ == nullptr) return 0;
    int n = libxenvchan_data_ready(ctrl_);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }
  size_t BufferSpace() override {
    if (ctrl_ == nullptr) return 0;
    int n = libxenvchan_buffer_space(ctrl_);
    return n > 0 ? static_cast<size_t>(n) : 0;
  }
  State GetState() override {
    if (ctrl_ == nullptr) return State::kClosed;
    switch (libxenvchan_is_open(ctrl_)) {
      case 1: return State::kConnected;
      case 2: return State::kWaiting;
      default: return State::kClosed;
    }
  }
  Status Wait() override {
    ODYSSEY_TRY(Usable());
    if (libxenvchan_wait(ctrl_) < 0) return Error::Errno("libxenvchan_wait", name_);
    return OkStatus();
  }
  int PollFd() const override { return ctrl_ ? libxenvchan_fd_for_select(ctrl_) : -1; }
  void Close() override {
    // libxenvchan has no half-way close; the event fd dies with the channel.
    if (ctrl_ != nullptr) libxenvchan_close(ctrl_);
    ctrl_ = nullptr;
  }
  void SetNonBlocking(bool on) override { nonblocking_ = on; }

 private:
  Status Usable() const {
    if (ctrl_ == nullptr) return Error{"vchan " + name_ + ": closed", ENOTCONN};
    return OkStatus();
  }
  Error Eof(const char* what) {
    if (!libxenvchan_is_open(ctrl_)) return Error{std::string(what) + ": vchan peer closed", 0};
    return Error::Errno(what, name_);
  }

  libxenvchan* ctrl_;
  const std::string name_;
  bool nonblocking_ = false;
};

}  // namespace

bool XenVchanCompiled() { return true; }

Result<VchanPtr> XenVchanServer(int peer_domain, int port, const Options& opts) {
  const std::string xs_path =
      "data/vchan/" + std::to_string(peer_domain) + "/" + std::to_string(port);
  libxenvchan* ctrl = libxenvchan_server_init(nullptr, peer_domain, xs_path.c_str(),
                                              opts.read_min, opts.write_min);
  if (ctrl == nullptr) return Error::Errno("libxenvchan_server_init", xs_path);
  return VchanPtr(new XenVchan(ctrl, xs_path));
}

Result<VchanPtr> XenVchanClient(int peer_domain, int port, const Options& opts) {
  const std::string xs_path = "/local/domain/" + std::to_string(peer_domain) + "/data/vchan/" +
                              std::to_string(EffectiveOwnDomain(opts)) + "/" +
                              std::to_string(port);
  libxenvchan* ctrl = libxenvchan_client_init(nullptr, peer_domain, xs_path.c_str());
  if (ctrl == nullptr) return Error::Errno("libxenvchan_client_init", xs_path);
  return VchanPtr(new XenVchan(ctrl, xs_path));
}

#endif

}  // namespace odyssey::vchan
