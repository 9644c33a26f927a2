// virtio-serial backend with a pseudo-terminal standing in for the port device: the
// vchan opens <dir>/org.odyssey.vchan.<port> (a symlink to the pty slave), the test
// plays the host on the master side.
#include "hal/vchan/virtio/virtio_vchan.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#include <string>

#include "hal/vchan/testing/temp_dir.h"

namespace odyssey::vchan {
namespace {

using std::chrono::milliseconds;
using testing::TempDir;

constexpr int kSafetyMs = 30000;

// The "host" end: a pty master, with the slave linked where the port device would be.
class FakePort {
 public:
  FakePort(const std::string& dir, int port) {
    master_.reset(::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    if (!master_ || ::grantpt(master_.get()) != 0 || ::unlockpt(master_.get()) != 0) return;
    termios t;
    if (::tcgetattr(master_.get(), &t) == 0) {
      ::cfmakeraw(&t);
      ::tcsetattr(master_.get(), TCSANOW, &t);
    }
    const char* slave = ::ptsname(master_.get());
    if (slave == nullptr) return;
    ok_ = ::symlink(slave, VirtioPortPath(dir, port).c_str()) == 0;
  }
  bool ok() const { return ok_; }
  int fd() const { return master_.get(); }
  void Close() { master_.reset(); }

 private:
  UniqueFd master_;
  bool ok_ = false;
};

Options Opts(const TempDir& dir) {
  Options o;
  o.backend = Backend::kVirtioSerial;
  o.virtio_dir = dir.path();
  return o;
}

std::string ReadN(int fd, size_t n) {
  std::string out;
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, kSafetyMs) != 1) break;
    char buf[256];
    ssize_t r = ::read(fd, buf, std::min(sizeof buf, n - out.size()));
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

TEST(VirtioVchan, MissingDeviceIsAnError) {
  TempDir dir;
  auto v = Vchan::Server(0, 800, Opts(dir));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code, ENOENT);
}

TEST(VirtioVchan, BytesBothWaysOverStandInDevice) {
  TempDir dir;
  FakePort host(dir.path(), 801);
  if (!host.ok()) GTEST_SKIP() << "no pseudo-terminal available (/dev/ptmx)";
  auto v = Vchan::Server(0, 801, Opts(dir));  // guest side: server and client both open
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ((*v)->GetState(), State::kConnected);
  EXPECT_GT((*v)->BufferSpace(), 0u);

  ASSERT_TRUE((*v)->Send("to-host", 7).ok());
  EXPECT_EQ(ReadN(host.fd(), 7), "to-host");

  ASSERT_EQ(::write(host.fd(), "to-guest", 8), 8);
  ASSERT_TRUE((*v)->Wait().ok());
  char buf[8];
  ASSERT_TRUE((*v)->Recv(buf, 8).ok());
  EXPECT_EQ(std::string(buf, 8), "to-guest");

  // Partial reads, and DataReady once the bytes have arrived.
  ASSERT_EQ(::write(host.fd(), "0123456789", 10), 10);
  while ((*v)->DataReady() < 10) ASSERT_TRUE((*v)->WaitFor(milliseconds(kSafetyMs)).value());
  EXPECT_EQ((*v)->DataReady(), 10u);
  auto n = (*v)->Read(buf, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "0123");
  (*v)->SetNonBlocking(true);
  n = (*v)->Read(buf, 8);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "456789");
  n = (*v)->Read(buf, 8);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST(VirtioVchan, HostHangupIsPeerClose) {
  TempDir dir;
  FakePort host(dir.path(), 802);
  if (!host.ok()) GTEST_SKIP() << "no pseudo-terminal available (/dev/ptmx)";
  auto v = Vchan::Client(0, 802, Opts(dir));
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ((*v)->GetState(), State::kConnected);
  host.Close();
  char b;
  auto n = (*v)->Read(&b, 1);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(IsPeerClosed(n.error())) << n.error().message;
  EXPECT_EQ((*v)->GetState(), State::kClosed);
  EXPECT_FALSE((*v)->Send("x", 1).ok());
  const int fd = (*v)->PollFd();
  (*v)->Close();
  pollfd p{fd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1);  // still a valid, readable descriptor
  EXPECT_FALSE((*v)->Read(&b, 1).ok());
}

}  // namespace
}  // namespace odyssey::vchan
