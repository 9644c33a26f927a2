// The engine's VM pool hit, end to end, beside the HAL's own pool hit in the same run.
// A real odysseyd (hermetic temp dir) with the VM tests' shared template snapshot seeded into
// its catalog (tests/vm/engine_vm_env.h) serves VM template "odyssey-test" with pool size 1:
//   BM_EngineVmPoolHit/0  admin `run uname -r` request -> first byte of its stdout
//   BM_EngineVmPoolHit/1  the same -> the exit reply (code)
//   BM_EngineVmPoolHit_Cli  the whole `odyssey run --dispvm=odyssey-test -- uname -r`
//   BM_EngineVmBackToBack  requests sent back to back (no wait for the refill): a call that
//                         finds the pool empty while its refill is restoring
//   BM_HalVmPoolHit       the baseline: resume + `uname -r` on a clone prepared by
//                         PrepareReadyClone (bench/vm's BM_PoolHit/0), no odysseyd
// Untimed before every pool-hit iteration: wait until the pool is full again. Counters:
// p50/p90/p99 and d_*_ms (the daemon's phases_ms medians: take, setup, call).
// $ODYSSEY_BENCH_ODYSSEYD / $ODYSSEY_BENCH_ODYSSEY: other odysseyd / odyssey binaries (A/B of
// two builds with one bench binary). Benchmarks measure; nothing here asserts.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

// The binaries the engine test helpers start: $ODYSSEY_BENCH_ODYSSEYD/_ODYSSEY, else this build's.
inline const char* BenchBinary(const char* env, const char* built) {
  const char* e = std::getenv(env);
  return e && *e ? e : built;
}
#define ODYSSEYD_PATH BenchBinary("ODYSSEY_BENCH_ODYSSEYD", ODYSSEYD_BUILT_PATH)
#define ODYSSEY_CLI_PATH BenchBinary("ODYSSEY_BENCH_ODYSSEY", ODYSSEY_CLI_BUILT_PATH)

#include "bench/engine/bench_phases.h"
#include "bench/vm/vm_bench_util.h"
#include "tests/engine/engine_test_util.h"
#include "tests/vm/engine_vm_env.h"

