#include "hal/vchan/fd_vchan.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>

namespace odyssey::vchan {

int PollTimeout(std::optional<std::chrono::steady_clock::time_point> until) {
  using std::chrono::milliseconds;
  if (!until) return -1;
  auto left = std::chrono::duration_cast<milliseconds>(*until - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30));
}

Result<short> PollOne(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, timeout_ms);
    if (n >= 0) return n == 0 ? short{0} : p.revents;
    if (errno != EINTR) return Error::Errno("poll", "vchan fd " + std::to_string(fd));
  }
}

Status FdVchan::Wait() {
  auto r = WaitFor(std::nullopt);
  if (!r.ok()) return r.error();
  return OkStatus();
}

Error FdVchan::LocallyClosed() const {
  return Error{"vchan " + (path_.empty() ? std::string("socket") : path_) + ": closed", ENOTCONN};
}

}  // namespace odyssey::vchan
