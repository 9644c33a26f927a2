// The C ABI across processes: plain C programs built only against libvchan.h talk to each
// other and to the C++ API (issue #2: "a C test program using only libvchan.h functions
// talks to the C++ API across processes").
#include <gtest/gtest.h>

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
using testing::Spawn;
using testing::TempDir;
using testing::WaitChild;

constexpr int kHostDom = 0;
constexpr int kGuestDom = 9;

std::vector<std::string> Env(const TempDir& dir, int own) {
  return {"VCHAN_SOCKET_DIR=" + dir.path(), "VCHAN_DOMAIN=" + std::to_string(own),
          "VCHAN_BACKEND=socket"};
}

unsigned char Pattern(long i) { return static_cast<unsigned char>((i * 7 + i / 251) & 0xff); }

TEST(VchanCAbi, CServerAndCppClient) {
  TempDir dir;
  pid_t server = Spawn({VCHAN_C_ECHO_SERVER, std::to_string(kGuestDom), "700"}, Env(dir, kHostDom));
  ASSERT_GT(server, 0);
  auto c = Vchan::Client(kHostDom, 700, SocketOpts(dir, kGuestDom));
  ASSERT_TRUE(c.ok()) << c.error().message;
  std::string msg(100000, '\0');
  for (size_t i = 0; i < msg.size(); ++i) msg[i] = static_cast<char>(Pattern(static_cast<long>(i)));
  // Send in pieces while reading the echo, so neither direction fills up.
  std::string echo(msg.size(), '\0');
  size_t sent = 0, got = 0;
  while (got < msg.size()) {
    if (sent < msg.size() && sent - got < 16384) {
      size_t len = std::min<size_t>(4096, msg.size() - sent);
      ASSERT_TRUE((*c)->Send(msg.data() + sent, len).ok());
      sent += len;
      continue;
    }
    auto n = (*c)->Read(echo.data() + got, echo.size() - got);
    ASSERT_TRUE(n.ok()) << n.error().message;
    got += *n;
  }
  EXPECT_EQ(echo, msg);
  (*c)->Close();
  EXPECT_EQ(WaitChild(server), 0);
}

TEST(VchanCAbi, CppServerAndCClient) {
  TempDir dir;
  auto s = Vchan::Server(kGuestDom, 701, SocketOpts(dir, kHostDom));
  ASSERT_TRUE(s.ok()) << s.error().message;
  pid_t client = Spawn({VCHAN_C_ECHO_CLIENT, std::to_string(kHostDom), "701", "50000"},
                       Env(dir, kGuestDom));
  ASSERT_GT(client, 0);
  // Echo until the C client closes.
  char buf[4096];
  for (;;) {
    auto n = (*s)->Read(buf, sizeof buf);
    if (!n.ok()) {
      EXPECT_TRUE(IsPeerClosed(n.error())) << n.error().message;
      break;
    }
    ASSERT_TRUE((*s)->Send(buf, *n).ok());
  }
  EXPECT_EQ(WaitChild(client), 0);
  EXPECT_EQ((*s)->GetState(), State::kClosed);
}

TEST(VchanCAbi, CServerAndAsyncCClient) {
  TempDir dir;
  // Client first (async, select on the watch fd), then the server.
  pid_t client = Spawn({VCHAN_C_ECHO_CLIENT, std::to_string(kHostDom), "702", "300000", "async"},
                       Env(dir, kGuestDom));
  ASSERT_GT(client, 0);
  pid_t server = Spawn({VCHAN_C_ECHO_SERVER, std::to_string(kGuestDom), "702"}, Env(dir, kHostDom));
  ASSERT_GT(server, 0);
  EXPECT_EQ(WaitChild(client), 0);
  EXPECT_EQ(WaitChild(server), 0);
}

TEST(VchanCAbi, CClientFailsCleanlyWhenServerDies) {
  TempDir dir;
  // A C++ server that accepts, reads a little and dies: the C client must exit with an
  // error code, not crash or hang.
  pid_t server = ForkChild([&] {
    auto s = Vchan::Server(kGuestDom, 703, SocketOpts(dir, kHostDom));
    if (!s.ok()) return 1;
    char b[16];
    (void)(*s)->Recv(b, sizeof b);
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  pid_t client = Spawn({VCHAN_C_ECHO_CLIENT, std::to_string(kHostDom), "703", "10000000"},
                       Env(dir, kGuestDom));
  ASSERT_GT(client, 0);
  EXPECT_EQ(WaitChild(server), 128 + SIGKILL);
  int code = WaitChild(client);
  EXPECT_GT(code, 0);
  EXPECT_LT(code, 64) << "killed by a signal?";
}

}  // namespace
}  // namespace odyssey::vchan
