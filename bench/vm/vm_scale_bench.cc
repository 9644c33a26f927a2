// VM clone scaling (issue #8): pool-hit latency and memory with a pool of 1, 4 and 8 paused
// clones at the HAL level (libvirt embedded QEMU; TCG where KVM does not work), built into
// vm_bench. The pool's members are made as the engine's pool makes them (PrepareReadyClone:
// restored, agent HELLO done, identity refreshed, paused). Each iteration, with the pool
// full: sample every member's QEMU PSS and RSS (/proc/PID/smaps_rollup, via Domain::Stats),
// time one pool hit (resume -> first byte of "uname -r", as vm_bench's BM_PoolHit/0) while
// the other N-1 members stay paused, destroy the used member as the engine does, and refill
// the pool (timed separately). Counters (read by bench/report/aggregate.py): p50/p90/p99_ms of
// the hit, refill_p50_ms, pool_pss_MiB / pss_MiB_per_clone and pool_rss_MiB /
// rss_MiB_per_clone (means of the samples), clones. Runs in minutes under TCG: N +
// iterations - 1 clones prepared per pool size.
#include <benchmark/benchmark.h>

#include <deque>
#include <string>
#include <vector>

#include "bench/vm/vm_bench_util.h"

namespace odyssey::testing_vm {
namespace {

constexpr double kMiB = 1 << 20;

// Sums the QEMU PSS and RSS of every member; false (with an error set) if one has no stats.
bool SamplePoolMemory(benchmark::State& state, std::deque<ReadyClone>& pool, double* pss_mib,
                      double* rss_mib) {
  *pss_mib = *rss_mib = 0;
  for (auto& m : pool) {
    auto stats = m.dom->Stats();
    if (!stats.ok() || stats->memory_pss_bytes == 0) {
      std::string why = "no PSS for " + m.dom->name() +
                        (stats.ok() ? " (no QEMU pid?)" : ": " + stats.error().message);
      state.SkipWithError(why.c_str());
      return false;
    }
    *pss_mib += static_cast<double>(stats->memory_pss_bytes) / kMiB;
    *rss_mib += static_cast<double>(stats->memory_bytes) / kMiB;
  }
  return true;
}

// Adds a member to the pool and records how long that took; false (with an error set) on failure.
bool Refill(benchmark::State& state, std::deque<ReadyClone>& pool, std::vector<double>& refill_ms) {
  auto t0 = BenchClock::now();
  auto m = PrepareReadyClone(VmEnv::Get(), "bscale");
  if (!m.ok()) {
    state.SkipWithError(m.error().message.c_str());
    return false;
  }
  refill_ms.push_back(MsBetween(t0, BenchClock::now()));
  pool.push_back(std::move(*m));
  return true;
}

void BM_Scale_VmPoolHitByClones(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  const auto clones = static_cast<size_t>(state.range(0));
  std::deque<ReadyClone> pool;
  std::vector<double> hit_ms, refill_ms;
  double pss_sum = 0, rss_sum = 0;
  int samples = 0;
  bool ok = true;
  int64_t hits = 0;
  while (ok && pool.size() < clones) ok = Refill(state, pool, refill_ms);
  for (auto _ : state) {  // does not run when the first fill failed (error set)
    state.PauseTiming();
    double pss = 0, rss = 0;
    ok = SamplePoolMemory(state, pool, &pss, &rss);
    if (!ok) break;
    pss_sum += pss;
    rss_sum += rss;
    ++samples;
    state.ResumeTiming();
    auto hit = TimedPoolHit(pool.front());
    state.PauseTiming();
    pool.front().conn->Close();
    (void)pool.front().dom->Destroy();
    pool.pop_front();
    if (!hit.ok()) {
      state.SkipWithError(hit.error().message.c_str());
      ok = false;
      break;
    }
    hit_ms.push_back(hit->first_byte_ms);
    if (++hits < static_cast<int64_t>(state.max_iterations))
      ok = Refill(state, pool, refill_ms);  // not after the last
    state.ResumeTiming();
  }
  for (auto& m : pool) {
    m.conn->Close();
    (void)m.dom->Destroy();
  }
  if (!ok || samples == 0) return;
  ReportPercentiles(state, hit_ms);
  ReportPercentiles(state, refill_ms, "refill_");
  const double n = static_cast<double>(clones);
  state.counters["clones"] = n;
  state.counters["pool_pss_MiB"] = pss_sum / samples;
  state.counters["pss_MiB_per_clone"] = pss_sum / samples / n;
  state.counters["pool_rss_MiB"] = rss_sum / samples;
  state.counters["rss_MiB_per_clone"] = rss_sum / samples / n;
}
BENCHMARK(BM_Scale_VmPoolHitByClones)
    ->Arg(1)
    ->Arg(4)
    ->Arg(8)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(CappedIterations(5));

}  // namespace
}  // namespace odyssey::testing_vm
