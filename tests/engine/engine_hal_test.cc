// The engine on the HAL: as root, backend "auto" gives disposables from hal/native
// (namespaces, seccomp, cgroups, frozen zygote clones) with the real qrexec-agent inside,
// called through qrexec::AgentConnection. Skipped when not root (hal/native needs it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "engine/hal_backend.h"
#include "tests/engine/engine_test_util.h"

namespace odyssey::engine::testing {
namespace {

TEST(HalBackendTest, ShellQuote) {
  EXPECT_EQ(ShellQuote({"sh", "-c", "id; hostname"}), "sh -c 'id; hostname'");
  EXPECT_EQ(ShellQuote({"echo", "it's", "", "$HOME"}), "echo 'it'\\''s' '' '$HOME'");
  EXPECT_EQ(ShellQuote({"a/b.c", "x=y"}), "a/b.c x=y");
}

class EngineHalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "hal/native needs root";
  }
  // A daemon on the default backend; its dir must be traversable by the domains' ids.
  std::unique_ptr<TestDaemon> Daemon(Conf extra = {}) {
    Conf c = {{"backend", "auto"}};
    for (auto& [k, v] : extra) c[k] = v;
    auto d = std::make_unique<TestDaemon>(c);
    ::chmod(d->dir().c_str(), 0711);
    return d;
  }
};

TEST_F(EngineHalTest, RunThroughTheHalBackend) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  auto ping = d->Client().Request({{"op", "ping"}});
  ASSERT_TRUE(ping.ok());
  EXPECT_EQ((*ping)["backend"], "hal native:///") << ping->dump();
  d->PoolWait();

  auto r = d->Cli({"run", "--dispvm", "--", "sh", "-c", "id; hostname; ls /home"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.out.find("uid=1000"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("uid=0("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\ndisp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("user\n"), std::string::npos) << r.out;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  EXPECT_EQ(r.out.find(std::string("\n") + host + "\n"), std::string::npos) << r.out;

  // Exit codes, signals, missing commands, arguments that need quoting, stdin.
  EXPECT_EQ(d->Cli({"run", "--", "sh", "-c", "exit 42"}).exit_code, 42);
  EXPECT_EQ(d->Cli({"run", "--", "sh", "-c", "kill -9 $$"}).exit_code, 137);
  EXPECT_EQ(d->Cli({"run", "--", "/nonexistent/cmd"}).exit_code, 127);
  r = d->Cli({"run", "--", "printf", "%s|", "it's", "a $HOME; test", ""});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "it's|a $HOME; test||");
  r = d->Cli({"run", "--", "wc", "-c"}, std::string(100000, 'x'));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("100000"), std::string::npos) << r.out;
  r = d->Cli({"run", "--", "sh", "-c", "echo out; echo err >&2"});
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  // Timeouts kill the domain.
  r = d->Cli({"run", "--timeout", "1", "--", "sleep", "30"});
  EXPECT_EQ(r.exit_code, 124) << r.err;

  // Pool members are frozen clones, refilled; after stop nothing is left behind.
  d->PoolWait();
  EXPECT_EQ(d->Stop(), 0);
  // A clean stop leaves nothing for the next start to reconcile.
  ASSERT_TRUE(d->Start()) << d->Log();
  EXPECT_EQ(d->Log().find("reconciled a previous run"), std::string::npos) << d->Log();
}

TEST_F(EngineHalTest, OpenFileAndUrlThroughTheHalBackend) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  auto r = d->Cli({"open", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d->Log();
  EXPECT_NE(r.out.find("qubes.OpenURL in disp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("would open https://example.org/"), std::string::npos) << r.out;
  r = d->Cli({"open", "javascript://alert(1)"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  std::string file = d->dir() + "/my report.txt";
  { std::ofstream(file) << "hello\n"; }
  r = d->Cli({"open", "--view-only", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("qubes.OpenInVM in disp"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("received my_report.txt (6 bytes)"), std::string::npos) << r.err;
}

TEST_F(EngineHalTest, Kill9LeftoversAreReconciled) {
  auto d = Daemon();
  ASSERT_TRUE(d->Start()) << d->Log();
  d->PoolWait();
  d->Kill9();
  ASSERT_TRUE(d->Start()) << d->Log();
  EXPECT_EQ(d->Cli({"run", "--", "true"}).exit_code, 0);
  EXPECT_NE(d->Log().find("reconciled a previous run"), std::string::npos) << d->Log();
  EXPECT_EQ(d->Stop(), 0);
}

}  // namespace
}  // namespace odyssey::engine::testing
