// A tiny stand-in for qrexec-agent, run inside test VMs (statically linked, no sanitizers):
// it is the vchan server on control port 512 over virtio-serial and speaks just enough of
// the qrexec framing for the VM tests and benchmarks. Whenever the host side connects it
// sends MSG_HELLO first; then each MSG_DATA_STDIN is answered with MSG_DATA_STDOUT (the
// kernel release for "uname -r", else the bytes back) and MSG_DATA_EXIT_CODE 0. When the
// host disconnects (for example before a memory snapshot) it waits for the next host and
// says HELLO again, which is what makes a restored clone answer its new host.
// It never trusts the host's lengths: payloads over 64 KiB end the connection.
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr uint32_t kMsgDataStdin = 0x190;
constexpr uint32_t kMsgDataStdout = 0x191;
constexpr uint32_t kMsgDataExitCode = 0x193;
constexpr uint32_t kMsgHello = 0x300;
constexpr uint32_t kProtocolVersion = 3;
constexpr uint32_t kMaxPayload = 64 * 1024;

struct MsgHeader {
  uint32_t type;
  uint32_t len;
};
static_assert(sizeof(MsgHeader) == 8);

// Writes all bytes; false on error (host gone).
bool WriteAll(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Reads exactly len bytes; false on EOF (host disconnected) or error.
bool ReadExact(int fd, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool SendMsg(int fd, uint32_t type, const void* body, uint32_t len) {
  MsgHeader h{type, len};
  std::string frame(reinterpret_cast<const char*>(&h), sizeof h);
  frame.append(static_cast<const char*>(body), len);
  return WriteAll(fd, frame.data(), frame.size());
}

std::string KernelRelease() {
  struct utsname u;
  if (uname(&u) != 0) return "unknown";
  return std::string(u.release) + "\n";
}

// Serves one host connection until it goes away.
void ServeHost(int fd) {
  for (;;) {
    MsgHeader untrusted_h;
    if (!ReadExact(fd, &untrusted_h, sizeof untrusted_h)) return;
    if (untrusted_h.len > kMaxPayload) return;
    std::vector<char> untrusted_body(untrusted_h.len);
    if (untrusted_h.len > 0 && !ReadExact(fd, untrusted_body.data(), untrusted_h.len)) return;
    if (untrusted_h.type == kMsgHello) continue;
    if (untrusted_h.type != kMsgDataStdin) return;
    std::string in(untrusted_body.begin(), untrusted_body.end());
    std::string out = in == "uname -r" ? KernelRelease() : in;
    int32_t exit_code = 0;
    if (!SendMsg(fd, kMsgDataStdout, out.data(), static_cast<uint32_t>(out.size())) ||
        !SendMsg(fd, kMsgDataExitCode, &exit_code, sizeof exit_code)) {
      return;
    }
  }
}

}  // namespace

int main() {
  const char* dir = std::getenv("VCHAN_VIRTIO_DIR");
  std::string path = std::string(dir ? dir : "/dev/virtio-ports") + "/org.odyssey.vchan.512";
  int fd = -1;
  while ((fd = open(path.c_str(), O_RDWR | O_CLOEXEC)) < 0) {
    std::fprintf(stderr, "test-agent: open %s: %s\n", path.c_str(), std::strerror(errno));
    sleep(1);
  }
  std::fprintf(stderr, "test-agent: serving %s\n", path.c_str());
  for (;;) {
    uint32_t version = kProtocolVersion;
    // Blocks until a host is connected to the port (virtio_console semantics).
    if (!SendMsg(fd, kMsgHello, &version, sizeof version)) {
      usleep(10000);
      continue;
    }
    ServeHost(fd);
  }
}
