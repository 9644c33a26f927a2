// Socket backend, in one process: connection order, partial and non-blocking I/O, truthful
// DataReady/BufferSpace, EOF, Wait/PollFd, connect timeout. Cross-process cases (peer
// death, hostile peers, 1 GiB transfer, C ABI) live in tests/vchan/.
#include "hal/vchan/socket/socket_vchan.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "hal/vchan/testing/helpers.h"
#include "hal/vchan/testing/temp_dir.h"

namespace odyssey::vchan {
namespace {

using std::chrono::milliseconds;
using testing::Carry;
using testing::SocketOpts;
using testing::TempDir;

// Upper bound for "this must happen": never reached unless the code under test is broken.
constexpr int kSafetyMs = 30000;

constexpr int kServerDom = 0;
constexpr int kClientDom = 7;

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

struct Pair {
  VchanPtr server;
  VchanPtr client;
};

Pair Connect(const TempDir& dir, int port, const Options& extra = {}) {
  Options so = SocketOpts(dir, kServerDom);
  so.write_min = extra.write_min;
  so.read_min = extra.read_min;
  auto s = Vchan::Server(kClientDom, port, so);
  EXPECT_TRUE(s.ok()) << s.error().message;
  auto c = Vchan::Client(kServerDom, port, SocketOpts(dir, kClientDom));
  EXPECT_TRUE(c.ok()) << c.error().message;
  if (!s.ok() || !c.ok()) return {};
  return {std::move(s.value()), std::move(c.value())};
}

TEST(SocketVchan, ServerFirst) {
  TempDir dir;
  auto s = Vchan::Server(kClientDom, 600, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string path = SocketPath(dir.path(), kServerDom, kClientDom, 600);
  EXPECT_TRUE(Exists(path));
  EXPECT_EQ((*s)->GetState(), State::kWaiting);
  EXPECT_EQ((*s)->DataReady(), 0u);

  auto c = Vchan::Client(kServerDom, 600, SocketOpts(dir, kClientDom));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ((*c)->GetState(), State::kConnected);
  ASSERT_EQ(Carry(**c, **s, "ping"), "ping");
  EXPECT_EQ((*s)->GetState(), State::kConnected);
  ASSERT_EQ(Carry(**s, **c, "pong"), "pong");
  // Exactly one connection: the name is gone once accepted.
  EXPECT_FALSE(Exists(path));
}

TEST(SocketVchan, ClientFirstRetriesUntilServerAppears) {
  TempDir dir;
  std::atomic<bool> started{false};
  Result<VchanPtr> client = Error{"not run", -1};
  std::thread t([&] {
    started = true;
    client = Vchan::Client(kServerDom, 601, SocketOpts(dir, kClientDom));
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(milliseconds(30));  // let it find nothing a few times
  auto s = Vchan::Server(kClientDom, 601, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok()) << s.error().message;
  t.join();
  ASSERT_TRUE(client.ok()) << client.error().message;
  EXPECT_EQ(Carry(**s, **client, "hello"), "hello");
}

TEST(SocketVchan, ClientFirstDataBeforeAccept) {
  // The client may connect and write before the server has accepted (lazy accept).
  TempDir dir;
  auto s = Vchan::Server(kClientDom, 602, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok());
  auto c = Vchan::Client(kServerDom, 602, SocketOpts(dir, kClientDom));
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Send("early", 5).ok());
  ASSERT_TRUE(Readable((*s)->PollFd(), kSafetyMs));  // the pending connection
  char buf[5];
  ASSERT_TRUE((*s)->Recv(buf, 5).ok());
  EXPECT_EQ(std::string(buf, 5), "early");
}

TEST(SocketVchan, AsyncClientCompletesThroughPollFd) {
  TempDir dir;
  auto c = Vchan::ClientAsync(kServerDom, 603, SocketOpts(dir, kClientDom));
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ((*c)->GetState(), State::kWaiting);
  const int fd = (*c)->PollFd();
  auto s = Vchan::Server(kClientDom, 603, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok());
  // The retry tick makes PollFd readable; each GetState() makes progress.
  while ((*c)->GetState() == State::kWaiting) ASSERT_TRUE(Readable(fd, kSafetyMs));
  EXPECT_EQ((*c)->GetState(), State::kConnected);
  EXPECT_EQ((*c)->PollFd(), fd);  // stable across the connection
  ASSERT_TRUE((*c)->Send("x", 1).ok());
  char b;
  ASSERT_TRUE((*s)->Recv(&b, 1).ok());
  EXPECT_EQ(b, 'x');
}

TEST(SocketVchan, ConnectTimeoutHonoured) {
  TempDir dir;
  Options o = SocketOpts(dir, kClientDom);
  o.connect_timeout = milliseconds(50);
  auto c = Vchan::Client(kServerDom, 604, o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, ETIMEDOUT);

  // A stale socket file (nobody listening) is "refused": retried, then timed out.
  const std::string path = SocketPath(dir.path(), kServerDom, kClientDom, 604);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
  auto c2 = Vchan::Client(kServerDom, 604, o);
  ASSERT_FALSE(c2.ok());
  EXPECT_EQ(c2.error().code, ETIMEDOUT);

  // Async: reported through the state, not a hang.
  auto a = Vchan::ClientAsync(kServerDom, 605, o);
  ASSERT_TRUE(a.ok());
  while ((*a)->GetState() == State::kWaiting) ASSERT_TRUE(Readable((*a)->PollFd(), kSafetyMs));
  EXPECT_EQ((*a)->GetState(), State::kClosed);
  EXPECT_FALSE((*a)->Wait().ok());
  EXPECT_TRUE(Readable((*a)->PollFd(), 0));  // stays readable: the failure is the event
}

TEST(SocketVchan, PartialReads) {
  TempDir dir;
  Pair p = Connect(dir, 610);
  ASSERT_TRUE(p.server && p.client);
  ASSERT_TRUE(p.server->Send("0123456789", 10).ok());
  char buf[16];
  auto n = p.client->Read(buf, 4);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 4u);
  EXPECT_EQ(std::string(buf, 4), "0123");
  EXPECT_EQ(p.client->DataReady(), 6u);
  n = p.client->Read(buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 6u);
  EXPECT_EQ(std::string(buf, 6), "456789");
  p.client->SetNonBlocking(true);
  n = p.client->Read(buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0u);
}

TEST(SocketVchan, PartialWritesWhenFull) {
  TempDir dir;
  Pair p = Connect(dir, 611);
  ASSERT_TRUE(p.server && p.client);
  p.client->SetNonBlocking(true);
  std::vector<char> chunk(1 << 20, 'a');
  size_t total = 0;
  bool saw_partial = false;
  for (int i = 0; i < 64; ++i) {
    auto n = p.client->Write(chunk.data(), chunk.size());
    ASSERT_TRUE(n.ok()) << n.error().message;
    if (*n < chunk.size()) saw_partial = true;
    total += *n;
    if (*n == 0) break;
  }
  EXPECT_TRUE(saw_partial);
  EXPECT_GT(total, 0u);
  EXPECT_EQ(p.client->BufferSpace(), 0u);
  // Everything written arrives, in order.
  std::vector<char> in(total);
  ASSERT_TRUE(p.server->Recv(in.data(), in.size()).ok());
  EXPECT_EQ(std::count(in.begin(), in.end(), 'a'), static_cast<long>(total));
}

TEST(SocketVchan, DataReadyAndBufferSpaceAreTruthful) {
  TempDir dir;
  Pair p = Connect(dir, 612);
  ASSERT_TRUE(p.server && p.client);
  const size_t empty_space = p.client->BufferSpace();
  EXPECT_GE(empty_space, 64u * 1024);

  // DataReady: exactly what the peer sent.
  std::vector<char> data(10000, 'd');
  ASSERT_TRUE(p.server->Send(data.data(), data.size()).ok());
  EXPECT_EQ(p.client->DataReady(), data.size());
  std::vector<char> in(data.size());
  ASSERT_TRUE(p.client->Recv(in.data(), in.size()).ok());
  EXPECT_EQ(p.client->DataReady(), 0u);

  // BufferSpace: a non-blocking write of that many bytes always goes through whole,
  // until the space runs out; it never over-promises.
  p.client->SetNonBlocking(true);
  std::vector<char> out(8 << 20, 'w');
  size_t written = 0;
  for (int i = 0; i < 1000; ++i) {
    size_t space = p.client->BufferSpace();
    if (space == 0) break;
    // Vary the write sizes: one big write, then small ones.
    size_t len = (i % 2 == 0) ? space : std::min<size_t>(space, 100 + i);
    auto n = p.client->Write(out.data(), len);
    ASSERT_TRUE(n.ok());
    ASSERT_EQ(*n, len) << "BufferSpace promised " << space << " at step " << i;
    written += len;
  }
  EXPECT_EQ(p.client->BufferSpace(), 0u);
  EXPECT_EQ(p.server->DataReady(), written);
  std::vector<char> sink(written);
  ASSERT_TRUE(p.server->Recv(sink.data(), sink.size()).ok());
  EXPECT_EQ(p.client->BufferSpace(), empty_space);
}

// Whether this process may raise a socket's send buffer to `bytes` (root, or wmem_max).
bool CanRaiseSndbuf(int bytes) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return false;
  int half = bytes / 2;
  bool ok = ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &half, sizeof half) == 0;
  if (!ok) {
    (void)::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &half, sizeof half);
    int got = 0;
    socklen_t len = sizeof got;
    ok = ::getsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &got, &len) == 0 && got >= bytes;
  }
  ::close(sv[0]);
  ::close(sv[1]);
  return ok;
}

