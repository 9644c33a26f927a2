// qrexec-policy-daemon as a real process on a real Unix socket: normal requests, malformed,
// huge, truncated, slow and concurrent ones, reload on change, audit, clean shutdown.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include <sqlite3.h>

#include <gtest/gtest.h>

#include "qrexec/policy/testing/fixture_catalog.h"
#include "qrexec/policy/testing/temp_dir.h"
#include "tests/policy/process.h"

namespace odyssey::qrexec::policy {
namespace {

using testing::TempDir;

int Connect(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the daemon may have answered and closed already
    data.remove_prefix(static_cast<size_t>(n));
  }
}

std::string ReadToEof(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

std::string Req(const std::string& source, const std::string& target, const std::string& service,
                const std::string& extra = "") {
  return "source=" + source + "\nintended_target=" + target + "\nservice_and_arg=" + service + "\n" + extra + "\n";
}

constexpr const char* kPolicy =
    "qubes.Foo * work vault allow\n"
    "qubes.Foo * work @dispvm allow\n"
    "qubes.Ask * work vault ask\n"
    "qubes.Run * @adminvm @default allow target=@dispvm user=root autostart=no\n"
    "* * * * deny\n";

class DaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.Write("catalog.json", testing::kFixtureCatalogJson);
    dir_.Write("policy.d/50-test.policy", kPolicy);
    socket_ = dir_ / "policy.sock";
  }
  void TearDown() override {
    if (pid_ > 0) Stop();
  }

  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {ODYSSEY_POLICY_DAEMON_BIN, "--socket-path", socket_,
                                     "--policy-dir", dir_ / "policy.d", "--catalog", dir_ / "catalog.json",
                                     "--audit-log", dir_ / "audit.db"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = testing::Spawn(argv, testing::BaseEnv(), dir_ / "daemon.out", dir_ / "daemon.err");
    ASSERT_GT(pid_, 0);
    // Ready once it accepts connections; give up if it exits.
    for (int i = 0; i < 3000; ++i) {
      int fd = Connect(socket_);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL() << "daemon exited: " << testing::Slurp(dir_ / "daemon.err");
      }
      ::usleep(10000);
    }
    FAIL() << "daemon never listened: " << testing::Slurp(dir_ / "daemon.err");
  }

  int Stop() {
    ::kill(pid_, SIGTERM);
    int code = testing::Wait(pid_);
    pid_ = -1;
    return code;
  }

  std::string Ask(std::string_view request) {
    int fd = Connect(socket_);
    if (fd < 0) return "<connect failed>";
    SendAll(fd, request);
    std::string reply = ReadToEof(fd);
    ::close(fd);
    return reply;
  }

  int AuditRows() {
    sqlite3* db = nullptr;
    int count = -1;
    if (sqlite3_open_v2((dir_ / "audit.db").c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT count(*) FROM decisions", -1, &stmt, nullptr) == SQLITE_OK &&
          sqlite3_step(stmt) == SQLITE_ROW) {
        count = sqlite3_column_int(stmt, 0);
      }
      sqlite3_finalize(stmt);
    }
    sqlite3_close(db);
    return count;
  }

  const std::string kAllowVault =
      "result=allow\ntarget=vault\ntarget_uuid=22222222-2222-4222-8222-222222222222\nautostart=True\n"
      "requested_target=vault\n";

  TempDir dir_;
  std::string socket_;
  pid_t pid_ = -1;
};

TEST_F(DaemonTest, AllowReply) {
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, DenyReply) {
  Start();
  EXPECT_EQ(Ask(Req("personal", "vault", "qubes.Foo+")), "result=deny\n");
}

TEST_F(DaemonTest, DispVmReply) {
  Start();
  EXPECT_EQ(Ask(Req("work", "@dispvm", "qubes.Foo+x")),
            "result=allow\ntarget=@dispvm:default-dvm\nautostart=True\nrequested_target=@dispvm\n");
}

TEST_F(DaemonTest, RedirectWithUserAndAutostart) {
  Start();
  EXPECT_EQ(Ask(Req("dom0", "", "qubes.Run+", "domain_id=0\nprocess_ident=1 0\n")),
            "result=allow\ntarget=@dispvm:default-dvm\nautostart=False\nrequested_target=@default\nuser=root\n");
}

TEST_F(DaemonTest, AskWithoutDisplayDenies) {
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Ask+")), "result=deny\n");
  EXPECT_NE(testing::Slurp(dir_ / "daemon.err").find("no prompt can be shown"), std::string::npos);
}

TEST_F(DaemonTest, AskAssumeYes) {
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Ask+", "assume_yes_for_ask=yes\n")), kAllowVault);
}

