// The Qubes-compatible C ABI (libvchan.h) on top of odyssey::vchan. Errors become -1 /
// NULL with a one-line message on stderr, as Qubes' libvchan does; nothing throws.
#include "libvchan.h"

#include <climits>
#include <cstdio>
#include <new>

#include "hal/vchan/vchan.h"

#define VCHAN_EXPORT __attribute__((visibility("default")))

struct libvchan {
  odyssey::vchan::VchanPtr chan;
};

namespace {

using odyssey::vchan::State;
using odyssey::vchan::Vchan;

int ClampInt(size_t n) { return n > INT_MAX ? INT_MAX : static_cast<int>(n); }

libvchan_t* Wrap(odyssey::Result<odyssey::vchan::VchanPtr> r, const char* what) {
  if (!r.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, r.error().message.c_str());
    return nullptr;
  }
  auto* ctrl = new (std::nothrow) libvchan;
  if (ctrl == nullptr) return nullptr;
  ctrl->chan = std::move(r.value());
  return ctrl;
}

// libvchan_read/write move at least one byte unless the channel is gone; INT_MAX caps
// what one call reports.
size_t Cap(size_t size) { return size > INT_MAX ? static_cast<size_t>(INT_MAX) : size; }

}  // namespace

extern "C" {

VCHAN_EXPORT libvchan_t* libvchan_server_init(int domain, int port, size_t read_min,
                                              size_t write_min) {
  odyssey::vchan::Options opts;
  opts.read_min = read_min;
  opts.write_min = write_min;
  return Wrap(Vchan::Server(domain, port, opts), "libvchan_server_init");
}

VCHAN_EXPORT libvchan_t* libvchan_client_init(int domain, int port) {
  return Wrap(Vchan::Client(domain, port), "libvchan_client_init");
}

VCHAN_EXPORT libvchan_t* libvchan_client_init_async(int domain, int port, EVTCHN* watch_fd) {
  libvchan_t* ctrl = Wrap(Vchan::ClientAsync(domain, port), "libvchan_client_init_async");
  if (ctrl != nullptr && watch_fd != nullptr) *watch_fd = ctrl->chan->PollFd();
  return ctrl;
}

VCHAN_EXPORT int libvchan_client_init_async_finish(libvchan_t* ctrl, bool blocking) {
  if (ctrl == nullptr) return -1;
  for (;;) {
    State s = ctrl->chan->GetState();
    if (s == State::kConnected) return 0;
    if (s == State::kClosed) return -1;
    if (!blocking) return 1;
    auto r = ctrl->chan->WaitFor(std::nullopt);
    if (!r.ok()) return -1;
  }
}

VCHAN_EXPORT int libvchan_write(libvchan_t* ctrl, const void* data, size_t size) {
  if (ctrl == nullptr) return -1;
  if (size == 0) return 0;
  auto r = ctrl->chan->Write(data, Cap(size));
  return r.ok() ? ClampInt(*r) : -1;
}

VCHAN_EXPORT int libvchan_send(libvchan_t* ctrl, const void* data, size_t size) {
  if (ctrl == nullptr || size > INT_MAX) return -1;
  return ctrl->chan->Send(data, size).ok() ? static_cast<int>(size) : -1;
}

VCHAN_EXPORT int libvchan_read(libvchan_t* ctrl, void* data, size_t size) {
  if (ctrl == nullptr) return -1;
  if (size == 0) return 0;
  auto r = ctrl->chan->Read(data, Cap(size));
  return r.ok() ? ClampInt(*r) : -1;
}

VCHAN_EXPORT int libvchan_recv(libvchan_t* ctrl, void* data, size_t size) {
  if (ctrl == nullptr || size > INT_MAX) return -1;
  return ctrl->chan->Recv(data, size).ok() ? static_cast<int>(size) : -1;
}

VCHAN_EXPORT int libvchan_wait(libvchan_t* ctrl) {
  if (ctrl == nullptr) return -1;
  return ctrl->chan->Wait().ok() ? 0 : -1;
}

VCHAN_EXPORT void libvchan_close(libvchan_t* ctrl) {
  if (ctrl == nullptr) return;
  ctrl->chan->Close();
  delete ctrl;
}

VCHAN_EXPORT EVTCHN libvchan_fd_for_select(libvchan_t* ctrl) {
  return ctrl == nullptr ? -1 : ctrl->chan->PollFd();
}

VCHAN_EXPORT int libvchan_is_open(libvchan_t* ctrl) {
  if (ctrl == nullptr) return VCHAN_DISCONNECTED;
  switch (ctrl->chan->GetState()) {
    case State::kConnected: return VCHAN_CONNECTED;
    case State::kWaiting: return VCHAN_WAITING;
    case State::kClosed: return VCHAN_DISCONNECTED;
  }
  return VCHAN_DISCONNECTED;
}

VCHAN_EXPORT int libvchan_data_ready(libvchan_t* ctrl) {
  return ctrl == nullptr ? 0 : ClampInt(ctrl->chan->DataReady());
}

VCHAN_EXPORT int libvchan_buffer_space(libvchan_t* ctrl) {
  return ctrl == nullptr ? 0 : ClampInt(ctrl->chan->BufferSpace());
}

}  // extern "C"
