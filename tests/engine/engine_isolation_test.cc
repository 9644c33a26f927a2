// Isolation and leak tests of the engine on the HAL backend (hal/native + the real
// qrexec-agent), through the real path: the odyssey CLI -> odysseyd -> a thawed pool member.
// From inside a disposable: no host processes, no host file writes, loopback only, own
// hostname, empty capability sets, seccomp in filter mode, memory limit enforced. Around the
// calls: nothing is left (cgroups, processes in them, mounts, files/sockets, daemon fds), the
// pool refills, 200 sequential + 32 concurrent disposables leak nothing, kill -9 of odysseyd
// mid-call is reconciled on restart, malformed requests get errors. Root only (hal/native).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <sstream>

#include "hal/native/cgroup.h"
#include "hal/native/native_hypervisor.h"
#include "tests/engine/engine_test_util.h"

namespace odyssey::engine::testing {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// What one HAL daemon owns on the host, found from its state dir.
struct HalCounts {
  int cgroups = 0;  // cgroup leaves (every controller) with the daemon's prefix
  int pids = 0;     // tasks in those leaves (freezer hierarchy)
  int mounts = 0;   // host mount table lines naming the state dir
  int files = 0;    // non-directories under the HAL state (vchan sockets, …)
  int domains = 0;  // domain directories
  int helpers = 0;  // process-backend helpers (a fallback would show here)
  std::string Describe() const {
    std::ostringstream o;
    o << "cgroups=" << cgroups << " pids=" << pids << " mounts=" << mounts << " files=" << files
      << " domains=" << domains << " helpers=" << helpers;
    return o.str();
  }
  bool operator==(const HalCounts&) const = default;
};

int CountLines(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  int n = 0;
  while (std::getline(f, line))
    if (!line.empty()) ++n;
  return n;
}

HalCounts Count(TestDaemon& d) {
  HalCounts c;
  const std::string hal = d.state() + "/hal";
  const std::string prefix = hal::native::CgroupPrefix(hal);
  auto tree = hal::native::CgroupTree::Discover();
  if (tree.ok()) {
    for (auto& parent : tree->ParentDirs()) {
      std::error_code ec;
      for (auto& e : std::filesystem::directory_iterator(parent, ec)) {
        std::string leaf = e.path().filename();
        if (leaf.compare(0, prefix.size(), prefix) != 0) continue;
        ++c.cgroups;
        if (parent == tree->freezer()) c.pids += CountLines(e.path().string() + "/cgroup.procs");
      }
    }
  }
  {
    std::ifstream f("/proc/self/mountinfo");
    std::string line;
    while (std::getline(f, line))
      if (line.find(d.state()) != std::string::npos) ++c.mounts;
  }
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(
           hal + "/native", std::filesystem::directory_options::skip_permission_denied, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_directory(ec)) ++c.files;
  }
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(hal + "/native/domains", ec))
    ++c.domains;
  c.helpers = d.CountHelpers();
  return c;
}

// Polls (generous deadline, never a fixed sleep) until the counts equal want.
HalCounts WaitCounts(TestDaemon& d, const HalCounts& want) {
  auto deadline = Clock::now() + std::chrono::seconds(30);
  HalCounts now = Count(d);
  while (!(now == want) && Clock::now() < deadline) {
    ::usleep(20000);
    now = Count(d);
  }
  return now;
}

std::map<std::string, std::string> KeyValues(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] += line.substr(eq + 1);
  }
  return kv;
}

// One run through the admin socket; returns the exit code (or a negative error, and the
// daemon's message in *error).
int RunTrue(AdminClient& c, int devnull, const std::vector<std::string>& argv = {"true"},
            std::string* error = nullptr) {
  if (!c.Send({{"op", "run"}, {"argv", argv}}, {devnull, devnull, devnull}).ok()) return -1;
  for (;;) {
    auto r = c.Receive();
    if (!r.ok()) return -2;
    if ((*r).value("event", "") == "exit") {
      if (error) *error = (*r).value("error", "");
      return (*r).value("code", -4);
    }
    if (!(*r).value("ok", false)) {
      if (error) *error = (*r).value("error", "");
      return -3;
    }
  }
}

class EngineIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "hal/native needs root";
  }
  // A daemon on the HAL backend (forced, no fallback to hide a failure).
  std::unique_ptr<TestDaemon> Daemon(Conf extra = {}) {
    Conf c = {{"backend", "native:///"}, {"log_level", "info"}};
    for (auto& [k, v] : extra) c[k] = v;
    auto d = std::make_unique<TestDaemon>(c);
    ::chmod(d->dir().c_str(), 0711);  // the domains' mapped ids traverse it
    return d;
  }
  // Starts d, waits for its pool and checks it really runs on the HAL.
  void StartOnHal(TestDaemon& d) {
    ASSERT_TRUE(d.Start()) << d.Log();
    auto pools = d.PoolWait();
    ASSERT_FALSE(pools["pools"].empty()) << pools.dump();
    for (auto& p : pools["pools"]) {
      ASSERT_EQ(p["backend"], "hal native:///") << pools.dump() << d.Log();
      ASSERT_EQ(p["ready"], p["target"]) << pools.dump() << d.Log();
    }
  }
};

TEST_F(EngineIsolationTest, FromInsideADisposable) {
  auto d = Daemon({{"memory_limit_bytes", std::to_string(128ull << 20)}});
  StartOnHal(*d);
  std::string host_marker = d->dir() + "/written-from-inside";
  std::string var_marker = "/var/tmp/odyssey-iso-" + std::to_string(::getpid());
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string script =
      "echo procs=$(ls /proc | grep -c '^[0-9]'); "
      "echo daemon_seen=$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -c odysse[y]d); "
      "for f in /etc/odyssey-iso /usr/odyssey-iso /etc/passwd " + host_marker + " " + var_marker +
      "; do (echo x >> $f) 2>/dev/null && echo wrote=$f; done; "
      "echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); "
      "echo hostname=$(hostname); echo uid=$(id -u); "
      "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|Seccomp|NoNewPrivs):' /proc/self/status | "
      "tr -d ' \\t' | sed 's/:/=/'";
  struct stat passwd_before {};
  ASSERT_EQ(::stat("/etc/passwd", &passwd_before), 0);
  auto r = d->Cli({"run", "--", "sh", "-c", script});
  ASSERT_EQ(r.exit_code, 0) << r.err << d->Log();
  auto kv = KeyValues(r.out);
  // Own pid namespace: a handful of processes, none of them the host's daemon.
  EXPECT_GT(std::atoi(kv["procs"].c_str()), 0) << r.out;
  EXPECT_LT(std::atoi(kv["procs"].c_str()), 10) << r.out;
  EXPECT_EQ(kv["daemon_seen"], "0") << r.out;
  // No host file written.
  EXPECT_EQ(kv.count("wrote"), 0u) << r.out;
  EXPECT_FALSE(std::filesystem::exists(host_marker));
  EXPECT_FALSE(std::filesystem::exists(var_marker));
  EXPECT_FALSE(std::filesystem::exists("/etc/odyssey-iso"));
  struct stat passwd_after {};
  ASSERT_EQ(::stat("/etc/passwd", &passwd_after), 0);
  EXPECT_EQ(passwd_before.st_size, passwd_after.st_size);
  EXPECT_EQ(passwd_before.st_mtim.tv_nsec, passwd_after.st_mtim.tv_nsec);
  // Loopback only; the disposable's own hostname; not root; no capabilities; seccomp filter.
  EXPECT_EQ(kv["ifaces"], "lo,") << r.out;
  EXPECT_EQ(kv["hostname"].compare(0, 4, "disp"), 0) << r.out;
  EXPECT_NE(kv["hostname"], host);
  EXPECT_EQ(kv["uid"], "1000") << r.out;
  for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
    EXPECT_EQ(kv[k], "0000000000000000") << k << "\n" << r.out;
  EXPECT_EQ(kv["Seccomp"], "2") << r.out;
  EXPECT_EQ(kv["NoNewPrivs"], "1") << r.out;
  // A second disposable has another hostname (no state shared between calls).
  auto r2 = d->Cli({"run", "--", "sh", "-c", "hostname; ls /tmp | wc -l"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(r2.out.find(kv["hostname"] + "\n"), std::string::npos) << r2.out;

  // Memory limit (128 MiB): a small buffer is fine, 512 MiB gets the disposable killed.
  r = d->Cli({"run", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=8M", "count=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = d->Cli({"run", "--", "dd", "if=/dev/zero", "of=/dev/null", "bs=512M", "count=1"});
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.exit_code, 1) << "dd could not even allocate (no limit reached): " << r.err;
  // The daemon keeps serving on the HAL.
  r = d->Cli({"run", "--", "echo", "still-here"});
  EXPECT_EQ(r.out, "still-here\n") << r.err;
  auto ping = d->Client().Request({{"op", "ping"}}).value();
  EXPECT_EQ(ping["backend"], "hal native:///") << ping.dump();
}

TEST_F(EngineIsolationTest, NothingIsLeftAfterACallAndThePoolRefills) {
  auto d = Daemon({{"pool_size", "2"}});
  StartOnHal(*d);
  HalCounts before = Count(*d);
  // 2 ready clones + the zygote, each in every controller; clones' agents and init.
  EXPECT_GT(before.cgroups, 0) << before.Describe();
  EXPECT_EQ(before.domains, 2) << before.Describe();
  EXPECT_EQ(before.helpers, 0) << before.Describe();
  int fds_before = CountFds(d->pid());
  // A call that leaves a background process (not holding stdout: qrexec waits for EOF), one
  // killed by its timeout, a plain one.
  auto r = d->Cli({"run", "--", "sh", "-c", "sleep 1000 </dev/null >/dev/null 2>&1 & echo started"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "started\n");
  r = d->Cli({"run", "--timeout", "1", "--", "sleep", "1000"});
  EXPECT_EQ(r.exit_code, 124) << r.err;
  r = d->Cli({"run", "--", "true"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  auto pools = d->PoolWait();
  EXPECT_EQ(pools["pools"][0]["ready"], 2) << pools.dump();
  EXPECT_EQ(pools["pools"][0]["hits"].get<int>() + pools["pools"][0]["misses"].get<int>(), 3);
  EXPECT_GE(pools["pools"][0]["prepared"].get<int>(), 5) << pools.dump();  // 2 + 3 refills
  HalCounts after = WaitCounts(*d, before);
  EXPECT_EQ(after, before) << "before " << before.Describe() << "\nafter  " << after.Describe();
  EXPECT_LE(CountFds(d->pid()), fds_before + 1);
  auto stats = d->Client().Request({{"op", "stats"}}).value();
  EXPECT_EQ(stats["in_use"], 0);
  EXPECT_EQ(stats["live_backend_resources"], 2);
  // A clean stop removes everything, the zygote included.
  EXPECT_EQ(d->Stop(), 0) << d->Log();
  HalCounts none = WaitCounts(*d, HalCounts{});
  EXPECT_EQ(none, HalCounts{}) << none.Describe();
}

TEST_F(EngineIsolationTest, SequentialAndConcurrentDisposablesLeakNothing) {
  auto d = Daemon({{"pool_size", "4"}});
  StartOnHal(*d);
  HalCounts before = Count(*d);
  int fds_before = CountFds(d->pid());
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto c = d->Client();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(RunTrue(c, devnull.get()), 0) << "call " << i << d->Log();
  std::vector<std::future<std::pair<int, std::string>>> futures;
  for (int i = 0; i < 32; ++i)
    futures.push_back(std::async(std::launch::async, [&] {
      auto cl = d->Client();
      std::string error;
      int code = RunTrue(cl, devnull.get(), {"sh", "-c", "echo x > /tmp/x; cat /tmp/x >/dev/null"},
                         &error);
      return std::make_pair(code, error);
    }));
  for (auto& f : futures) {
    auto [code, error] = f.get();
    EXPECT_EQ(code, 0) << error;
  }
  auto pools = d->PoolWait();
  EXPECT_EQ(pools["pools"][0]["ready"], 4) << pools.dump();
  EXPECT_EQ(pools["pools"][0]["backend"], "hal native:///") << pools.dump();
  EXPECT_EQ(pools["pools"][0]["hits"].get<uint64_t>() + pools["pools"][0]["misses"].get<uint64_t>(),
            232u);
  HalCounts after = WaitCounts(*d, before);
  EXPECT_EQ(after, before) << "before " << before.Describe() << "\nafter  " << after.Describe();
  auto stats = d->Client().Request({{"op", "stats"}}).value();
  EXPECT_EQ(stats["in_use"], 0);
  EXPECT_EQ(stats["live_backend_resources"], 4);
  EXPECT_LE(CountFds(d->pid()), fds_before + 2);
  EXPECT_EQ(d->Stop(), 0) << d->Log();  // clean exit (ASan/LSan would fail it)
  EXPECT_EQ(WaitCounts(*d, HalCounts{}), HalCounts{});
}

TEST_F(EngineIsolationTest, KillNineMidCallThenRestartReconciles) {
  std::string dir = MakeTempDir("halcrash");
  ::chmod(dir.c_str(), 0711);
  Conf conf = {{"backend", "native:///"}, {"pool_size", "1"}, {"log_level", "info"}};
  HalCounts idle;
  {
    TestDaemon d(conf, dir);
    d.keep_dir();
    StartOnHal(d);
    idle = Count(d);
    auto c = d.Client();
    UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
    int up[2];
    ASSERT_EQ(::pipe2(up, O_CLOEXEC), 0);
    UniqueFd up_r(up[0]), up_w(up[1]);
    ASSERT_TRUE(c.Send({{"op", "run"}, {"argv", {"sh", "-c", "echo up; exec sleep 1000"}}},
                       {devnull.get(), up_w.get(), devnull.get()}).ok());
    up_w.reset();
    char ch;
    ASSERT_EQ(::read(up_r.get(), &ch, 1), 1);  // the command really runs
    d.Kill9();
    HalCounts left = Count(d);
    EXPECT_GT(left.domains, 0) << left.Describe();  // the killed run left its domains behind
    EXPECT_GT(left.pids, 0) << left.Describe();
  }
  TestDaemon d(conf, dir);
  StartOnHal(d);
  EXPECT_NE(d.Log().find("reconciled a previous run"), std::string::npos) << d.Log();
  HalCounts now = WaitCounts(d, idle);
  EXPECT_EQ(now, idle) << "idle " << idle.Describe() << "\nnow  " << now.Describe();
  auto calls = d.Client().Request({{"op", "calls"}}).value();
  ASSERT_FALSE(calls["calls"].empty());
  EXPECT_EQ(calls["calls"][0]["outcome"], "interrupted");
  EXPECT_EQ(d.Cli({"run", "--", "true"}).exit_code, 0);
  EXPECT_EQ(d.Stop(), 0) << d.Log();
  EXPECT_EQ(WaitCounts(d, HalCounts{}), HalCounts{});
}

TEST_F(EngineIsolationTest, MalformedRequestsGetErrorsAndTheDaemonKeepsServing) {
  auto d = Daemon({{"pool_size", "1"}, {"max_request_bytes", "4096"}});
  StartOnHal(*d);
  auto c = d->Client();
  for (std::string bad : {std::string("garbage"), std::string("{\"op\":\"run\",\"argv\":[1]}"),
                          std::string("{\"op\":\"run\",\"argv\":[\"true\"],\"template\":7}"),
                          std::string("{\"op\":\"call\",\"service\":\"../x\"}"),
                          std::string("{\"op\":\"pool\",\"size\":\"big\"}"),
                          std::string(10000, '{')}) {
    std::string line = bad + "\n";
    ASSERT_TRUE(WriteAll(c.fd(), line.data(), line.size()).ok());
    auto r = c.Receive();
    ASSERT_TRUE(r.ok()) << "no reply to " << bad.substr(0, 40);
    EXPECT_FALSE((*r)["ok"].get<bool>()) << bad.substr(0, 40);
  }
  auto r = d->Cli({"run", "--", "echo", "ok"});
  EXPECT_EQ(r.out, "ok\n") << r.err << d->Log();
  auto ping = c.Request({{"op", "ping"}}).value();
  EXPECT_EQ(ping["backend"], "hal native:///");
}

}  // namespace
}  // namespace odyssey::engine::testing
