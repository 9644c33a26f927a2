#include "hal/native/zygote/net.h"

#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace odyssey::hal::native::zygote {

MaybeFailure BringUpLoopback() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("socket", "lo");
  struct ifreq ifr {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  MaybeFailure result;
  if (::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) {
    result = Errno("SIOCGIFFLAGS", "lo");
  } else {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) result = Errno("SIOCSIFFLAGS", "lo");
  }
  ::close(fd);
  return result;
}

}  // namespace odyssey::hal::native::zygote
