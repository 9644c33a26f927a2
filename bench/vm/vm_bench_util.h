// Helpers shared by the VM benchmarks (vm_bench.cc, vm_scale_bench.cc): iteration caps,
// percentile counters, the environment check and the timed pool hit. Benchmarks measure;
// nothing here asserts.
#pragma once

#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {

using BenchClock = std::chrono::steady_clock;

inline double MsBetween(BenchClock::time_point a, BenchClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Iteration count, capped by $ODYSSEY_BENCH_MAX_ITERATIONS (bench/report.sh --quick).
inline int CappedIterations(int n) {
  const char* e = std::getenv("ODYSSEY_BENCH_MAX_ITERATIONS");
  int cap = e && *e ? std::atoi(e) : 0;
  return cap > 0 ? std::min(n, cap) : n;
}

// Nearest-rank p50/p90/p99 of `ms`, as counters <prefix>p50_ms, ... (read by bench/report.sh).
inline void ReportPercentiles(benchmark::State& state, std::vector<double> ms,
                              const std::string& prefix = "") {
  if (ms.empty()) return;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))];
  };
  state.counters[prefix + "p50_ms"] = at(0.50);
  state.counters[prefix + "p90_ms"] = at(0.90);
  state.counters[prefix + "p99_ms"] = at(0.99);
}

// Whether VMs can run here and the template snapshot is ready; if not, sets the benchmark's
// error (a skip reason such as "qemu-system-x86_64 is not installed", or the setup error).
inline bool VmBenchReady(benchmark::State& state) {
  VmEnv& env = VmEnv::Get();
  std::string why = !env.skip_reason().empty() ? env.skip_reason() : env.setup_error();
  if (why.empty()) {
    auto snap = env.Snapshot();
    if (!snap.ok()) why = snap.error().message;
  }
  if (!why.empty()) state.SkipWithError(why.c_str());
  return why.empty();
}

// Wall times of one pool hit, from the Resume() call on.
struct PoolHitTimes {
  double resume_ms = 0;      // -> virDomainResume returned
  double first_byte_ms = 0;  // -> first byte of the call's stdout
  double call_ms = 0;        // -> the call's exit code
};

// The timed part of a pool hit on a ReadyClone (PrepareReadyClone): resumes it and runs
// "uname -r" through its agent. An error when the resume or the call failed, or the call
// printed nothing or exited non-zero.
inline Result<PoolHitTimes> TimedPoolHit(ReadyClone& m) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::Errno("pipe2", "pool hit of " + m.dom->name());
  UniqueFd out_r(out[0]), out_w(out[1]);
  auto t0 = BenchClock::now();
  Status resumed = m.dom->Resume();
  const auto t_resumed = BenchClock::now();
  BenchClock::time_point first{};
  std::thread reader([&] {
    char c;
    if (::read(out_r.get(), &c, 1) == 1) first = BenchClock::now();
    char buf[256];
    while (::read(out_r.get(), buf, sizeof buf) > 0) {
    }
  });
  qrexec::CallRequest req;
  req.cmdline = "DEFAULT:uname -r";
  req.stdout_fd = out_w.get();
  auto code = m.conn->Call(req);
  auto t_done = BenchClock::now();
  out_w.reset();
  reader.join();
  if (!resumed.ok()) return resumed.error().Wrap("pool hit");
  if (!code.ok()) return code.error().Wrap("pool hit of " + m.dom->name());
  if (*code != 0 || first == BenchClock::time_point{}) {
    return Error{"pool hit of " + m.dom->name() + ": uname -r exited with " +
                     std::to_string(*code) +
                     (first == BenchClock::time_point{} ? " and printed nothing" : ""),
                 EIO};
  }
  return PoolHitTimes{MsBetween(t0, t_resumed), MsBetween(t0, first), MsBetween(t0, t_done)};
}

// One timed pool hit inside a benchmark loop: a fresh ReadyClone named PREFIX… is prepared
// untimed, TimedPoolHit is timed, then the clone is closed and destroyed untimed. Returns
// with the state's timing paused; on an error it calls SkipWithError and returns nothing
// (the caller breaks out of its loop).
inline std::optional<PoolHitTimes> OneTimedPoolHit(benchmark::State& state, const char* prefix) {
  state.PauseTiming();
  auto ready = PrepareReadyClone(VmEnv::Get(), prefix);
  if (!ready.ok()) {
    state.SkipWithError(ready.error().message.c_str());
    return std::nullopt;
  }
  state.ResumeTiming();
  auto hit = TimedPoolHit(*ready);
  state.PauseTiming();
  ready->conn->Close();
  (void)ready->dom->Destroy();
  if (!hit.ok()) {
    state.SkipWithError(hit.error().message.c_str());
    return std::nullopt;
  }
  return *hit;
}

}  // namespace odyssey::testing_vm