TEST(SocketVchan, WriteMinRaisesBufferSpace) {
  if (!CanRaiseSndbuf(2 << 20)) {
    GTEST_SKIP() << "not allowed to raise SO_SNDBUF to 2 MiB (no CAP_NET_ADMIN, low wmem_max)";
  }
  TempDir dir;
  Options extra;
  extra.write_min = 1 << 20;
  Pair p = Connect(dir, 613, extra);
  ASSERT_TRUE(p.server && p.client);
  EXPECT_GE(p.server->BufferSpace(), size_t{1} << 20);
}

TEST(SocketVchan, EofSeenByBothSidesAfterData) {
  TempDir dir;
  Pair p = Connect(dir, 614);
  ASSERT_TRUE(p.server && p.client);
  ASSERT_TRUE(p.client->Send("bye", 3).ok());
  p.client->Close();
  EXPECT_EQ(p.client->GetState(), State::kClosed);
  // The server sees the close but still gets the data sent before it.
  EXPECT_EQ(p.server->GetState(), State::kClosed);
  EXPECT_EQ(p.server->DataReady(), 3u);
  char buf[8];
  auto n = p.server->Read(buf, sizeof buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "bye");
  n = p.server->Read(buf, sizeof buf);
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(IsPeerClosed(n.error()));
  EXPECT_FALSE(p.server->Recv(buf, 1).ok());
  // Writing to a closed peer is an error, not SIGPIPE (default action would kill us).
  auto old = ::signal(SIGPIPE, SIG_DFL);
  EXPECT_FALSE(p.server->Send("x", 1).ok());
  EXPECT_FALSE(p.server->Write("x", 1).ok());
  ::signal(SIGPIPE, old);
  EXPECT_EQ(p.server->BufferSpace(), 0u);
  // Local use after Close() is an error too.
  EXPECT_FALSE(p.client->Send("x", 1).ok());
  EXPECT_FALSE(p.client->Read(buf, 1).ok());
  p.client->Close();  // idempotent
}

