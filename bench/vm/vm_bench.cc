// VM latency benchmarks (libvirt embedded QEMU; TCG where KVM does not work): cold boot to
// the agent's HELLO, restore of a template snapshot to a paused clone, restore to HELLO, and
// a pool hit (resume of a restored paused clone whose agent said HELLO) to the first byte of
// a "uname -r" call's output and to the whole call, through the real qrexec-agent, the
// destroy of a clone, and the PSS of pooled clones. The last lines print pool hit / cold boot. Figures and commands: hal/libvirt/README.md.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

#include "hal/libvirt/libvirt_hypervisor.h"
#include "bench/vm/vm_bench_util.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {
namespace {

using hal::libvirt::LibvirtDomain;
using hal::libvirt::WaitForAgentHello;
using Clock = BenchClock;

std::map<std::string, double> g_mean_ms;  // benchmark -> mean wall ms, for the ratio

std::unique_ptr<LibvirtDomain> Clone(benchmark::State& state, const std::string& prefix) {
  VmEnv& env = VmEnv::Get();
  hal::DomainSpec spec;
  spec.name = env.UniqueName(prefix);
  auto snap = env.Snapshot();
  if (!snap.ok()) {
    state.SkipWithError(snap.error().message.c_str());
    return nullptr;
  }
  auto dom = env.hv().CloneFromSnapshot(*snap, spec);
  if (!dom.ok()) {
    state.SkipWithError(dom.error().message.c_str());
    return nullptr;
  }
  return std::unique_ptr<LibvirtDomain>(static_cast<LibvirtDomain*>(dom->release()));
}

void Record(const std::string& name, double total_ms, int64_t n) {
  if (n > 0) g_mean_ms[name] = total_ms / static_cast<double>(n);
}

void BM_ColdBootToHello(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  VmEnv& env = VmEnv::Get();
  double total = 0;
  std::vector<double> samples;
  for (auto _ : state) {
    auto t0 = Clock::now();
    hal::DomainSpec spec;
    spec.name = env.UniqueName("bcold");
    auto dom = env.hv().StartPaused(env.tmpl(), spec);
    if (!dom.ok() || !(*dom)->Resume().ok()) {
      state.SkipWithError("cold boot failed");
      break;
    }
    auto fd = WaitForAgentHello(static_cast<LibvirtDomain*>(dom->get())->control_socket(),
                                env.hv().options().hello_timeout);
    auto t1 = Clock::now();
    state.PauseTiming();
    total += MsBetween(t0, t1);
    samples.push_back(MsBetween(t0, t1));
    (void)(*dom)->Destroy();
    if (!fd.ok()) state.SkipWithError(fd.error().message.c_str());
    state.ResumeTiming();
  }
  ReportPercentiles(state, samples);
  Record("cold_boot_to_hello", total, state.iterations());
}
BENCHMARK(BM_ColdBootToHello)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(2));

// Template snapshot -> paused clone (per-clone image copy + virDomainRestoreFlags).
void BM_RestorePaused(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  double total = 0;
  std::vector<double> samples;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto dom = Clone(state, "brest");
    auto t1 = Clock::now();
    if (!dom) break;
    state.PauseTiming();
    total += MsBetween(t0, t1);
    samples.push_back(MsBetween(t0, t1));
    auto stats = dom->Stats();
    if (stats.ok()) state.counters["pss_MiB"] = static_cast<double>(stats->memory_pss_bytes) / (1 << 20);
    (void)dom->Destroy();
    state.ResumeTiming();
  }
  ReportPercentiles(state, samples);
  Record("restore_paused", total, state.iterations());
}
BENCHMARK(BM_RestorePaused)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(5));

void BM_RestoreToHello(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  VmEnv& env = VmEnv::Get();
  double total = 0;
  std::vector<double> samples;
  for (auto _ : state) {
    auto t0 = Clock::now();
    auto dom = Clone(state, "brh");
    if (!dom) break;
    Status resumed = dom->Resume();
    auto fd = WaitForAgentHello(dom->control_socket(), env.hv().options().hello_timeout);
    auto t1 = Clock::now();
    state.PauseTiming();
    total += MsBetween(t0, t1);
    samples.push_back(MsBetween(t0, t1));
    (void)dom->Destroy();
    if (!resumed.ok() || !fd.ok()) state.SkipWithError("restore to hello failed");
    state.ResumeTiming();
  }
  ReportPercentiles(state, samples);
  Record("restore_to_hello", total, state.iterations());
}
BENCHMARK(BM_RestoreToHello)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(5));

// A pool hit as the engine makes it: the clone was restored, resumed, its agent connection
// opened (HELLO exchanged), its identity refreshed (fresh RNG seed, hostname) and paused
// again beforehand (untimed, PrepareReadyClone). Timed: Resume + the first byte of a
// "uname -r" call's output (arg 0), or + the whole call with its exit code (arg 1).
void BM_PoolHit(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  const bool full_call = state.range(0) == 1;
  double total = 0;
  std::vector<double> samples, resume_ms;
  for (auto _ : state) {
    auto hit = OneTimedPoolHit(state, "bpool");
    if (!hit) break;
    total += full_call ? hit->call_ms : hit->first_byte_ms;
    samples.push_back(full_call ? hit->call_ms : hit->first_byte_ms);
    resume_ms.push_back(hit->resume_ms);
    state.ResumeTiming();
  }
  ReportPercentiles(state, samples);
  if (!resume_ms.empty()) {
    std::sort(resume_ms.begin(), resume_ms.end());
    state.counters["resume_p50_ms"] = resume_ms[resume_ms.size() / 2];  // virDomainResume alone
  }
  Record(full_call ? "pool_hit_call" : "pool_hit_first_byte", total, state.iterations());
}
BENCHMARK(BM_PoolHit)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(10));

