// Conversion pages per second: odyssey.RenderPDF through the LocalRunner plus host-side
// validation and the cairo rebuild, beside pdftoppm alone on the host at the same
// resolution. The ratio of the two is the price of safety (without the disposable's own
// start-up, which the engine's pool hides). Also: open-to-viewer-done for a PDF.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include "handlers/convert.h"
#include "handlers/open_in_vm.h"
#include "tests/handlers/local_runner.h"
#include "tests/handlers/test_util.h"

namespace {

using namespace odyssey::handlers;
using testing::LocalRunner;

std::string Services() { return testing::SourceDir() + "/handlers/services"; }

// A letter-size PDF of `pages` pages (612 x 792 pt; 850 x 1100 pixels at 100 dpi).
const std::string& SamplePdf(testing::TempDir& dir, int pages) {
  static std::string path;
  path = dir / ("sample-" + std::to_string(pages) + ".pdf");
  if (!testing::Exists(path)) testing::WritePdf(path, pages, 612, 792);
  return path;
}

void BM_TrustedConvertLocalRunner(benchmark::State& state) {
  testing::TempDir dir;
  const int pages = static_cast<int>(state.range(0));
  std::string pdf = SamplePdf(dir, pages);
  LocalRunner runner({Services()});
  ConvertOptions o;
  o.keep_original = true;
  for (auto _ : state) {
    auto r = ConvertFile(runner, pdf, o);
    if (!r.ok()) {
      state.SkipWithError(r.error().message.c_str());
      break;
    }
    ::unlink(r->output_path.c_str());
  }
  state.SetItemsProcessed(state.iterations() * pages);
  state.counters["pages_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * pages),
                                                     benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TrustedConvertLocalRunner)->Arg(10)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_PdftoppmOnHost(benchmark::State& state) {
  testing::TempDir dir;
  const int pages = static_cast<int>(state.range(0));
  std::string pdf = SamplePdf(dir, pages);
  std::string cmd = "pdftoppm -r 100 '" + pdf + "' '" + dir / "out" + "'";
  for (auto _ : state) {
    if (std::system(cmd.c_str()) != 0) {
      state.SkipWithError("pdftoppm failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * pages);
  state.counters["pages_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * pages),
                                                     benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PdftoppmOnHost)->Arg(10)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_OpenPdfViewOnlyLocalRunner(benchmark::State& state) {
  testing::TempDir dir;
  std::string pdf = SamplePdf(dir, 1);
  // The headless viewer (pdfinfo + pdftotext) is the "viewer running" point.
  LocalRunner runner({Services()}, {"DISPLAY=", "ODYSSEY_VIEWER="});
  testing::TempDir errs;
  OpenOptions o;
  o.view_only = true;
  o.stderr_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  for (auto _ : state) {
    auto r = OpenFileInDomain(runner, pdf, o);
    if (!r.ok()) {
      state.SkipWithError(r.error().message.c_str());
      break;
    }
  }
  ::close(o.stderr_fd);
}
BENCHMARK(BM_OpenPdfViewOnlyLocalRunner)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
