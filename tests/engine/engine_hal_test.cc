// The engine on the HAL: as root, backend "auto" gives disposables from hal/native
// (namespaces, seccomp, cgroups, frozen zygote clones) with the real qrexec-agent inside,
// called through qrexec::AgentConnection. Skipped when not root (hal/native needs it).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
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

TEST(HalBackendTest, UnsearchableAncestorForeseesThePrivateSocketFolder) {
  std::string dir = MakeTempDir("ancestor");
  ::chmod(dir.c_str(), 0711);
  EXPECT_EQ(UnsearchableAncestor(dir + "/state"), "");
  // The socket's folder does not exist yet; odysseyd will create it 0700.
  EXPECT_EQ(UnsearchableAncestor(dir + "/run/state", dir + "/run"), dir + "/run");
  EXPECT_EQ(UnsearchableAncestor(dir + "//run/./state/", dir + "/run/"), dir + "/run");
  EXPECT_EQ(UnsearchableAncestor(dir + "/state", dir + "/run"), "");
  ::chmod(dir.c_str(), 0700);
  EXPECT_EQ(UnsearchableAncestor(dir + "/state"), dir);
  std::filesystem::remove_all(dir);
}

// backend native:/// but the daemon's folder is 0700: hal/native's mapped ids cannot reach
// the state dir, every prepare fails. The daemon notices, says why, and the template runs on
// the process backend instead of failing each call.
TEST_F(EngineHalTest, FallsBackToTheProcessBackendWhenTheHalCannotPrepare) {
  TestDaemon d(Conf{{"backend", "native:///"}, {"pool_size", "2"}});
  ASSERT_EQ(::chmod(d.dir().c_str(), 0700), 0);
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = d.Cli({"run", "--", "echo", "hi"});
  EXPECT_EQ(r.exit_code, 0) << r.err << d.Log();
  EXPECT_EQ(r.out, "hi\n");
  // The switch happens after 3 failed prepares (2 refills + the miss above at the latest).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  nlohmann::json pools;
  do {
    pools = d.PoolWait();
    if (pools["pools"][0]["backend"] == "process") break;
    ::usleep(20000);
  } while (std::chrono::steady_clock::now() < deadline);
  ASSERT_EQ(pools["pools"][0]["backend"], "process") << pools.dump() << d.Log();
  EXPECT_NE(pools["pools"][0]["fallback_reason"].get<std::string>().find("hal native:///"),
            std::string::npos) << pools.dump();
  EXPECT_EQ(pools["pools"][0]["ready"], 2) << pools.dump();
  std::string log = d.Log();
  EXPECT_NE(log.find("switching template host to the process backend"), std::string::npos) << log;
  EXPECT_NE(log.find("failed to prepare"), std::string::npos) << log;
  auto ping = d.Client().Request({{"op", "ping"}}).value();
  EXPECT_EQ(ping["backend"], "process (fallback from hal native:///)") << ping.dump();
  EXPECT_FALSE(ping.value("backend_fallback_reason", "").empty()) << ping.dump();
  auto cli = d.Cli({"ping"});
  EXPECT_NE(cli.out.find("on backend process (fallback from hal native:///)"), std::string::npos)
      << cli.out;
  // Calls keep working, as pool hits from the process backend.
  for (int i = 0; i < 3; ++i) {
    r = d.Cli({"run", "--", "sh", "-c", "hostname"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.compare(0, 4, "disp"), 0) << r.out;
  }
  d.PoolWait();
  EXPECT_EQ(d.CountHelpers(), 2);
  EXPECT_EQ(d.Stop(), 0) << d.Log();
  EXPECT_EQ(d.CountHelpers(), 0);
}

// The state dir inside the admin socket's folder (what demo.sh used to do) still gets the HAL.
TEST_F(EngineHalTest, StateDirInsideTheSocketFolderRunsOnTheHal) {
  std::string dir = MakeTempDir("sockstate");
  ::chmod(dir.c_str(), 0711);
  TestDaemon d(Conf{{"backend", "auto"}, {"socket_path", dir + "/priv/odysseyd.sock"},
                    {"state_dir", dir + "/priv/state"}, {"pool_size", "1"}},
               dir);
  ASSERT_TRUE(d.Start()) << d.Log();
  auto pools = d.PoolWait();
  EXPECT_EQ(pools["pools"][0]["backend"], "hal native:///") << pools.dump() << d.Log();
  EXPECT_EQ(pools["pools"][0]["failures"], 0) << pools.dump();
  auto r = d.Cli({"run", "--", "echo", "on-hal"});
  EXPECT_EQ(r.out, "on-hal\n") << r.err << d.Log();
  auto ping = d.Client().Request({{"op", "ping"}}).value();
  EXPECT_EQ(ping["backend"], "hal native:///") << ping.dump();
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