// Destroy() of a clone, QEMU gone and the clone's sockets and files removed: arg 0 a
// restored paused clone, arg 1 a ready clone resumed (running, agent connected), as the
// engine destroys a disposable after its call.
void BM_Destroy(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  const bool running = state.range(0) == 1;
  double total = 0;
  std::vector<double> samples;
  for (auto _ : state) {
    state.PauseTiming();
    std::unique_ptr<LibvirtDomain> dom;
    qrexec::AgentConnectionPtr conn;
    if (running) {
      auto ready = PrepareReadyClone(VmEnv::Get(), "bdes");
      if (!ready.ok() || !ready->dom->Resume().ok()) {
        state.SkipWithError(ready.ok() ? "resume failed" : ready.error().message.c_str());
        break;
      }
      dom = std::move(ready->dom);
      conn = std::move(ready->conn);
    } else {
      dom = Clone(state, "bdes");
      if (!dom) break;
    }
    state.ResumeTiming();
    auto t0 = Clock::now();
    Status st = dom->Destroy();
    auto t1 = Clock::now();
    state.PauseTiming();
    if (conn) conn->Close();
    if (!st.ok()) {
      state.SkipWithError(st.error().message.c_str());
      break;
    }
    total += MsBetween(t0, t1);
    samples.push_back(MsBetween(t0, t1));
    state.ResumeTiming();
  }
  ReportPercentiles(state, samples);
  Record(running ? "destroy_running" : "destroy_paused", total, state.iterations());
}
BENCHMARK(BM_Destroy)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(CappedIterations(5));

// PSS of pooled clones: N clones prepared as the pool prepares them (ready, paused), then the
// proportional set size of each one's QEMU (/proc/PID/smaps_rollup), mean over the N.
// Memory shared between the clones (the template's RAM file, QEMU's binary and libraries)
// is split between them; what each clone wrote is its own.
void BM_PooledClonePss(benchmark::State& state) {
  if (!VmBenchReady(state)) return;
  const int n = static_cast<int>(state.range(0));
  for (auto _ : state) {
    std::vector<ReadyClone> clones;
    for (int i = 0; i < n; ++i) {
      auto c = PrepareReadyClone(VmEnv::Get(), "bpss");
      if (!c.ok()) {
        state.SkipWithError(c.error().message.c_str());
        break;
      }
      clones.push_back(std::move(*c));
    }
    double pss = 0, rss = 0;
    for (auto& c : clones) {
      auto st = c.dom->Stats();
      if (st.ok()) {
        pss += static_cast<double>(st->memory_pss_bytes) / (1 << 20);
        rss += static_cast<double>(st->memory_bytes) / (1 << 20);
      }
    }
    if (!clones.empty()) {
      state.counters["pss_MiB_per_clone"] = pss / static_cast<double>(clones.size());
      state.counters["rss_MiB_per_clone"] = rss / static_cast<double>(clones.size());
      g_mean_ms["pss_mib_per_pooled_clone"] = pss / static_cast<double>(clones.size());
    }
    for (auto& c : clones) {
      c.conn->Close();
      (void)c.dom->Destroy();
    }
  }
}
BENCHMARK(BM_PooledClonePss)->Arg(4)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace odyssey::testing_vm

int main(int argc, char** argv) {
  using odyssey::testing_vm::g_mean_ms;
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  for (const auto& [name, v] : g_mean_ms) {
    const bool mib = name.rfind("pss_", 0) == 0;
    std::printf("vm_bench: %s %-24s %10.1f %s\n", mib ? "    " : "mean", name.c_str(), v, mib ? "MiB" : "ms");
  }
  auto cold = g_mean_ms.find("cold_boot_to_hello");
  auto hit = g_mean_ms.find("pool_hit_first_byte");
  if (cold != g_mean_ms.end() && hit != g_mean_ms.end() && hit->second > 0) {
    std::printf("vm_bench: pool hit / cold boot = %.4f (pool hit %.0fx faster than cold boot to HELLO)\n",
                hit->second / cold->second, cold->second / hit->second);
  }
  if (auto* env = odyssey::testing_vm::VmEnv::IfCreated()) {
    std::string accel;  // written by the template's accelerator probe (kvm or tcg)
    if (env->skip_reason().empty() && env->setup_error().empty()) {
      std::ifstream in(env->hv().options().snapshot_dir + "/odyssey-test.accel");
      std::getline(in, accel);
    }
    std::printf("vm_bench: accelerator %s\n", accel.empty() ? "unknown" : accel.c_str());
    env->Cleanup();
    std::string cmd = "rm -rf '" + env->state_dir() + "'";
    if (!env->state_dir().empty()) (void)std::system(cmd.c_str());
  }
  return 0;
}