TEST(SocketVchan, WaitAndPollFdReportEvents) {
  TempDir dir;
  Pair p = Connect(dir, 615);
  ASSERT_TRUE(p.server && p.client);
  const int fd = p.client->PollFd();
  EXPECT_FALSE(Readable(fd, 0));
  auto w = p.client->WaitFor(milliseconds(0));
  ASSERT_TRUE(w.ok());
  EXPECT_FALSE(*w);
  ASSERT_TRUE(p.server->Send("e", 1).ok());
  EXPECT_TRUE(Readable(fd, kSafetyMs));
  ASSERT_TRUE(p.client->Wait().ok());
  char b;
  ASSERT_TRUE(p.client->Recv(&b, 1).ok());

  // Space freed by the reader is an edge that wakes a waiting writer.
  p.server->SetNonBlocking(true);
  std::vector<char> big(4 << 20, 'z');
  size_t queued = 0;
  while (true) {
    auto n = p.server->Write(big.data(), big.size());
    ASSERT_TRUE(n.ok());
    if (*n == 0) break;
    queued += *n;
  }
  while (p.server->WaitFor(milliseconds(0)).value()) {
  }  // consume what is pending
  EXPECT_FALSE(Readable(p.server->PollFd(), 0));
  std::thread reader([&] {
    std::vector<char> sink(queued);
    EXPECT_TRUE(p.client->Recv(sink.data(), sink.size()).ok());
  });
  ASSERT_TRUE(p.server->Wait().ok());
  reader.join();
  EXPECT_GT(p.server->BufferSpace(), 0u);

  // Peer close makes PollFd readable and Wait return.
  p.client->Close();
  EXPECT_TRUE(Readable(p.server->PollFd(), kSafetyMs));
  ASSERT_TRUE(p.server->Wait().ok());
  EXPECT_EQ(p.server->GetState(), State::kClosed);
}