TEST_F(DaemonTest, AskJustEvaluateDenies) {
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Ask+", "just_evaluate=yes\n")), "result=deny\n");
}

TEST_F(DaemonTest, AskProgramAllows) {
  std::string prog = dir_.Write("bin/yes", "#!/bin/sh\nexit 0\n", 0755);
  Start({"--ask-program", prog});
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Ask+")), kAllowVault);
}

struct Malformed {
  const char* name;
  std::string bytes;
  const char* reply;
};

std::string MalformedName(const ::testing::TestParamInfo<Malformed>& param_info) { return param_info.param.name; }

class DaemonMalformedTest : public DaemonTest, public ::testing::WithParamInterface<Malformed> {};

TEST_P(DaemonMalformedTest, ErrorReplyAndKeepsServing) {
  Start();
  EXPECT_EQ(Ask(GetParam().bytes), GetParam().reply);
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

INSTANTIATE_TEST_SUITE_P(
    Policy, DaemonMalformedTest,
    ::testing::Values(
        Malformed{"NoEquals", "garbage\n\n", "result=deny\nerror=malformed request line 1: no '='\n"},
        Malformed{"UnknownKey", "source=work\nfoo=bar\n\n", "result=deny\nerror=malformed request line 2: unknown key 'foo'\n"},
        Malformed{"MissingService", "source=work\nintended_target=vault\n\n", "result=deny\nerror=missing service_and_arg=\n"},
        Malformed{"Repeated", "source=work\nsource=work\n\n", "result=deny\nerror=malformed request line 2: repeated key 'source'\n"},
        Malformed{"Binary", std::string("\x00\x01\x02\xff\n\n", 6), "result=deny\nerror=malformed request line 1: control or non-ASCII byte\n"},
        Malformed{"TrailingData", Req("work", "vault", "qubes.Foo+") + "source=x\n\n", "result=deny\nerror=data after the blank line\n"},
        Malformed{"InvalidService", Req("work", "vault", "qubes/Foo+"), "result=deny\n"},
        Malformed{"UnknownSource", Req("nosuch", "vault", "qubes.Foo+"), "result=deny\n"},
        Malformed{"LongValue", Req(std::string(5000, 'a'), "vault", "qubes.Foo+"), "result=deny\nerror=malformed request line 1: value too long\n"}),
    MalformedName);

TEST_F(DaemonTest, HugeRequestRefusedAndDaemonSurvives) {
  Start();
  int fd = Connect(socket_);
  ASSERT_GE(fd, 0);
  SendAll(fd, std::string(1 << 20, 'x'));
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadToEof(fd), "result=deny\nerror=request too long\n");
  ::close(fd);
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, HugeRequestWithNewlines) {
  Start();
  std::string lines;
  while (lines.size() < (256 << 10)) lines += "source=work\n";
  EXPECT_EQ(Ask(lines), "result=deny\nerror=request too long\n");
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, TruncatedRequest) {
  Start();
  int fd = Connect(socket_);
  ASSERT_GE(fd, 0);
  SendAll(fd, "source=work\nintended_target=va");
  ::shutdown(fd, SHUT_WR);
  EXPECT_EQ(ReadToEof(fd), "result=deny\nerror=truncated request (no blank line)\n");
  ::close(fd);
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, ClientVanishesMidRequest) {
  Start();
  for (int i = 0; i < 20; ++i) {
    int fd = Connect(socket_);
    ASSERT_GE(fd, 0);
    if (i % 2) SendAll(fd, "source=wo");
    ::close(fd);
  }
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, SlowClientTimesOutOthersServed) {
  Start({"--request-timeout", "1"});
  int slow = Connect(socket_);
  ASSERT_GE(slow, 0);
  SendAll(slow, "source=work\n");
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);  // served while the slow one waits
  EXPECT_EQ(ReadToEof(slow), "result=deny\nerror=request timed out\n");
  ::close(slow);
}

TEST_F(DaemonTest, OverConnectionLimitGetsBusyThenRecovers) {
  Start({"--max-connections", "1"});
  // Hold one connection open mid-request; a second one must be refused as busy. The
  // readiness probe's connection may still be finishing, so retry until the held one is
  // the connection being served.
  bool saw_busy = false;
  int held = -1;
  for (int attempt = 0; attempt < 50 && !saw_busy; ++attempt) {
    held = Connect(socket_);
    ASSERT_GE(held, 0);
    SendAll(held, "source=work\n");
    saw_busy = Ask(Req("work", "vault", "qubes.Foo+")) == "result=deny\nerror=server busy\n";
    // Connections are accepted in order, so a refusal of `held` would already be readable.
    pollfd p{held, POLLIN, 0};
    if (saw_busy && ::poll(&p, 1, 0) != 0) saw_busy = false;
    if (!saw_busy) {
      ::close(held);
      held = -1;
    }
  }
  ASSERT_TRUE(saw_busy);
  ::shutdown(held, SHUT_WR);
  EXPECT_EQ(ReadToEof(held), "result=deny\nerror=truncated request (no blank line)\n");
  ::close(held);
  std::string reply;
  for (int attempt = 0; attempt < 500 && reply != kAllowVault; ++attempt) {
    reply = Ask(Req("work", "vault", "qubes.Foo+"));
    if (reply != kAllowVault) ::usleep(10000);
  }
  EXPECT_EQ(reply, kAllowVault);
}

