// Open-to-service-running latency for a PDF through a real odysseyd (hermetic temp dirs;
// backend "auto": hal/native as root, else the process backend; $ODYSSEY_BENCH_BACKEND
// overrides): what `odyssey open doc.pdf` does in process (route by content with libmagic,
// then qubes.OpenInVM through the engine), timed from the start of the routing to the first
// byte the service writes on stderr ("qubes.OpenInVM: received doc.pdf ..."), which it does
// once it runs in its disposable and has the whole file. Warm: a paused clone from the pool
// (the pool is refilled, untimed, before each iteration). Cold: pool size 0, every open
// spawns a disposable. The third benchmark reports cold/warm medians from the same run.
// Benchmarks measure; they never assert.
#include <benchmark/benchmark.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

#include "engine/engine_runner.h"
#include "handlers/convert.h"
#include "handlers/open_in_vm.h"
#include "handlers/router.h"
#include "tests/engine/engine_test_util.h"
#include "tests/handlers/test_util.h"

namespace odyssey::handlers::bench {
namespace {

using Clock = std::chrono::steady_clock;
using odyssey::engine::testing::TestDaemon;

std::string BenchBackend() {
  const char* e = std::getenv("ODYSSEY_BENCH_BACKEND");
  return e && *e ? e : "auto";
}

struct Env {
  std::unique_ptr<TestDaemon> daemon;
  std::unique_ptr<testing::TempDir> dir;
  std::string pdf;
  std::unique_ptr<Router> router;
};

Env* TheEnv() {
  static std::unique_ptr<Env> env = [] {
    auto e = std::make_unique<Env>();
    e->daemon = std::make_unique<TestDaemon>(std::map<std::string, std::string>{
        {"pool_size", "2"}, {"log_level", "warn"}, {"backend", BenchBackend()},
        {"service_path", std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services"}});
    ::chmod(e->daemon->dir().c_str(), 0711);
    if (!e->daemon->Start()) {
      std::fprintf(stderr, "open_bench: odysseyd did not start:\n%s\n", e->daemon->Log().c_str());
      std::abort();
    }
    auto ping = e->daemon->Client().Request({{"op", "ping"}});
    std::fprintf(stderr, "open_bench: odysseyd on backend %s\n",
                 ping.ok() ? (*ping).value("backend", "?").c_str() : "?");
    e->dir = std::make_unique<testing::TempDir>();
    e->pdf = *e->dir / "doc.pdf";
    testing::WritePdf(e->pdf, 2, 612, 792);
    RouterOptions ro;
    ro.dirs = {};  // the shipped defaults only: application/pdf -> dispvm
    auto r = Router::Create(ro);
    if (!r.ok()) std::abort();
    e->router = std::move(*r);
    return e;
  }();
  return env.get();
}

void SetPool(int size) {
  auto c = TheEnv()->daemon->Client();
  (void)c.Request({{"op", "pool"}, {"template", "host"}, {"size", size}, {"wait", true}});
}
void WaitPool() {
  auto c = TheEnv()->daemon->Client();
  (void)c.Request({{"op", "pool"}, {"wait", true}});
}

// One open; returns ms from start to the service's first stderr byte, or -1.
double OneOpen() {
  Env* e = TheEnv();
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) std::abort();
  UniqueFd r(p[0]), w(p[1]);
  Clock::time_point first{};
  std::thread reader([&] {
    char buf[4096];
    bool seen = false;
    ssize_t n;
    while ((n = ::read(r.get(), buf, sizeof buf)) > 0)
      if (!seen) {
        first = Clock::now();
        seen = true;
      }
  });
  auto t0 = Clock::now();
  auto d = e->router->Route(e->pdf);
  bool ok = d.ok() && d->action.kind == Action::Kind::kDispVm;
  if (ok) {
    engine::ConnectOptions co;
    co.socket_path = e->daemon->socket();
    co.autostart = false;
    engine::EngineRunner runner(co);
    OpenOptions o;
    o.target = *d->action.ServiceTarget();
    o.view_only = true;
    o.stderr_fd = w.get();
    auto res = OpenFileInDomain(runner, d->path, o);
    ok = res.ok();
    if (!ok) std::fprintf(stderr, "open_bench: %s\n", res.error().message.c_str());
  }
  w.reset();
  reader.join();
  if (!ok || first == Clock::time_point{}) return -1;
  return std::chrono::duration<double, std::milli>(first - t0).count();
}

double g_warm_p50 = 0, g_cold_p50 = 0;

double Report(benchmark::State& state, std::vector<double>& ms) {
  if (ms.empty()) return 0;
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<size_t>(q * ms.size()))]; };
  state.counters["p50_ms"] = at(0.50);
  state.counters["p90_ms"] = at(0.90);
  state.counters["p99_ms"] = at(0.99);
  return at(0.50);
}

void Run(benchmark::State& state, bool warm, double* p50) {
  SetPool(warm ? 2 : 0);
  std::vector<double> ms;
  for (auto _ : state) {
    if (warm) WaitPool();  // untimed: every iteration takes a paused clone
    double v = OneOpen();
    if (v < 0) {
      state.SkipWithError("open failed");
      break;
    }
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  *p50 = Report(state, ms);
}

void BM_OpenPdf_WarmPool(benchmark::State& state) { Run(state, true, &g_warm_p50); }
BENCHMARK(BM_OpenPdf_WarmPool)->UseManualTime()->Iterations(60)->Unit(benchmark::kMillisecond);

void BM_OpenPdf_Cold(benchmark::State& state) { Run(state, false, &g_cold_p50); }
BENCHMARK(BM_OpenPdf_Cold)->UseManualTime()->Iterations(30)->Unit(benchmark::kMillisecond);

// Not a measurement of its own: the cold/warm ratio of the two medians above.
void BM_OpenPdf_ColdOverWarm(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(g_cold_p50);
  state.counters["warm_p50_ms"] = g_warm_p50;
  state.counters["cold_p50_ms"] = g_cold_p50;
  state.counters["cold_over_warm"] = g_warm_p50 > 0 ? g_cold_p50 / g_warm_p50 : 0;
  SetPool(2);
}
BENCHMARK(BM_OpenPdf_ColdOverWarm)->Iterations(1);

// ---- conversion pages per second, the same run ----
// The trusted converter through the engine (odyssey.RenderPDF in a pooled disposable, the
// host validating the pixel stream and rebuilding the PDF with cairo) beside the same
// renderer run directly on the host: the very service script (pdftoppm once per page, as in
// the disposable, output thrown away) and pdftoppm once for the whole document. Ratios of
// the medians are in BM_Convert_Ratios.

constexpr int kConvertPages = 10;
double g_engine_pps = 0, g_service_host_pps = 0, g_pdftoppm_pps = 0;

const std::string& ConvertPdf() {
  static std::string path = [] {
    std::string p = *TheEnv()->dir / "ten.pdf";
    testing::WritePdf(p, kConvertPages, 612, 792);  // 850 x 1100 pixels at 100 dpi
    return p;
  }();
  return path;
}

// Runs fn once per iteration, timed by hand; reports pages/s of the median iteration.
template <typename Fn>
void TimePages(benchmark::State& state, double* pps, Fn fn) {
  std::vector<double> ms;
  for (auto _ : state) {
    auto t0 = Clock::now();
    if (!fn()) {
      state.SkipWithError("conversion failed");
      return;
    }
    double v = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    state.SetIterationTime(v / 1000);
    ms.push_back(v);
  }
  double p50 = Report(state, ms);
  *pps = p50 > 0 ? kConvertPages * 1000.0 / p50 : 0;
  state.counters["pages_per_s"] = *pps;
}

void BM_ConvertPdf_Engine(benchmark::State& state) {
  SetPool(2);
  ConvertOptions o;
  o.keep_original = true;
  engine::ConnectOptions co;
  co.socket_path = TheEnv()->daemon->socket();
  co.autostart = false;
  engine::EngineRunner runner(co);
  TimePages(state, &g_engine_pps, [&] {
    WaitPool();  // a paused clone is ready, as for a user who converts now and then
    auto r = ConvertFile(runner, ConvertPdf(), o);
    if (!r.ok()) std::fprintf(stderr, "open_bench: %s\n", r.error().message.c_str());
    if (r.ok()) ::unlink(r->output_path.c_str());
    return r.ok();
  });
}
BENCHMARK(BM_ConvertPdf_Engine)->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);

void BM_RenderServiceOnHost(benchmark::State& state) {
  std::string cmd = "sh '" + std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services/odyssey.RenderPDF' 100 < '" +
                    ConvertPdf() + "' > /dev/null";
  TimePages(state, &g_service_host_pps, [&] { return std::system(cmd.c_str()) == 0; });
}
BENCHMARK(BM_RenderServiceOnHost)->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);

void BM_PdftoppmOnHost(benchmark::State& state) {
  std::string cmd = "pdftoppm -r 100 '" + ConvertPdf() + "' '" + *TheEnv()->dir / "ppm" + "'";
  TimePages(state, &g_pdftoppm_pps, [&] { return std::system(cmd.c_str()) == 0; });
}
BENCHMARK(BM_PdftoppmOnHost)->UseManualTime()->Iterations(5)->Unit(benchmark::kMillisecond);

// Not a measurement of its own: pages/s ratios of the three medians above.
void BM_Convert_Ratios(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(g_engine_pps);
  state.counters["engine_pps"] = g_engine_pps;
  state.counters["service_on_host_pps"] = g_service_host_pps;
  state.counters["pdftoppm_pps"] = g_pdftoppm_pps;
  state.counters["service_host_over_engine"] = g_engine_pps > 0 ? g_service_host_pps / g_engine_pps : 0;
  state.counters["pdftoppm_over_engine"] = g_engine_pps > 0 ? g_pdftoppm_pps / g_engine_pps : 0;
}
BENCHMARK(BM_Convert_Ratios)->Iterations(1);

}  // namespace
}  // namespace odyssey::handlers::bench

BENCHMARK_MAIN();