TEST(SocketVchan, ServerCloseBeforeClientCleansUp) {
  TempDir dir;
  auto s = Vchan::Server(kClientDom, 616, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok());
  const std::string path = SocketPath(dir.path(), kServerDom, kClientDom, 616);
  EXPECT_TRUE(Exists(path));
  const int fd = (*s)->PollFd();
  (*s)->Close();
  EXPECT_FALSE(Exists(path));
  EXPECT_TRUE(Readable(fd, 0));
  EXPECT_EQ((*s)->GetState(), State::kClosed);
}

TEST(SocketVchan, CloseFromAnotherThreadWakesBlockedCalls) {
  TempDir dir;
  Pair p = Connect(dir, 617);
  ASSERT_TRUE(p.server && p.client);
  std::atomic<bool> returned{false};
  std::thread t([&] {
    char b;
    auto n = p.client->Read(&b, 1);
    EXPECT_FALSE(n.ok());
    returned = true;
  });
  std::this_thread::sleep_for(milliseconds(20));
  p.client->Close();
  t.join();
  EXPECT_TRUE(returned);

  // A server blocked waiting for its client is woken by Close() too.
  auto s = Vchan::Server(kClientDom, 618, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s.ok());
  std::thread t2([&] { EXPECT_FALSE((*s)->Wait().ok() && (*s)->IsOpen()); });
  std::this_thread::sleep_for(milliseconds(20));
  (*s)->Close();
  t2.join();
}

TEST(SocketVchan, ReplacedServerKeepsNewSocket) {
  // A second server on the same port replaces the first one's name; the first one's
  // Close() must not unlink the second one's socket.
  TempDir dir;
  auto s1 = Vchan::Server(kClientDom, 619, SocketOpts(dir, kServerDom));
  auto s2 = Vchan::Server(kClientDom, 619, SocketOpts(dir, kServerDom));
  ASSERT_TRUE(s1.ok() && s2.ok());
  (*s1)->Close();
  EXPECT_TRUE(Exists(SocketPath(dir.path(), kServerDom, kClientDom, 619)));
  auto c = Vchan::Client(kServerDom, 619, SocketOpts(dir, kClientDom));
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE((*c)->Send("2", 1).ok());
  char b;
  ASSERT_TRUE((*s2)->Recv(&b, 1).ok());
}

TEST(SocketVchan, FromConnectedSocketpair) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  auto a = SocketVchan::FromConnectedSocket(UniqueFd(sv[0]));
  auto b = SocketVchan::FromConnectedSocket(UniqueFd(sv[1]));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(Carry(**a, **b, "sp"), "sp");
}

TEST(SocketVchan, PathTooLongIsAnError) {
  Options o;
  o.backend = Backend::kSocket;
  o.socket_dir = "/tmp/" + std::string(200, 'x');
  auto s = Vchan::Server(1, 1, o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ENAMETOOLONG);
}

}  // namespace
}  // namespace odyssey::vchan
