// Peers in other processes that die, close, or misbehave: the surviving side sees an
// error or kClosed, never a crash, a hang or SIGPIPE.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hal/vchan/testing/helpers.h"
#include "hal/vchan/testing/temp_dir.h"
#include "hal/vchan/vchan.h"
#include "tests/vchan/process_util.h"

namespace odyssey::vchan {
namespace {

using testing::ForkChild;
using testing::SocketOpts;
using testing::TempDir;
using testing::WaitChild;

constexpr int kHostDom = 0;
constexpr int kGuestDom = 4;

// SIGPIPE's default action kills: keep it default while a test runs, so a raised SIGPIPE
// fails the test instead of going unnoticed.
class PeerFailure : public ::testing::Test {
 protected:
  void SetUp() override { old_ = ::signal(SIGPIPE, SIG_DFL); }
  void TearDown() override { ::signal(SIGPIPE, old_); }
  sighandler_t old_;
};

// A raw Unix-socket client (no vchan library) for hostile-peer cases.
int RawConnect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) ::usleep(1000);
  return fd;
}

TEST_F(PeerFailure, ClientKilledSeenByServer) {
  TempDir dir;
  auto s = Vchan::Server(kGuestDom, 720, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(s.ok());
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ForkChild([&] {
    auto c = Vchan::Client(kHostDom, 720, SocketOpts(dir, kGuestDom));
    if (!c.ok()) return 1;
    if (!(*c)->Send("abc", 3).ok()) return 2;
    (void)!::write(ready[1], "r", 1);
    ::pause();  // killed here
    return 0;
  });
  char b[8];
  ASSERT_TRUE((*s)->Recv(b, 3).ok());
  ASSERT_EQ(::read(ready[0], b, 1), 1);
  ::kill(child, SIGKILL);
  EXPECT_EQ(WaitChild(child), 128 + SIGKILL);
  auto n = (*s)->Read(b, sizeof b);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ((*s)->GetState(), State::kClosed);
  EXPECT_FALSE((*s)->Send("x", 1).ok());
  EXPECT_EQ((*s)->BufferSpace(), 0u);
  ASSERT_TRUE((*s)->Wait().ok());  // an event (the close), not a hang
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST_F(PeerFailure, ServerKilledMidStreamSeenByBlockedClient) {
  TempDir dir;
  pid_t child = ForkChild([&] {
    auto s = Vchan::Server(kHostDom, 721, SocketOpts(dir, kGuestDom));
    if (!s.ok()) return 1;
    std::vector<char> half(300000, 'h');
    if (!(*s)->Send(half.data(), half.size()).ok()) return 2;
    ::kill(::getpid(), SIGKILL);  // vanishes mid-message
    return 0;
  });
  auto c = Vchan::Client(kGuestDom, 721, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(c.ok()) << c.error().message;
  std::vector<char> whole(600000);
  Status st = (*c)->Recv(whole.data(), whole.size());  // promised more than it sent
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(WaitChild(child), 128 + SIGKILL);
  EXPECT_EQ((*c)->GetState(), State::kClosed);
  EXPECT_FALSE((*c)->Send("x", 1).ok());
}

TEST_F(PeerFailure, WriterBlockedOnFullBufferSeesPeerDeath) {
  TempDir dir;
  pid_t child = ForkChild([&] {
    auto c = Vchan::Client(kHostDom, 722, SocketOpts(dir, kGuestDom));
    if (!c.ok()) return 1;
    char b;
    (void)(*c)->Recv(&b, 1);  // reads one byte, then dies without draining
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  auto s = Vchan::Server(kGuestDom, 722, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(s.ok());
  std::vector<char> big(64 << 20, 'b');
  Status st = (*s)->Send(big.data(), big.size());  // blocks on a full buffer, then EPIPE
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(WaitChild(child), 128 + SIGKILL);
  EXPECT_EQ((*s)->GetState(), State::kClosed);
}

TEST_F(PeerFailure, HostileClientGarbageAndVanish) {
  TempDir dir;
  const std::string path = SocketPath(dir.path(), kHostDom, kGuestDom, 723);
  auto s = Vchan::Server(kGuestDom, 723, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(s.ok());
  pid_t child = ForkChild([&] {
    int fd = RawConnect(path);
    std::mt19937_64 rng(723);
    std::vector<unsigned char> junk(1 << 20);
    for (auto& c : junk) c = static_cast<unsigned char>(rng());
    // Garbage in odd-sized bursts, then an abrupt exit with our own input unread
    // (which turns the close into a reset).
    size_t off = 0;
    for (size_t len = 1; off < junk.size(); len = len * 3 + 1) {
      len = std::min(len, junk.size() - off);
      if (::send(fd, junk.data() + off, len, MSG_NOSIGNAL) < 0) break;
      off += len;
    }
    ::_exit(0);
    return 0;
  });
  // Ask for more than was sent, in pieces of varying size, while writing back.
  std::vector<char> buf(1 << 16);
  size_t total = 0;
  Status last;
  for (int i = 0; i < 100000; ++i) {
    auto n = (*s)->Read(buf.data(), 1 + (i * 977) % buf.size());
    if (!n.ok()) {
      last = n.error();
      break;
    }
    total += *n;
    // Write back what fits (the peer never reads); fails once it is gone, never crashes.
    if ((*s)->BufferSpace() >= *n) (void)(*s)->Write(buf.data(), *n);
  }
  EXPECT_FALSE(last.ok());
  EXPECT_LE(total, size_t{1} << 20);
  EXPECT_EQ(WaitChild(child), 0);
  EXPECT_EQ((*s)->GetState(), State::kClosed);
}

TEST_F(PeerFailure, HostileServerAcceptsAndSlams) {
  // A raw server that accepts and closes at once; another that never accepts.
  TempDir dir;
  const std::string path = SocketPath(dir.path(), kGuestDom, kHostDom, 724);
  int lfd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  auto c = Vchan::Client(kGuestDom, 724, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(c.ok());
  ::close(::accept(lfd, nullptr, nullptr));
  char b[4];
  EXPECT_FALSE((*c)->Recv(b, 4).ok());
  EXPECT_EQ((*c)->GetState(), State::kClosed);
  std::vector<char> big(1 << 20, 'q');
  EXPECT_FALSE((*c)->Send(big.data(), big.size()).ok());

  // Never accepted, then the listener goes away: the queued client sees the close.
  auto c2 = Vchan::Client(kGuestDom, 724, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ((*c2)->GetState(), State::kConnected);
  ::close(lfd);
  EXPECT_FALSE((*c2)->Recv(b, 1).ok());
  EXPECT_EQ((*c2)->GetState(), State::kClosed);
}

TEST_F(PeerFailure, ServerNeverAcceptsSecondClient) {
  // Exactly one connection: after the first client, the name is gone, so a second client
  // times out instead of being queued behind it.
  TempDir dir;
  auto s = Vchan::Server(kGuestDom, 725, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(s.ok());
  auto c1 = Vchan::Client(kHostDom, 725, SocketOpts(dir, kGuestDom));
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ((*s)->GetState(), State::kConnected);
  Options o = SocketOpts(dir, kGuestDom);
  o.connect_timeout = std::chrono::milliseconds(30);
  auto c2 = Vchan::Client(kHostDom, 725, o);
  ASSERT_FALSE(c2.ok());
  EXPECT_EQ(c2.error().code, ETIMEDOUT);
}

}  // namespace
}  // namespace odyssey::vchan
