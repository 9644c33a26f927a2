// Native backend latencies, with bubblewrap measured in the same run as the baseline:
//   cold spawn      fresh zygote + namespaces + agent, to the first byte from the agent
//   clone to frozen fork from a prepared zygote until the clone's agent listens, frozen
//   thaw to byte    pool hit: resume a frozen clone, connect, first byte from the agent
//   destroy         kill the tree, remove cgroups and directories
//   bwrap true      `bwrap --unshare-all --ro-bind / / true`, spawn to exit
// Run as root: bench/native/native_bench (prints the ratios after the table).
#include <benchmark/benchmark.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "hal/native/native_hypervisor.h"

extern char** environ;

namespace odyssey::hal::native {
namespace {

struct Env {
  std::string state_dir;
  HypervisorPtr hv;
  SnapshotPtr snap;
  std::atomic<int> counter{0};
  std::string error;
};

TemplateSpec HostTemplate() {
  TemplateSpec t;
  t.name = "host";
  t.agent_path = ODYSSEY_BENCH_PROBE;
  return t;
}

Env& TheEnv() {
  static Env* env = [] {
    auto* e = new Env;
    char tmpl[] = "/tmp/odyssey-native-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) {
      e->error = "mkdtemp failed";
      return e;
    }
    e->state_dir = tmpl;
    auto hv = OpenNative(e->state_dir);
    if (!hv.ok()) {
      e->error = hv.error().message;
      return e;
    }
    e->hv = std::move(*hv);
    auto snap = e->hv->PrepareSnapshot(HostTemplate());
    if (!snap.ok()) {
      e->error = snap.error().message;
      return e;
    }
    e->snap = *snap;
    return e;
  }();
  return *env;
}

DomainSpec NextSpec() {
  DomainSpec s;
  s.name = "bench" + std::to_string(TheEnv().counter++);
  return s;
}

// Connects to the agent stand-in and reads its first byte; false on failure.
bool FirstByte(const VchanEndpoint& ep) {
  std::string path = ep.socket_dir + "/vchan." + std::to_string(ep.domid) + ".0.512.sock";
  for (int attempt = 0; attempt < 10000; ++attempt) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      char c;
      bool ok = ::read(fd, &c, 1) == 1;
      ::close(fd);
      return ok;
    }
    ::close(fd);
    if (errno != ENOENT && errno != ECONNREFUSED) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return false;
}

bool Ready(benchmark::State& state) {
  if (!TheEnv().error.empty()) {
    state.SkipWithError(TheEnv().error.c_str());
    return false;
  }
  return true;
}

void BM_ColdSpawnToFirstByte(benchmark::State& state) {
  if (!Ready(state)) return;
  for (auto _ : state) {
    auto dom = TheEnv().hv->StartPaused(HostTemplate(), NextSpec());
    if (!dom.ok() || !(*dom)->Resume().ok() || !FirstByte((*dom)->vchan())) {
      state.SkipWithError(dom.ok() ? "resume/first byte failed" : dom.error().message.c_str());
      break;
    }
    state.PauseTiming();
    (void)(*dom)->Destroy();
    dom->reset();
    state.ResumeTiming();
  }
}

void BM_CloneToFrozen(benchmark::State& state) {
  if (!Ready(state)) return;
  for (auto _ : state) {
    auto dom = TheEnv().hv->CloneFromSnapshot(TheEnv().snap, NextSpec());
    if (!dom.ok()) {
      state.SkipWithError(dom.error().message.c_str());
      break;
    }
    state.PauseTiming();
    (void)(*dom)->Destroy();
    state.ResumeTiming();
  }
}

void BM_ThawToFirstByte(benchmark::State& state) {
  if (!Ready(state)) return;
  for (auto _ : state) {
    state.PauseTiming();
    auto dom = TheEnv().hv->CloneFromSnapshot(TheEnv().snap, NextSpec());
    if (!dom.ok()) {
      state.SkipWithError(dom.error().message.c_str());
      break;
    }
    state.ResumeTiming();
    if (!(*dom)->Resume().ok() || !FirstByte((*dom)->vchan())) {
      state.SkipWithError("resume/first byte failed");
      break;
    }
    state.PauseTiming();
    (void)(*dom)->Destroy();
    state.ResumeTiming();
  }
}

void BM_Destroy(benchmark::State& state) {
  if (!Ready(state)) return;
  for (auto _ : state) {
    state.PauseTiming();
    auto dom = TheEnv().hv->CloneFromSnapshot(TheEnv().snap, NextSpec());
    if (!dom.ok() || !(*dom)->Resume().ok()) {
      state.SkipWithError("clone failed");
      break;
    }
    state.ResumeTiming();
    if (!(*dom)->Destroy().ok()) {
      state.SkipWithError("destroy failed");
      break;
    }
  }
}

void BM_BwrapTrue(benchmark::State& state) {
  const char* bwrap = "/usr/bin/bwrap";
  if (::access(bwrap, X_OK) != 0) {
    state.SkipWithError("bubblewrap not installed (apt-get install bubblewrap)");
    return;
  }
  char* argv[] = {const_cast<char*>("bwrap"), const_cast<char*>("--unshare-all"),
                  const_cast<char*>("--ro-bind"), const_cast<char*>("/"), const_cast<char*>("/"),
                  const_cast<char*>("true"), nullptr};
  for (auto _ : state) {
    pid_t pid;
    int status = 0;
    if (::posix_spawn(&pid, bwrap, nullptr, nullptr, argv, environ) != 0 ||
        ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      state.SkipWithError("bwrap failed");
      break;
    }
  }
}

BENCHMARK(BM_ColdSpawnToFirstByte)->Iterations(50)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_CloneToFrozen)->Iterations(100)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ThawToFirstByte)->Iterations(200)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Destroy)->Iterations(100)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BwrapTrue)->Iterations(50)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Console output plus the per-benchmark real time, for the ratio table.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (!run.error_occurred) times_[run.benchmark_name()] = run.GetAdjustedRealTime();
    }
  }
  void PrintRatios() const {
    auto get = [&](const char* name) {
      auto it = times_.find(std::string(name) + "/iterations:" +
                            std::to_string(Iterations(name)) + "/real_time");
      return it == times_.end() ? 0.0 : it->second;
    };
    double bwrap = get("BM_BwrapTrue");
    std::printf("\nratios (bubblewrap cold start / odyssey native):\n");
    for (const char* name : {"BM_ColdSpawnToFirstByte", "BM_CloneToFrozen", "BM_ThawToFirstByte",
                             "BM_Destroy"}) {
      double t = get(name);
      if (t > 0 && bwrap > 0) std::printf("  %-26s %8.1f us   bwrap/this = %6.2fx\n", name, t, bwrap / t);
    }
    if (bwrap > 0) std::printf("  %-26s %8.1f us\n", "BM_BwrapTrue", bwrap);
  }

 private:
  static int Iterations(const std::string& name) {
    if (name == "BM_CloneToFrozen" || name == "BM_Destroy") return 100;
    if (name == "BM_ThawToFirstByte") return 200;
    return 50;
  }
  std::map<std::string, double> times_;
};

}  // namespace
}  // namespace odyssey::hal::native

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  odyssey::hal::native::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  auto& env = odyssey::hal::native::TheEnv();
  env.snap.reset();
  env.hv.reset();
  if (!env.state_dir.empty()) std::filesystem::remove_all(env.state_dir);
  benchmark::Shutdown();
  return 0;
}