TEST_F(DaemonTest, ConcurrentClients) {
  Start();
  constexpr int kClients = 32;
  std::vector<std::string> replies(kClients);
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      replies[i] = Ask(i % 2 ? Req("work", "vault", "qubes.Foo+") : Req("personal", "vault", "qubes.Foo+"));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kClients; ++i) EXPECT_EQ(replies[i], i % 2 ? kAllowVault : "result=deny\n") << i;
  EXPECT_EQ(AuditRows(), kClients);
}

TEST_F(DaemonTest, ReloadsWhenPolicyChanges) {
  Start();
  EXPECT_EQ(Ask(Req("personal", "vault", "qubes.Foo+")), "result=deny\n");
  dir_.Write("policy.d/10-new.policy", "qubes.Foo * personal vault allow\n");
  EXPECT_EQ(Ask(Req("personal", "vault", "qubes.Foo+")),
            "result=allow\ntarget=vault\ntarget_uuid=22222222-2222-4222-8222-222222222222\nautostart=True\n"
            "requested_target=vault\n");
  ASSERT_EQ(::unlink((dir_ / "policy.d/10-new.policy").c_str()), 0);
  EXPECT_EQ(Ask(Req("personal", "vault", "qubes.Foo+")), "result=deny\n");
}

TEST_F(DaemonTest, BrokenPolicyDeniesThenRecovers) {
  Start();
  dir_.Write("policy.d/60-bad.policy", "qubes.Foo * work vault allow target=@anyvm\n");
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), "result=deny\n");
  EXPECT_NE(testing::Slurp(dir_ / "daemon.err").find("60-bad.policy:1:37"), std::string::npos);
  dir_.Write("policy.d/60-bad.policy", "# fixed\n");
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, AuditsDecisionsNotMalformedRequests) {
  Start();
  Ask(Req("work", "vault", "qubes.Foo+"));
  Ask(Req("personal", "vault", "qubes.Foo+"));
  Ask("junk\n\n");
  EXPECT_EQ(AuditRows(), 2);
}

TEST_F(DaemonTest, AuditFailureDenies) {
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir_ / "audit.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DROP TABLE decisions", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), "result=deny\n");
}

TEST_F(DaemonTest, SigtermExitsCleanlyAndRemovesSocket) {
  Start();
  EXPECT_EQ(Stop(), 0);
  struct stat st;
  EXPECT_NE(::lstat(socket_.c_str(), &st), 0);
}

TEST_F(DaemonTest, ReplacesStaleSocket) {
  Start();
  ::kill(pid_, SIGKILL);
  testing::Wait(pid_);
  pid_ = -1;
  struct stat st;
  ASSERT_EQ(::lstat(socket_.c_str(), &st), 0);  // left behind by the killed daemon
  Start();
  EXPECT_EQ(Ask(Req("work", "vault", "qubes.Foo+")), kAllowVault);
}

TEST_F(DaemonTest, RefusesNonSocketPath) {
  dir_.Write("policy.sock", "not a socket");
  auto r = testing::Run({ODYSSEY_POLICY_DAEMON_BIN, "--socket-path", socket_, "--policy-dir", dir_ / "policy.d",
                         "--no-audit"},
                        dir_.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("--socket-path " + socket_), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is not a socket"), std::string::npos) << r.err;
}

TEST_F(DaemonTest, BadCatalogNamed) {
  dir_.Write("bad.json", "{\"domains\": {\"a\": {\"colour\": 1}}}");
  auto r = testing::Run({ODYSSEY_POLICY_DAEMON_BIN, "--socket-path", socket_, "--catalog", dir_ / "bad.json"},
                        dir_.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("--catalog " + dir_ / "bad.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown key 'colour'"), std::string::npos) << r.err;
}

TEST_F(DaemonTest, Help) {
  auto r = testing::Run({ODYSSEY_POLICY_DAEMON_BIN, "--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--socket-path"), std::string::npos);
  EXPECT_NE(r.out.find("--policy-dir"), std::string::npos);
  EXPECT_NE(r.out.find("--ask-program"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::qrexec::policy
