// qrexec benchmarks. Starts real qrexec-agents (domains 5 and 6) and a qrexec-daemon (6) in a temp dir
// over the socket vchan, then measures, in the same run:
//   * BM_SpawnStaticNop      posix_spawn + wait of a static C program that exits at once (the
//                            cost of one process on this machine; Release builds only)
//   * BM_FloorTwoProcesses   the static no-op, then /bin/true: the two processes a
//                            qrexec-client call starts (client + service), nothing else
//   * BM_LocalSpawn          posix_spawn + wait of /bin/true (the baseline)
//   * BM_AgentConnectionCall round trip of an empty service (/bin/true) via AgentConnection
//   * BM_QrexecClientCall    the same through a qrexec-client process and the daemon
//   * BM_AgentConnectionSocketService / BM_QrexecClientSocketService  the same calls to a
//                            service that is a Unix socket (the agent connects to it: no
//                            process is started for the service): protocol, daemon and
//                            agent cost alone
//   * BM_AgentConnectionCommand / BM_QrexecClientCommand  `DEFAULT:/bin/true` (a plain
//                            command: exec'd directly by the agent, no /bin/sh)
//   * BM_LocalSpawnClient    qrexec-client to a daemon that is not there (start-up, argument
//                            parsing, a failed connect, exit: the client's own cost)
//   * BM_CallThroughput      64 KiB writes through a call to `cat`, bytes/s (both directions)
//   * BM_CallThroughputOneWay 64 KiB writes into a call whose service discards them, bytes/s
//   * BM_RawVchanThroughput  64 KiB writes over a raw socket vchan pair, bytes/s (one way)
// QREXEC_BENCH_BIN_DIR=DIR runs the agents, daemon and clients from DIR instead of the build
// tree (A/B against another build's binaries in the same run).
// Latency benchmarks report p50/p99 (microseconds) as counters. For figures close to an idle
// machine on a loaded one, run it with `chrt -f 10` (every process it starts inherits that).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <thread>
#include <vector>

#include "base/io.h"
#include "qrexec/host/agent_connection.h"
#include "qrexec/transport.h"
#include "qrexec/util.h"

extern char** environ;

namespace odyssey::qrexec {
namespace {

constexpr int kDom = 5;        // agent used through AgentConnection
constexpr int kDaemonDom = 6;  // agent used through qrexec-daemon + qrexec-client
using Clock = std::chrono::steady_clock;

pid_t SpawnWithEnv(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
                   const char* out = "/dev/null") {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) env.push_back(*e);
  for (auto& e : extra_env) env.push_back(e);
  std::vector<char*> a, e;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
  pid_t pid = -1;
  posix_spawn(&pid, a[0], &fa, nullptr, a.data(), e.data());
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int WaitPid(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::string BinDir() {
  const char* dir = std::getenv("QREXEC_BENCH_BIN_DIR");
  return dir && *dir ? dir : QREXEC_BIN_DIR;
}

// A socket service (bench.Socket): reads the service descriptor up to its NUL, then closes
// the connection (an empty reply: the call ends with exit code 0).
void ServeSocketService(int listen_fd) {
  for (;;) {
    int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;
    }
    char buf[512];
    ssize_t n;
    while ((n = ::read(c, buf, sizeof buf)) > 0 && std::memchr(buf, '\0', static_cast<size_t>(n)) == nullptr) {
    }
    ::close(c);
  }
}

struct World {
  std::string root, vchan, sockets, rpc;
  pid_t agent = -1, daemon_agent = -1, daemon = -1;
  AgentConnectionPtr conn;

