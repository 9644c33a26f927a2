// odyssey-identity: gives a VM clone restored from a template snapshot an identity of its own.
// Every clone of one snapshot wakes up with the template's kernel RNG state and hostname; the
// host runs this through qrexec (hal/libvirt/guest_identity.h) after the restore and before
// the clone takes any call. It reads 64 bytes of fresh host randomness from stdin, credits
// them to the kernel's input pool (RNDADDENTROPY) and forces the CRNG to reseed at once
// (RNDRESEEDCRNG), so no two clones ever hand out the same random bytes; then it sets the
// hostname given as its only argument. Exit 0 only when all of it worked. Runs as root in the
// guest (both ioctls need CAP_SYS_ADMIN); the seed is the only input and is never printed.
#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace {

constexpr size_t kSeedBytes = 64;

int Fail(const char* what) {
  std::fprintf(stderr, "odyssey-identity: %s: %s\n", what, std::strerror(errno));
  return 1;
}

bool IsValidHostname(const char* name) {
  size_t n = std::strlen(name);
  if (n == 0 || n > 63 || name[0] == '-' || name[0] == '.') return false;
  for (size_t i = 0; i < n; ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 || !IsValidHostname(argv[1])) {
    std::fprintf(stderr, "usage: odyssey-identity HOSTNAME  (64 seed bytes on stdin; hostname [A-Za-z0-9.-]{1,63})\n");
    return 2;
  }
  // rand_pool_info ends in a flexible array: give it room for the seed.
  alignas(rand_pool_info) unsigned char storage[sizeof(rand_pool_info) + kSeedBytes] = {};
  auto* info = reinterpret_cast<rand_pool_info*>(storage);
  unsigned char* bytes = storage + sizeof(rand_pool_info);
  size_t got = 0;
  while (got < kSeedBytes) {
    ssize_t n = ::read(0, bytes + got, kSeedBytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Fail("reading the seed");
    if (n == 0) {
      std::fprintf(stderr, "odyssey-identity: seed is %zu bytes, want %zu\n", got, kSeedBytes);
      return 1;
    }
    got += static_cast<size_t>(n);
  }
  info->entropy_count = kSeedBytes * 8;
  info->buf_size = kSeedBytes;
  int fd = ::open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Fail("opening /dev/urandom");
  if (::ioctl(fd, RNDADDENTROPY, info) != 0) return Fail("RNDADDENTROPY");
  if (::ioctl(fd, RNDRESEEDCRNG) != 0) return Fail("RNDRESEEDCRNG");
  ::close(fd);
  explicit_bzero(storage, sizeof storage);
  if (::sethostname(argv[1], std::strlen(argv[1])) != 0) return Fail("sethostname");
  return 0;
}
