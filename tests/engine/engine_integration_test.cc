// End-to-end tests of odysseyd and the odyssey CLI: a real daemon per test (hermetic temp
// dirs, own socket), real disposables from the engine's backend.
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <future>

#include "tests/engine/engine_test_util.h"

namespace odyssey::engine::testing {
namespace {

using json = nlohmann::json;

TEST(EngineCliTest, HelpEverywhere) {
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--help"}, {"run", "--help"}, {"open", "--help"}, {"ls", "--help"},
        {"kill", "--help"}, {"pool", "--help"}, {"template", "--help"}, {"template", "add", "--help"},
        {"policy", "check", "--help"}, {"demo", "--help"}}) {
    args.insert(args.begin(), ODYSSEY_CLI_PATH);
    auto r = RunProgram(args);
    EXPECT_EQ(r.exit_code, 0) << args[1] << ": " << r.err;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << r.out;
  }
  auto r = RunProgram({ODYSSEYD_PATH, "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--foreground"), std::string::npos);
}

TEST(EngineCliTest, UnreachableDaemonSaysWhatToDo) {
  std::string dir = MakeTempDir("noserver");
  auto r = RunProgram({ODYSSEY_CLI_PATH, "--no-autostart", "--socket", dir + "/none.sock", "ls"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("odysseyd is not reachable"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("start it with"), std::string::npos) << r.err;
  std::filesystem::remove_all(dir);
}

TEST(EngineTest, RunShowsSandboxedIdentityAndPropagatesExitCode) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = d.Cli({"run", "--dispvm", "--", "sh", "-c", "id; hostname; ls /home; exit 3"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.out.find("disp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("user"), std::string::npos) << r.out;
  if (::geteuid() == 0) {
    EXPECT_EQ(r.out.find("uid=0("), std::string::npos) << r.out;
  }
  // stdin streams through the passed descriptor.
  r = d.Cli({"run", "--", "tr", "a-z", "A-Z"}, "hello disposable\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "HELLO DISPOSABLE\n");
  r = d.Cli({"run", "--", "sh", "-c", "echo to-stderr >&2"});
  EXPECT_EQ(r.err, "to-stderr\n");
  r = d.Cli({"run", "--", "no-such-command-xyz"});
  EXPECT_EQ(r.exit_code, 127);
}

TEST(EngineTest, DisposableIsIsolatedFromTheHost) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  std::string marker = d.dir() + "/host-file";
  auto r = d.Cli({"run", "--", "sh", "-c",
                  "ls /proc | grep -c '^[0-9]'; touch " + marker + " 2>/dev/null && echo WROTE; "
                  "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(marker));
  EXPECT_EQ(r.out.find("WROTE"), std::string::npos);
  // Few processes (own pid namespace) and only the loopback interface.
  int procs = std::atoi(r.out.c_str());
  EXPECT_GT(procs, 0);
  EXPECT_LT(procs, 10) << r.out;
  EXPECT_NE(r.out.find("lo"), std::string::npos);
  EXPECT_EQ(r.out.find("eth"), std::string::npos) << r.out;
}

TEST(EngineTest, MalformedHugeAndTruncatedRequestsGetErrorsAndDaemonKeepsServing) {
  TestDaemon d(Conf{{"max_request_bytes", "4096"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  auto c = d.Client();
  for (std::string bad : {std::string("garbage"), std::string("{"), std::string("[1,2,3]"),
                          std::string("{\"op\":42}"), std::string("{\"op\":\"nope\"}"),
                          std::string("{\"op\":\"run\",\"argv\":\"notalist\"}"),
                          std::string("{\"op\":\"kill\",\"name\":{}}"),
                          std::string("{\"op\":\"pool\",\"size\":-3}"),
                          std::string("{\"op\":\"run\",\"argv\":[\"true\"]}"),
                          std::string(100000, 'x')}) {
    ASSERT_TRUE(SendLine(c.fd(), json::parse("{}"), {}).ok());  // "{}" -> missing op
    auto r1 = c.Receive();
    ASSERT_TRUE(r1.ok());
    EXPECT_FALSE((*r1)["ok"].get<bool>());
    std::string line = bad + "\n";
    ASSERT_TRUE(WriteAll(c.fd(), line.data(), line.size()).ok());
    auto r = c.Receive();
    ASSERT_TRUE(r.ok()) << "no reply to " << bad.substr(0, 40);
    EXPECT_FALSE((*r)["ok"].get<bool>()) << bad.substr(0, 40);
    EXPECT_FALSE((*r)["error"].get<std::string>().empty());
  }
  // Still serving on the same connection.
  auto p = c.Request({{"op", "ping"}, {"id", 5}});
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE((*p)["ok"].get<bool>());
  EXPECT_EQ((*p)["id"], 5);
  // A truncated request (no newline, then the client vanishes) and random fds.
  {
    auto t = d.Client();
    std::string partial = "{\"op\":\"run\",\"argv\":[\"sleep\"";
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    ASSERT_TRUE(WriteAll(t.fd(), partial.data(), partial.size()).ok());
    ASSERT_TRUE(SendLine(t.fd(), json("x"), {fds[0], fds[1], fds[0], fds[1], fds[0]}).ok());
    ::close(fds[0]);
    ::close(fds[1]);
  }
  // Wrong number of descriptors.
  auto w = c.Request({{"op", "run"}, {"argv", {"true"}}});
  ASSERT_TRUE(w.ok());
  EXPECT_NE((*w)["error"].get<std::string>().find("exactly 3 descriptors"), std::string::npos);
  auto again = d.Client().Request({{"op", "ping"}});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)["ok"].get<bool>());
  auto r = d.Cli({"run", "--", "echo", "still-alive"});
  EXPECT_EQ(r.out, "still-alive\n");
}

TEST(EngineTest, PeerCredentialsRefuseOtherUsers) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  TestDaemon d(Conf{{"socket_mode", "0666"}});
  ::chmod(d.dir().c_str(), 0755);
  ASSERT_TRUE(d.Start()) << d.Log();
  ::chmod((d.dir() + "/run").c_str(), 0755);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(10);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, d.socket().c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) _exit(11);
    const char req[] = "{\"op\":\"ping\"}\n";
    (void)!::send(fd, req, sizeof req - 1, MSG_NOSIGNAL);  // the daemon may hang up first
    char buf[1024];
    ssize_t n = ::read(fd, buf, sizeof buf - 1);
    if (n <= 0) _exit(12);
    buf[n] = 0;
    _exit(std::strstr(buf, "permission denied") && std::strstr(buf, "uid 65534") ? 0 : 13);
  }
  int status;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  // The owner is still served.
  EXPECT_TRUE(d.Client().Request({{"op", "ping"}})->value("ok", false));
}

TEST(EngineTest, FilesArriveAsDescriptorsNotPaths) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  // A file in a directory the disposable cannot see; its content arrives through the fd.
  std::string path = d.dir() + "/secret-dir/input.txt";
  std::filesystem::create_directories(d.dir() + "/secret-dir");
  { std::ofstream(path) << "content via fd\n"; }
  ::chmod((d.dir() + "/secret-dir").c_str(), 0700);
  UniqueFd in(::open(path.c_str(), O_RDONLY));
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  UniqueFd out_r(out[0]), out_w(out[1]);
  UniqueFd devnull(::open("/dev/null", O_WRONLY));
  auto c = d.Client();
  ASSERT_TRUE(c.Send({{"op", "run"}, {"argv", {"sh", "-c", "cat; ls " + path + " 2>&1 || true"}}},
                     {in.get(), out_w.get(), devnull.get()}).ok());
  out_w.reset();
  std::string got;
  char buf[256];
  ssize_t n;
  while ((n = ::read(out_r.get(), buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  EXPECT_EQ(got.rfind("content via fd\n", 0), 0u) << got;
  EXPECT_NE(got.find("No such file"), std::string::npos) << got;  // /tmp is private inside
  auto started = c.Receive();
  auto exited = c.Receive();
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ((*exited)["event"], "exit");
  EXPECT_EQ((*exited)["code"], 0);
  EXPECT_TRUE((*exited)["destroyed"].get<bool>());
}

TEST(EngineTest, PoolRefillsAndCountsHitsAndMisses) {
  TestDaemon d(Conf{{"pool_size", "2"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  auto p = d.PoolWait();
  ASSERT_EQ(p["pools"][0]["ready"], 2) << p.dump();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(d.Cli({"run", "--", "true"}).exit_code, 0);
  p = d.PoolWait();
  EXPECT_EQ(p["pools"][0]["ready"], 2) << p.dump();
  uint64_t hits = p["pools"][0]["hits"], misses = p["pools"][0]["misses"];
  EXPECT_EQ(hits + misses, 3u);
  EXPECT_GE(hits, 1u);
  EXPECT_GT(p["pools"][0]["memory_bytes"].get<uint64_t>(), 0u);
  // Resize, then an empty pool means every call is a miss.
  auto r = d.Cli({"pool", "host", "--size", "0", "--wait"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(d.Cli({"run", "--", "true"}).exit_code, 0);
  p = d.PoolWait();
  EXPECT_EQ(p["pools"][0]["misses"].get<uint64_t>(), misses + 1);
  EXPECT_EQ(d.CountHelpers(), 0);
  r = d.Cli({"pool", "--json"});
  EXPECT_TRUE(json::parse(r.out, nullptr, false).is_array()) << r.out;
}

TEST(EngineTest, LsKillAndTimeout) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  auto c = d.Client();
  UniqueFd devnull(::open("/dev/null", O_RDWR));
  ASSERT_TRUE(c.Send({{"op", "run"}, {"argv", {"sleep", "1000"}}},
                     {devnull.get(), devnull.get(), devnull.get()}).ok());
  auto started = c.Receive();
  ASSERT_TRUE(started.ok());
  std::string name = (*started)["name"];
  auto ls = d.Cli({"ls", "--json"});
  auto arr = json::parse(ls.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << ls.out;
  bool seen = false;
  for (auto& e : arr) seen |= e["name"] == name && e["state"] == "running";
  EXPECT_TRUE(seen) << ls.out;
  EXPECT_EQ(d.Cli({"kill", name}).exit_code, 0);
  auto exited = c.Receive();
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ((*exited)["outcome"], "killed");
  EXPECT_EQ((*exited)["code"], 137);
  auto k = d.Cli({"kill", "disp-nope"});
  EXPECT_NE(k.exit_code, 0);
  EXPECT_NE(k.err.find("odyssey ls"), std::string::npos);
  auto t = d.Cli({"run", "--timeout", "1", "--", "sleep", "1000"});
  EXPECT_EQ(t.exit_code, 124) << t.err;
  EXPECT_NE(t.err.find("timed out"), std::string::npos) << t.err;
}

TEST(EngineTest, ClientDisconnectKillsItsDisposable) {
  TestDaemon d(Conf{{"pool_size", "0"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  {
    auto c = d.Client();
    UniqueFd devnull(::open("/dev/null", O_RDWR));
    ASSERT_TRUE(c.Send({{"op", "run"}, {"argv", {"sleep", "1000"}}},
                       {devnull.get(), devnull.get(), devnull.get()}).ok());
    ASSERT_TRUE(c.Receive().ok());
    EXPECT_EQ(d.CountHelpers(), 1);
  }
  // The daemon notices the hang-up and destroys the disposable; `ls` drains to empty.
  for (;;) {
    auto ls = d.Client().Request({{"op", "ls"}});
    if ((*ls)["domains"].empty()) break;
    ::usleep(20000);
  }
  EXPECT_EQ(d.CountHelpers(), 0);
}

TEST(EngineTest, PolicyDenialNamesTheRule) {
  std::string pdir = MakeTempDir("policy");
  {
    std::ofstream f(pdir + "/10-test.policy");
    f << "# test policy\nqubes.VMShell * @adminvm @dispvm deny\n"
         "* * @adminvm @anyvm allow\n* * @adminvm @dispvm allow\n";
  }
  TestDaemon d(Conf{{"policy_dir", pdir}});
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = d.Cli({"run", "--", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("denied by policy"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("10-test.policy:2"), std::string::npos) << r.err;
  auto check = d.Cli({"policy", "check", "qubes.VMShell"});
  EXPECT_EQ(check.exit_code, 1);
  EXPECT_NE(check.out.find("10-test.policy:2"), std::string::npos) << check.out;
  check = d.Cli({"policy", "check", "qubes.OpenURL", "--target", "@dispvm:host"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  auto stats = d.Client().Request({{"op", "stats"}});
  EXPECT_GE((*stats)["policy_decisions"].get<int64_t>(), 1);
  std::filesystem::remove_all(pdir);
}

TEST(EngineTest, TemplatesAddListRemove) {
  TestDaemon d(Conf{{"pool_size", "1"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = d.Cli({"template", "add", "work", "--pool-size", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = d.Cli({"template", "ls", "--json"});
  auto arr = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << r.out;
  EXPECT_EQ(arr.size(), 2u);
  r = d.Cli({"run", "--dispvm=work", "--", "hostname"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("disp", 0), 0u);
  r = d.Cli({"run", "--dispvm=missing", "--", "true"});
  EXPECT_EQ(r.exit_code, 125);
  EXPECT_NE(r.err.find("template missing does not exist"), std::string::npos) << r.err;
  r = d.Cli({"template", "add", "Bad Name"});
  EXPECT_NE(r.exit_code, 0);
  r = d.Cli({"template", "add", "tree", "--root", d.dir()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("lacks"), std::string::npos) << r.err;
  EXPECT_EQ(d.Cli({"template", "rm", "work"}).exit_code, 0);
  EXPECT_NE(d.Cli({"template", "rm", "host"}).exit_code, 0);
  // Templates persist across restarts.
  EXPECT_EQ(d.Cli({"template", "add", "kept"}).exit_code, 0);
  d.Stop();
  ASSERT_TRUE(d.Start()) << d.Log();
  r = d.Cli({"template", "ls"});
  EXPECT_NE(r.out.find("kept"), std::string::npos) << r.out;
}

TEST(EngineTest, OpenUrlAndFileThroughServices) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = d.Cli({"open", "https://example.org/"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("would open https://example.org/"), std::string::npos) << r.out;
  r = d.Cli({"open", "javascript://alert(1)"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Invalid URL"), std::string::npos) << r.err;
  std::string file = d.dir() + "/my report.txt";
  { std::ofstream(file) << "hello\n"; }
  r = d.Cli({"open", "--view-only", file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("received my_report.txt (6 bytes)"), std::string::npos) << r.err;
  r = d.Cli({"open", d.dir() + "/missing.pdf"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot open"), std::string::npos);
}

TEST(EngineTest, SingleInstanceLock) {
  TestDaemon d;
  ASSERT_TRUE(d.Start()) << d.Log();
  auto r = RunProgram({ODYSSEYD_PATH, "--foreground", "--config", d.dir() + "/odysseyd.conf",
                       "--socket", d.dir() + "/run/other.sock"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("already running"), std::string::npos) << r.err;
}

TEST(EngineTest, KillNineMidCallThenRestartReconciles) {
  std::string dir = MakeTempDir("crash");
  {
    TestDaemon d(Conf{{"pool_size", "0"}}, dir);
    d.keep_dir();
    ASSERT_TRUE(d.Start()) << d.Log();
    auto c = d.Client();
    UniqueFd devnull(::open("/dev/null", O_RDWR));
    int up[2];
    ASSERT_EQ(::pipe(up), 0);
    UniqueFd up_r(up[0]), up_w(up[1]);
    ASSERT_TRUE(c.Send({{"op", "run"}, {"argv", {"sh", "-c", "echo up; exec sleep 1000"}}},
                       {devnull.get(), up_w.get(), devnull.get()}).ok());
    up_w.reset();
    char ch;
    ASSERT_EQ(::read(up_r.get(), &ch, 1), 1);  // the command really runs
    d.Kill9();
    EXPECT_EQ(d.CountHelpers(), 1);  // the killed run left its disposable behind
  }
  TestDaemon d(Conf{{"pool_size", "0"}}, dir);
  ASSERT_TRUE(d.Start()) << d.Log();
  EXPECT_EQ(d.CountHelpers(), 0) << d.Log();
  auto calls = d.Client().Request({{"op", "calls"}});
  ASSERT_TRUE(calls.ok());
  ASSERT_FALSE((*calls)["calls"].empty());
  EXPECT_EQ((*calls)["calls"][0]["outcome"], "interrupted");
  EXPECT_NE(d.Log().find("reconciled a previous run"), std::string::npos);
  EXPECT_EQ(d.Cli({"run", "--", "true"}).exit_code, 0);
}

TEST(EngineTest, SequentialAndConcurrentDisposablesLeakNothing) {
  TestDaemon d(Conf{{"pool_size", "4"}, {"log_level", "info"}});
  ASSERT_TRUE(d.Start()) << d.Log();
  d.PoolWait();
  int fds_before = CountFds(d.pid());
  auto c = d.Client();
  UniqueFd devnull(::open("/dev/null", O_RDWR));
  auto one = [&](AdminClient& cl) {
    if (!cl.Send({{"op", "run"}, {"argv", {"true"}}}, {devnull.get(), devnull.get(), devnull.get()}).ok())
      return -1;
    for (;;) {
      auto r = cl.Receive();
      if (!r.ok()) return -2;
      if ((*r)["event"] == "exit") return (*r)["code"].get<int>();
      if (!(*r)["ok"].get<bool>()) return -3;
    }
  };
  for (int i = 0; i < 200; ++i) ASSERT_EQ(one(c), 0) << "call " << i;
  std::vector<std::future<int>> futures;
  for (int i = 0; i < 32; ++i)
    futures.push_back(std::async(std::launch::async, [&] {
      auto cl = d.Client();
      return one(cl);
    }));
  for (auto& f : futures) EXPECT_EQ(f.get(), 0);
  auto p = d.PoolWait();
  EXPECT_EQ(p["pools"][0]["ready"], 4);
  EXPECT_EQ(p["pools"][0]["hits"].get<uint64_t>() + p["pools"][0]["misses"].get<uint64_t>(), 232u);
  auto stats = d.Client().Request({{"op", "stats"}}).value();
  EXPECT_EQ(stats["in_use"], 0);
  EXPECT_EQ(stats["live_backend_resources"], 4);  // just the pool
  EXPECT_EQ(d.CountHelpers(), 4);
  EXPECT_LE(CountFds(d.pid()), fds_before + 2);  // the connections of this test at most
  auto ls = d.Client().Request({{"op", "ls"}}).value();
  for (auto& e : ls["domains"]) {
    EXPECT_EQ(e["state"], "ready");
  }
  EXPECT_EQ(d.Stop(), 0) << d.Log();  // clean exit (ASan/LSan would fail it)
  EXPECT_EQ(d.CountHelpers(), 0);
}

TEST(EngineTest, CliStartsADaemonWhenNoneRuns) {
  std::string dir = MakeTempDir("autostart");
  std::string sock = dir + "/run/odyssey/odysseyd.sock";
  std::vector<std::string> env = {"XDG_RUNTIME_DIR=" + dir + "/run", "ODYSSEY_STATE_DIR=" + dir + "/state",
                                  "ODYSSEY_SOCKET=" + sock, "HOME=" + dir};
  std::filesystem::create_directories(dir + "/run");
  auto r = RunProgram({ODYSSEY_CLI_PATH, "run", "--", "echo", "auto"}, "", env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "auto\n");
  EXPECT_NE(r.err.find("starting"), std::string::npos) << r.err;
  auto ping = AdminClient::Connect(sock);
  ASSERT_TRUE(ping.ok());
  auto info = ping->Request({{"op", "ping"}});
  pid_t pid = (*info)["pid"].get<pid_t>();
  r = RunProgram({ODYSSEY_CLI_PATH, "shutdown"}, "", env);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The detached daemon is not our child: wait until its pid is gone.
  while (::kill(pid, 0) == 0) ::usleep(20000);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace odyssey::engine::testing
