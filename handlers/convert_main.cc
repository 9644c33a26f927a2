// odyssey-convert FILE: the trusted converter. Renders FILE to pixels in a disposable,
// validates them, and rebuilds NAME.trusted.pdf (or .png with --image) beside it from the
// pixels only; the original moves to the quarantine folder.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "handlers/convert.h"
#include "handlers/exec_runner.h"

namespace {

using namespace odyssey::handlers;

void Progress(uint32_t index, uint32_t total, const Page& page) {
  constexpr int kWidth = 30;
  int filled = static_cast<int>(static_cast<uint64_t>(index) * kWidth / (total ? total : 1));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\rodyssey-convert: [%s] page %u/%u (%ux%u)", bar.c_str(), index, total,
               page.width, page.height);
  if (index == total || !isatty(2)) std::fputc('\n', stderr);
}

int Main(int argc, char** argv) {
  CLI::App app{"Convert an untrusted PDF (or image, with --image) into a trusted one: it is "
               "rendered to pixels in a disposable, the pixels are validated here, and "
               "NAME.trusted.pdf (.png) is rebuilt from them beside the original, which moves "
               "to the quarantine folder."};
  std::string file, runner_cmd, quarantine, tmpl;
  bool image = false, keep = false;
  ConvertOptions options;
  app.add_option("file", file, "the untrusted PDF or image")->required();
  app.add_flag("--image", image, "convert an image to NAME.trusted.png (one page)");
  app.add_option("--dispvm", tmpl, "disposable template to render in (default: the engine's)");
  app.add_option("--quarantine", quarantine, "where the original goes (default " +
                                                  DefaultQuarantineDir() + ")");
  app.add_flag("--keep-original", keep, "leave the original in place");
  app.add_option("--dpi", options.dpi, "render resolution")->check(CLI::Range(10, 600));
  app.add_option("--max-pages", options.limits.max_pages, "refuse more pages than this")
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-dim", options.limits.max_dim, "refuse wider or taller pages (pixels)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-page-bytes", options.limits.max_page_bytes, "cap on one page's RGB bytes");
  app.add_option("--max-total-bytes", options.limits.max_total_bytes, "cap on all RGB bytes");
  app.add_option("--runner", runner_cmd,
                 "command that runs a service in a disposable (default $ODYSSEY_RUNNER or "
                 "'odyssey call'); gets [--dispvm=T] SERVICE+ARG");
  CLI11_PARSE(app, argc, argv);

  options.kind = image ? ConvertOptions::Kind::kImage : ConvertOptions::Kind::kPdf;
  options.target = Target::Disposable(tmpl);
  options.quarantine_dir = quarantine;
  options.keep_original = keep;
  options.on_page = Progress;
  ExecRunner runner(runner_cmd.empty() ? ExecRunner::DefaultCommand() : SplitCommand(runner_cmd));
  auto r = ConvertFile(runner, file, options);
  if (!r.ok()) {
    std::fprintf(stderr, "odyssey-convert: %s\n", r.error().message.c_str());
    return 1;
  }
  std::printf("%s\n", r->output_path.c_str());
  std::fprintf(stderr, "odyssey-convert: %u page(s) -> %s\n", r->pages, r->output_path.c_str());
  if (!r->quarantined_path.empty())
    std::fprintf(stderr, "odyssey-convert: original moved to %s\n", r->quarantined_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