  World() {
    char tmpl[] = "/tmp/qrexec-bench-XXXXXX";
    root = ::mkdtemp(tmpl);
    vchan = root + "/vchan";
    sockets = root + "/qubes";
    rpc = root + "/rpc";
    for (auto& d : {vchan, sockets, rpc}) ::mkdir(d.c_str(), 0755);
    (void)!::symlink("/bin/true", (rpc + "/bench.Empty").c_str());
    (void)!::symlink("/bin/cat", (rpc + "/bench.Cat").c_str());
    {
      std::string sink = rpc + "/bench.Sink";
      std::string script = "#!/bin/sh\nexec cat >/dev/null\n";
      int fd = ::open(sink.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0755);
      (void)WriteAll(fd, script.data(), script.size());
      ::close(fd);
    }
    {
      auto l = ListenUnix(rpc + "/bench.Socket", 0666);
      if (!l.ok()) {
        std::fprintf(stderr, "bench: %s\n", l.error().message.c_str());
        std::abort();
      }
      std::thread(ServeSocketService, l->release()).detach();
    }
    std::string bin = BinDir();
    // One agent per host-side peer: an agent serves exactly one control connection.
    agent = SpawnWithEnv({bin + "/qrexec-agent", "--agent-socket=", "--rpc-dir="},
                         {"VCHAN_SOCKET_DIR=" + vchan, "VCHAN_DOMAIN=" + std::to_string(kDom),
                          "QREXEC_SERVICE_PATH=" + rpc, "QREXEC_NO_ROOT=1"},
                         (root + "/agent.log").c_str());
    daemon_agent = SpawnWithEnv({bin + "/qrexec-agent", "--agent-socket=", "--rpc-dir="},
                                {"VCHAN_SOCKET_DIR=" + vchan, "VCHAN_DOMAIN=" + std::to_string(kDaemonDom),
                                 "QREXEC_SERVICE_PATH=" + rpc, "QREXEC_NO_ROOT=1"},
                                (root + "/agent2.log").c_str());
    daemon = SpawnWithEnv({bin + "/qrexec-daemon", "--socket-dir=" + sockets, std::to_string(kDaemonDom), "bench"},
                          {"VCHAN_SOCKET_DIR=" + vchan, "VCHAN_DOMAIN=0"}, (root + "/daemon.log").c_str());
    struct stat st;
    while (::lstat((sockets + "/qrexec.bench").c_str(), &st) != 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    AgentConnectionOptions o;
    o.domid = kDom;
    o.domain_name = "bench";
    o.socket_dir = vchan;
    auto c = AgentConnection::Connect(o);
    if (!c.ok()) {
      std::fprintf(stderr, "bench: %s\n", c.error().message.c_str());
      std::abort();
    }
    conn = std::move(c.value());
  }
  ~World() {
    conn.reset();
    for (pid_t p : {daemon, daemon_agent, agent}) {
      ::kill(p, SIGKILL);
      WaitPid(p);
    }
    (void)!std::system(("rm -rf '" + root + "'").c_str());
  }
};

World& W() {
  static World w;  // destroyed at exit: kills the agents and the daemon, removes the dir
  return w;
}

void ReportPercentiles(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_us"] = us[us.size() / 2];
  state.counters["p99_us"] = us[std::min(us.size() - 1, us.size() * 99 / 100)];
}

#ifdef QREXEC_BENCH_NOP
void BM_SpawnStaticNop(benchmark::State& state) {
  std::vector<double> us;
  for (auto _ : state) {
    auto t0 = Clock::now();
    WaitPid(SpawnWithEnv({QREXEC_BENCH_NOP}, {}));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  ReportPercentiles(state, us);
}
BENCHMARK(BM_SpawnStaticNop)->UseRealTime();

void BM_FloorTwoProcesses(benchmark::State& state) {
  std::vector<double> us;
  for (auto _ : state) {
    auto t0 = Clock::now();
    WaitPid(SpawnWithEnv({QREXEC_BENCH_NOP}, {}));
    WaitPid(SpawnWithEnv({"/bin/true"}, {}));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  ReportPercentiles(state, us);
}
BENCHMARK(BM_FloorTwoProcesses)->UseRealTime();
#endif

void BM_LocalSpawn(benchmark::State& state) {
  std::vector<double> us;
  for (auto _ : state) {
    auto t0 = Clock::now();
    WaitPid(SpawnWithEnv({"/bin/true"}, {}));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  ReportPercentiles(state, us);
}
BENCHMARK(BM_LocalSpawn)->UseRealTime();

void AgentConnectionCall(benchmark::State& state, const std::string& cmdline) {
  auto& w = W();
  std::vector<double> us;
  CallRequest req;
  req.cmdline = cmdline;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto r = w.conn->Call(req);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (!r.ok() || *r != 0) state.SkipWithError("call failed");
  }
  ReportPercentiles(state, us);
}
void QrexecClientCall(benchmark::State& state, const std::string& cmdline) {
  auto& w = W();
  std::vector<double> us;
  std::string bin = BinDir() + "/qrexec-client";
  for (auto _ : state) {
    auto t0 = Clock::now();
    int code = WaitPid(SpawnWithEnv({bin, "--socket-dir=" + w.sockets, "-d", "bench", cmdline},
                                    {"VCHAN_SOCKET_DIR=" + w.vchan, "VCHAN_DOMAIN=0"}));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    if (code != 0) state.SkipWithError("qrexec-client failed");
  }
  ReportPercentiles(state, us);
}

constexpr const char* kEmptyService = "DEFAULT:QUBESRPC bench.Empty+ dom0";
constexpr const char* kSocketService = "DEFAULT:QUBESRPC bench.Socket+ dom0";
constexpr const char* kPlainCommand = "DEFAULT:/bin/true";
void BM_AgentConnectionCall(benchmark::State& state) { AgentConnectionCall(state, kEmptyService); }
BENCHMARK(BM_AgentConnectionCall)->UseRealTime();
void BM_AgentConnectionSocketService(benchmark::State& state) { AgentConnectionCall(state, kSocketService); }
BENCHMARK(BM_AgentConnectionSocketService)->UseRealTime();
void BM_AgentConnectionCommand(benchmark::State& state) { AgentConnectionCall(state, kPlainCommand); }
BENCHMARK(BM_AgentConnectionCommand)->UseRealTime();
void BM_QrexecClientCall(benchmark::State& state) { QrexecClientCall(state, kEmptyService); }
BENCHMARK(BM_QrexecClientCall)->UseRealTime();
void BM_QrexecClientSocketService(benchmark::State& state) { QrexecClientCall(state, kSocketService); }
BENCHMARK(BM_QrexecClientSocketService)->UseRealTime();
void BM_QrexecClientCommand(benchmark::State& state) { QrexecClientCall(state, kPlainCommand); }
BENCHMARK(BM_QrexecClientCommand)->UseRealTime();

void BM_LocalSpawnClient(benchmark::State& state) {
  std::vector<double> us;
  std::string bin = BinDir() + "/qrexec-client";
  for (auto _ : state) {
    auto t0 = Clock::now();
    WaitPid(SpawnWithEnv({bin, "--socket-dir=/nonexistent", "-d", "bench", "DEFAULT:QUBESRPC bench.Empty+ dom0"},
                         {}));
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  ReportPercentiles(state, us);
}
BENCHMARK(BM_LocalSpawnClient)->UseRealTime();

constexpr size_t kChunk = 64 << 10;
constexpr size_t kPerIter = 64 << 20;

void BM_CallThroughput(benchmark::State& state) {
  auto& w = W();
  for (auto _ : state) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) std::abort();
    std::thread writer([&] {
      std::string buf(kChunk, 'q');
      for (size_t n = 0; n < kPerIter; n += kChunk) (void)WriteAll(in[1], buf.data(), buf.size());
      ::close(in[1]);
    });
    std::thread reader([&] {
      std::vector<char> buf(kChunk);
      while (::read(out[0], buf.data(), buf.size()) > 0) {
      }
    });
    CallRequest req;
    req.cmdline = "DEFAULT:QUBESRPC bench.Cat+ dom0";
    req.stdin_fd = in[0];
    req.stdout_fd = out[1];
    auto r = w.conn->Call(req);
    ::close(out[1]);
    writer.join();
    reader.join();
    ::close(in[0]);
    ::close(out[0]);
    if (!r.ok()) state.SkipWithError("call failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPerIter));
}
BENCHMARK(BM_CallThroughput)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_CallThroughputOneWay(benchmark::State& state) {
  auto& w = W();
  for (auto _ : state) {
    int in[2];
    if (::pipe2(in, O_CLOEXEC) != 0) std::abort();
    std::thread writer([&] {
      std::string buf(kChunk, 'q');
      for (size_t n = 0; n < kPerIter; n += kChunk) (void)WriteAll(in[1], buf.data(), buf.size());
      ::close(in[1]);
    });
    CallRequest req;
    req.cmdline = "DEFAULT:QUBESRPC bench.Sink+ dom0";
    req.stdin_fd = in[0];
    auto r = w.conn->Call(req);
    writer.join();
    ::close(in[0]);
    if (!r.ok() || *r != 0) state.SkipWithError("call failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPerIter));
}
BENCHMARK(BM_CallThroughputOneWay)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_RawVchanThroughput(benchmark::State& state) {
  auto& w = W();
  static int port = 900;
  for (auto _ : state) {
    vchan::Options so;
    so.socket_dir = w.vchan;
    so.own_domain = 0;
    auto server = vchan::Vchan::Server(kDom, ++port, so);
    std::thread client([&, p = port] {
      vchan::Options co;
      co.socket_dir = w.vchan;
      co.own_domain = kDom;
      auto c = vchan::Vchan::Client(0, p, co);
      if (!c.ok()) std::abort();
      std::string buf(kChunk, 'q');
      for (size_t n = 0; n < kPerIter; n += kChunk) (void)(*c)->Send(buf.data(), buf.size());
    });
    std::vector<char> buf(kChunk);
    for (size_t n = 0; n < kPerIter; n += kChunk) (void)(*server)->Recv(buf.data(), buf.size());
    client.join();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPerIter));
}
BENCHMARK(BM_RawVchanThroughput)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace odyssey::qrexec

BENCHMARK_MAIN();
