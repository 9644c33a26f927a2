// Engine latency benchmarks against a real odysseyd (hermetic temp dirs; backend "auto", i.e.
// hal/native as root, else the process backend; $ODYSSEY_BENCH_BACKEND overrides):
// pool hit from request to the first stdout byte of `echo` and to the exit code of `true`,
// the same through the odyssey CLI binary, pool miss (cold), sustained disposables/s with
// refilling, the backend alone without odysseyd (the floor under a pool hit), and
// `bwrap --unshare-all --ro-bind / / true` as the baseline in the same run.
// Each benchmark reports p50/p90/p99 in ms as counters, and d_*_ms: the daemon's own medians
// of where a call's time went (take, setup, call). Benchmarks measure; they never assert.
#include <benchmark/benchmark.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "bench/engine/bench_phases.h"
#include "engine/backend_factory.h"
#include "tests/engine/engine_test_util.h"

namespace odyssey::engine::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;
using odyssey::engine::testing::RunProgram;
using odyssey::engine::testing::TestDaemon;

// $ODYSSEY_BENCH_BACKEND: "auto" (default: hal native:/// as root, else process),
// "process" or a HAL URI.
std::string BenchBackend() {
  const char* e = std::getenv("ODYSSEY_BENCH_BACKEND");
  return e && *e ? e : "auto";
}

TestDaemon* Daemon() {
  static std::unique_ptr<TestDaemon> d = [] {
    auto t = std::make_unique<TestDaemon>(std::map<std::string, std::string>{
        {"pool_size", "4"}, {"log_level", "warn"}, {"backend", BenchBackend()},
        {"max_domains", "128"}});  // room for the 64-member scaling pool plus running calls
    ::chmod(t->dir().c_str(), 0711);  // hal/native's mapped ids traverse it
    if (!t->Start()) {
      std::fprintf(stderr, "engine_bench: odysseyd did not start:\n%s\n", t->Log().c_str());
      std::abort();
    }
    auto ping = t->Client().Request({{"op", "ping"}});
    std::fprintf(stderr, "engine_bench: odysseyd on backend %s\n",
                 ping.ok() ? (*ping).value("backend", "?").c_str() : "?");
    return t;
  }();
  return d.get();
}

// Iteration count, capped by $ODYSSEY_BENCH_MAX_ITERATIONS (bench/report.sh --quick).
int Iters(int n) {
  const char* e = std::getenv("ODYSSEY_BENCH_MAX_ITERATIONS");
  int cap = e && *e ? std::atoi(e) : 0;
  return cap > 0 ? std::min(n, cap) : n;
}

void SetPool(AdminClient& c, int size) {
  (void)c.Request({{"op", "pool"}, {"template", "host"}, {"size", size}, {"wait", true}});
}
void WaitPool(AdminClient& c) { (void)c.Request({{"op", "pool"}, {"wait", true}}); }

void Percentiles(benchmark::State& state, std::vector<double>& ms) {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  state.counters["p50_ms"] = at(0.50);
  state.counters["p90_ms"] = at(0.90);
  state.counters["p99_ms"] = at(0.99);
}

using Phases = DaemonPhases;  // bench/engine/bench_phases.h

