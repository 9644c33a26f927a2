// odyssey-convert FILE: the trusted converter. Renders FILE to pixels in a disposable,
// validates them, and rebuilds NAME.trusted.pdf (or .png with --image) beside it from the
// pixels only; the original moves to the quarantine folder. (`odyssey convert` runs the
// same code through the engine directly.)
#include <CLI/CLI.hpp>

#include "handlers/commands.h"
#include "handlers/exec_runner.h"

namespace {

using namespace odyssey::handlers;

int Main(int argc, char** argv) {
  CLI::App app{"Convert an untrusted PDF (or image, with --image) into a trusted one: it is "
               "rendered to pixels in a disposable, the pixels are validated here, and "
               "NAME.trusted.pdf (.png) is rebuilt from them beside the original, which moves "
               "to the quarantine folder."};
  std::string file, runner_cmd, tmpl;
  bool image = false;
  ConvertOptions options;
  app.add_option("file", file, "the untrusted PDF or image")->required();
  app.add_flag("--image", image, "convert an image to NAME.trusted.png (one page)");
  app.add_option("--dispvm", tmpl, "disposable template to render in (default: the engine's)");
  app.add_option("--quarantine", options.quarantine_dir, "where the original goes (default " +
                                                             DefaultQuarantineDir() + ")");
  app.add_flag("--keep-original", options.keep_original, "leave the original in place");
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
  ExecRunner runner(runner_cmd.empty() ? ExecRunner::DefaultCommand() : SplitCommand(runner_cmd));
  return RunConvertCommand(runner, file, options, "odyssey-convert");
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