namespace odyssey::testing_vm {
namespace {

using engine::AdminClient;
using engine::testing::TestDaemon;
using json = nlohmann::json;

std::unique_ptr<TestDaemon> g_daemon;  // started on first use, stopped by main()
std::string g_daemon_error;
bool g_daemon_tried = false;

// The daemon, started once with the template added and its pool full; nullptr (and why) when
// VMs cannot run here.
TestDaemon* Daemon(std::string* why) {
  if (!g_daemon_tried) {
    g_daemon_tried = true;
    g_daemon_error = [&]() -> std::string {
      VmEnv& env = VmEnv::Get();
      if (!env.skip_reason().empty()) return env.skip_reason();
      if (!env.setup_error().empty()) return env.setup_error();
      if (auto snap = env.Snapshot(); !snap.ok()) return snap.error().message;
      auto t = std::make_unique<TestDaemon>(engine::testing::Conf{
          {"backend", "process"}, {"pool_size", "1"}, {"max_domains", "8"}, {"log_level", "info"}});
      if (Status s = SeedVmCatalog(env, t->state()); !s.ok()) return s.error().message;
      if (!t->Start()) return "odysseyd did not start: " + t->Log();
      auto c = t->Client();
      auto add = c.Request({{"op", "template_add"}, {"name", kSharedVmTemplate}, {"kind", "vm"},
                            {"root_dir", env.image_dir()}, {"pool_size", 1}});
      if (!add.ok()) return "template_add: " + add.error().message;
      if (!add->value("ok", false)) return "template_add: " + add->dump();
      g_daemon = std::move(t);
      return "";
    }();
  }
  if (!g_daemon && why) *why = g_daemon_error;
  return g_daemon.get();
}

TestDaemon* ReadyDaemon(benchmark::State& state) {
  std::string why;
  TestDaemon* d = Daemon(&why);
  if (!d) state.SkipWithError(why.c_str());
  return d;
}

json WaitPool(AdminClient& c) {
  auto r = c.Request({{"op", "pool"}, {"template", kSharedVmTemplate}, {"wait", true}});
  return r.ok() ? (*r)["pools"][0] : json();
}

using Phases = engine::bench::DaemonPhases;  // bench/engine/bench_phases.h

struct CallTimes {
  double first_byte_ms = -1, exit_ms = -1;
  bool ok = false, hit = false;
};

// One `run uname -r` request on c: ms to the first stdout byte and to the exit reply.
CallTimes OneCall(AdminClient& c, Phases* phases) {
  CallTimes t;
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return t;
  UniqueFd r(out[0]), w(out[1]);
  UniqueFd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  const auto t0 = BenchClock::now();
  if (!c.Send({{"op", "run"}, {"template", kSharedVmTemplate}, {"argv", {"uname", "-r"}}},
              {devnull.get(), w.get(), devnull.get()}).ok())
    return t;
  w.reset();
  char ch;
  if (::read(r.get(), &ch, 1) == 1) t.first_byte_ms = MsBetween(t0, BenchClock::now());
  for (;;) {
    auto reply = c.Receive();
    if (!reply.ok()) return t;
    if (reply->value("event", "") == "started") t.hit = reply->value("pool_hit", false);
    if (reply->value("event", "") == "exit" || !reply->value("ok", false)) {
      t.exit_ms = MsBetween(t0, BenchClock::now());
      t.ok = reply->value("ok", false) && reply->value("code", -1) == 0 && t.first_byte_ms >= 0;
      if (phases) phases->Add(*reply);
      return t;
    }
  }
}

void BM_EngineVmPoolHit(benchmark::State& state) {
  TestDaemon* d = ReadyDaemon(state);
  if (!d) return;
  const bool to_exit = state.range(0) == 1;
  const int pool = static_cast<int>(state.range(1));
  auto c = d->Client();
  (void)c.Request({{"op", "pool"}, {"template", kSharedVmTemplate}, {"size", pool}, {"wait", true}});
  std::vector<double> ms;
  Phases phases;
  int misses = 0;
  for (auto _ : state) {
    WaitPool(c);  // untimed: every iteration is a pool hit
    CallTimes t = OneCall(c, &phases);
    if (!t.ok) {
      state.SkipWithError("odysseyd: run uname -r failed (see its log)");
      break;
    }
    misses += !t.hit;
    double v = to_exit ? t.exit_ms : t.first_byte_ms;
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  ReportPercentiles(state, ms);
  phases.Report(state);
  state.counters["misses"] = misses;
  (void)c.Request({{"op", "pool"}, {"template", kSharedVmTemplate}, {"size", 1}, {"wait", true}});
}
// Args: {0: first byte, 1: exit}, pool size (1: the hit empties the pool, so its refill
// restores a clone while the call runs; 2: the refill waits until the call is over).
BENCHMARK(BM_EngineVmPoolHit)->Args({0, 1})->Args({1, 1})->Args({0, 2})->UseManualTime()->Iterations(CappedIterations(10))->Unit(benchmark::kMillisecond);

// The whole CLI: exec `odyssey run --dispvm=odyssey-test -- uname -r` (process start,
// connect, request, output, exit code).
void BM_EngineVmPoolHit_Cli(benchmark::State& state) {
  TestDaemon* d = ReadyDaemon(state);
  if (!d) return;
  auto c = d->Client();
  std::vector<double> ms;
  for (auto _ : state) {
    WaitPool(c);
    const auto t0 = BenchClock::now();
    auto r = d->Cli({"run", std::string("--dispvm=") + kSharedVmTemplate, "--", "uname", "-r"});
    double v = MsBetween(t0, BenchClock::now());
    if (r.exit_code != 0) {
      state.SkipWithError(("odyssey run failed: " + r.err).c_str());
      break;
    }
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  ReportPercentiles(state, ms);
}
BENCHMARK(BM_EngineVmPoolHit_Cli)->UseManualTime()->Iterations(CappedIterations(10))->Unit(benchmark::kMillisecond);

// Calls back to back: each one after the previous exit, without waiting for the refill, so
// from the second on the pool is empty while the refill restores. Timed to the exit reply.
void BM_EngineVmBackToBack(benchmark::State& state) {
  TestDaemon* d = ReadyDaemon(state);
  if (!d) return;
  auto c = d->Client();
  WaitPool(c);
  std::vector<double> ms;
  Phases phases;
  int hits = 0;
  for (auto _ : state) {
    CallTimes t = OneCall(c, &phases);
    if (!t.ok) {
      state.SkipWithError("odysseyd: run uname -r failed (see its log)");
      break;
    }
    hits += t.hit;
    state.SetIterationTime(t.exit_ms / 1000);
    ms.push_back(t.exit_ms);
  }
  ReportPercentiles(state, ms);
  phases.Report(state);
  state.counters["hits"] = hits;
  WaitPool(c);
}
BENCHMARK(BM_EngineVmBackToBack)->UseManualTime()->Iterations(CappedIterations(5))->Unit(benchmark::kMillisecond);

// The HAL's pool hit in the same run (what the engine adds is the difference).
void BM_HalVmPoolHit(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  std::vector<double> first_byte, call, resume;
  for (auto _ : state) {
    auto hit = OneTimedPoolHit(state, "bhal");
    if (!hit) break;
    first_byte.push_back(hit->first_byte_ms);
    call.push_back(hit->call_ms);
    resume.push_back(hit->resume_ms);
    state.ResumeTiming();
  }
  ReportPercentiles(state, first_byte);
  ReportPercentiles(state, call, "exit_");
  ReportPercentiles(state, resume, "resume_");
}
BENCHMARK(BM_HalVmPoolHit)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(10));

}  // namespace
}  // namespace odyssey::testing_vm

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  odyssey::testing_vm::g_daemon.reset();  // stops odysseyd, which destroys its clones
  if (auto* env = odyssey::testing_vm::VmEnv::IfCreated()) {
    env->Cleanup();
    std::error_code ec;
    if (!env->state_dir().empty()) std::filesystem::remove_all(env->state_dir(), ec);
  }
  return 0;
}