// One call; returns ms to the first stdout byte (first_byte) or to the exit reply.
double OneCall(AdminClient& c, const std::vector<std::string>& argv, bool first_byte,
               Phases* phases = nullptr) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) std::abort();
  UniqueFd r(out[0]), w(out[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  auto t0 = Clock::now();
  if (!c.Send({{"op", "run"}, {"argv", argv}}, {devnull.get(), w.get(), devnull.get()}).ok())
    std::abort();
  w.reset();
  double result = -1;
  if (first_byte) {
    char ch;
    if (::read(r.get(), &ch, 1) == 1)
      result = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  }
  for (;;) {
    auto reply = c.Receive();
    if (!reply.ok()) std::abort();
    if ((*reply).value("event", "") == "exit" || !(*reply).value("ok", false)) {
      if (phases) phases->Add(*reply);
      break;
    }
  }
  if (!first_byte) result = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return result;
}

void BM_PoolHit_EchoFirstByte(benchmark::State& state) {
  auto c = Daemon()->Client();
  SetPool(c, 4);
  std::vector<double> ms;
  Phases phases;
  for (auto _ : state) {
    WaitPool(c);  // untimed: every iteration is a pool hit
    double v = OneCall(c, {"echo", "hi"}, true, &phases);
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  Percentiles(state, ms);
  phases.Report(state);
}
BENCHMARK(BM_PoolHit_EchoFirstByte)->UseManualTime()->Iterations(Iters(200))->Unit(benchmark::kMillisecond);

void BM_PoolHit_TrueExitCode(benchmark::State& state) {
  auto c = Daemon()->Client();
  SetPool(c, 4);
  std::vector<double> ms;
  Phases phases;
  for (auto _ : state) {
    WaitPool(c);
    double v = OneCall(c, {"true"}, false, &phases);
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  Percentiles(state, ms);
  phases.Report(state);
}
BENCHMARK(BM_PoolHit_TrueExitCode)->UseManualTime()->Iterations(Iters(200))->Unit(benchmark::kMillisecond);

// The whole CLI: exec `odyssey run -- true` (process start, connect, request, exit code).
void BM_PoolHit_CliTrue(benchmark::State& state) {
  auto c = Daemon()->Client();
  SetPool(c, 4);
  std::vector<double> ms;
  for (auto _ : state) {
    WaitPool(c);
    auto t0 = Clock::now();
    auto r = Daemon()->Cli({"run", "--", "true"});
    double v = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r.exit_code != 0) state.SkipWithError("odyssey run failed");
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  Percentiles(state, ms);
}
BENCHMARK(BM_PoolHit_CliTrue)->UseManualTime()->Iterations(Iters(50))->Unit(benchmark::kMillisecond);

void BM_PoolMiss_ColdTrue(benchmark::State& state) {
  auto c = Daemon()->Client();
  SetPool(c, 0);
  std::vector<double> ms;
  Phases phases;
  for (auto _ : state) {
    double v = OneCall(c, {"true"}, false, &phases);
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  SetPool(c, 4);
  Percentiles(state, ms);
  phases.Report(state);
}
BENCHMARK(BM_PoolMiss_ColdTrue)->UseManualTime()->Iterations(Iters(100))->Unit(benchmark::kMillisecond);

// Back to back from 2 clients while the pool refills in the background.
void BM_Sustained_DisposablesPerSecond(benchmark::State& state) {
  auto c0 = Daemon()->Client();
  SetPool(c0, 8);
  const int per_iter = 100;
  for (auto _ : state) {
    auto t0 = Clock::now();
    std::thread other([&] {
      auto c = Daemon()->Client();
      for (int i = 0; i < per_iter / 2; ++i) OneCall(c, {"true"}, false);
    });
    for (int i = 0; i < per_iter / 2; ++i) OneCall(c0, {"true"}, false);
    other.join();
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  state.SetItemsProcessed(state.iterations() * per_iter);
  auto p = c0.Request({{"op", "pool"}, {"template", "host"}}).value();
  state.counters["pool_hits"] = p["pools"][0]["hits"].get<double>();
  state.counters["pool_misses"] = p["pools"][0]["misses"].get<double>();
  SetPool(c0, 4);
}
BENCHMARK(BM_Sustained_DisposablesPerSecond)->UseManualTime()->Iterations(Iters(3))->Unit(benchmark::kMillisecond);

// Scaling (bench/report.sh, full mode): pool hit latency and the pool's memory (PSS, from the
// daemon's pool stats) as the pool grows to 1, 4, 16, 64 members.
void BM_Scale_PoolHitByPoolSize(benchmark::State& state) {
  auto c = Daemon()->Client();
  const int size = static_cast<int>(state.range(0));
  SetPool(c, size);
  auto p = c.Request({{"op", "pool"}, {"template", "host"}, {"wait", true}});
  if (p.ok() && (*p).contains("pools") && !(*p)["pools"].empty()) {
    double pss = (*p)["pools"][0].value("memory_pss_bytes", 0.0) / (1 << 20);
    state.counters["pool_pss_MiB"] = pss;
    state.counters["pss_MiB_per_member"] = pss / size;
  }
  std::vector<double> ms;
  for (auto _ : state) {
    WaitPool(c);  // untimed: every iteration is a pool hit
    double v = OneCall(c, {"echo", "hi"}, true);
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  SetPool(c, 4);
  Percentiles(state, ms);
}
BENCHMARK(BM_Scale_PoolHitByPoolSize)->Arg(1)->Arg(4)->Arg(16)->Arg(64)->UseManualTime()
    ->Iterations(Iters(30))->Unit(benchmark::kMillisecond);

// Scaling: disposables/s (`true`, request -> exit) with 1, 2, 4, 8 concurrent clients, 10 calls
// each, pool of 8 refilling in the background.
void BM_Scale_ThroughputByClients(benchmark::State& state) {
  const int clients = static_cast<int>(state.range(0));
  const int per_client = 10;
  auto c0 = Daemon()->Client();
  SetPool(c0, 8);
  for (auto _ : state) {
    auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < clients; ++i) {
      threads.emplace_back([&] {
        auto c = Daemon()->Client();
        for (int k = 0; k < per_client; ++k) OneCall(c, {"true"}, false);
      });
    }
    for (auto& t : threads) t.join();
    state.SetIterationTime(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  state.SetItemsProcessed(state.iterations() * clients * per_client);
  SetPool(c0, 4);
}
BENCHMARK(BM_Scale_ThroughputByClients)->Arg(1)->Arg(2)->Arg(4)->Arg(8)->UseManualTime()
    ->Iterations(Iters(2))->Unit(benchmark::kMillisecond);

// The floor under a pool hit: the same backend odysseyd uses (MakeBackend, "auto"), driven
// in this process without odysseyd: a member prepared untimed, then Call(`echo hi`) from a
// call thread; the time from Call() to the first byte in the caller's pipe. What a pool hit
// costs above this is odysseyd's own (admin socket, policy, state store, thread hand-offs).
void BM_Floor_BackendEchoFirstByte(benchmark::State& state) {
  std::string dir = odyssey::engine::testing::MakeTempDir("floor");
  ::chmod(dir.c_str(), 0711);  // hal/native's mapped ids traverse it
  Config config;
  config.state_dir = dir + "/state";
  config.socket_path = dir + "/run/odysseyd.sock";
  config.backend = BenchBackend();
  config.stub_path = ODYSSEY_STUB_PATH;
  config.service_path = {std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services"};
  std::filesystem::create_directories(config.state_dir);
  ::chmod(config.state_dir.c_str(), 0711);
  auto backend = MakeBackend(config);
  if (!backend.ok()) {
    state.SkipWithError(backend.error().message.c_str());
    return;
  }
  state.SetLabel((*backend)->name());
  TemplateInfo tmpl{"host", "native", ""};
  std::vector<double> ms;
  int n = 0;
  for (auto _ : state) {
    auto member = (*backend)->Prepare(tmpl, "floor" + std::to_string(++n));
    if (!member.ok()) {
      state.SkipWithError(member.error().message.c_str());
      break;
    }
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) std::abort();
    UniqueFd r(out[0]);
    CallSpec spec;
    spec.argv = {"echo", "hi"};
    spec.stdin_fd.reset(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    spec.stdout_fd.reset(out[1]);
    spec.stderr_fd.reset(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    std::atomic<int64_t> t0{0};
    std::thread call([&] {
      t0 = Clock::now().time_since_epoch().count();
      (void)(*member)->Call(std::move(spec));
    });
    char ch;
    bool got = ::read(r.get(), &ch, 1) == 1;
    auto t1 = Clock::now();
    call.join();
    double v = std::chrono::duration<double, std::milli>(t1 - Clock::time_point(Clock::duration(t0.load()))).count();
    (void)(*member)->Destroy();
    if (!got) {
      state.SkipWithError("no output from echo");
      break;
    }
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  backend->reset();
  std::filesystem::remove_all(dir);
  Percentiles(state, ms);
}
BENCHMARK(BM_Floor_BackendEchoFirstByte)->UseManualTime()->Iterations(Iters(100))->Unit(benchmark::kMillisecond);

void BM_Baseline_BwrapTrue(benchmark::State& state) {
  if (::access("/usr/bin/bwrap", X_OK) != 0) {
    state.SkipWithError("bwrap not installed");
    return;
  }
  std::vector<double> ms;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto r = RunProgram({"/usr/bin/bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"});
    double v = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (r.exit_code != 0) state.SkipWithError(("bwrap failed: " + r.err).c_str());
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  Percentiles(state, ms);
}
BENCHMARK(BM_Baseline_BwrapTrue)->UseManualTime()->Iterations(Iters(100))->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace odyssey::engine::bench

BENCHMARK_MAIN();
