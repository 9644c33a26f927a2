#include "hal/libvirt/guest_identity.h"

#include <sys/random.h>

#include <cerrno>

namespace odyssey::hal::libvirt {

Result<IdentityRefresh> MakeIdentityRefresh(const std::string& hostname) {
  bool valid = !hostname.empty() && hostname.size() <= 63 && hostname[0] != '-' && hostname[0] != '.';
  for (char c : hostname) {
    valid = valid && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '.');
  }
  if (!valid) return Error{"invalid guest hostname '" + hostname + "'", EINVAL};
  IdentityRefresh r;
  r.command = std::string(kGuestIdentityTool) + " " + hostname;
  r.seed.resize(kGuestIdentitySeedBytes);
  size_t got = 0;
  while (got < r.seed.size()) {
    ssize_t n = ::getrandom(r.seed.data() + got, r.seed.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::Errno("getrandom", "seed for " + hostname);
    got += static_cast<size_t>(n);
  }
  return r;
}

}  // namespace odyssey::hal::libvirt
