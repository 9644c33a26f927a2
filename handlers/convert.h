// Trusted converters (the Qubes "trusted PDF" idea): an untrusted PDF or image is rendered
// to pixels inside a disposable; this host side validates the pixel stream and rebuilds a
// clean PDF (cairo) or PNG (libpng) from the pixels only. The result lands beside the
// original as NAME.trusted.pdf / NAME.trusted.png, atomically; the original moves to a
// quarantine folder and is never deleted.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/result.h"
#include "handlers/disposable_runner.h"
#include "handlers/pixel_stream.h"

namespace odyssey::handlers {

struct ConvertOptions {
  enum class Kind { kPdf, kImage };
  Kind kind = Kind::kPdf;
  Target target = Target::Disposable();
  PixelLimits limits;
  uint32_t dpi = 100;             // the service renders at this resolution
  std::string quarantine_dir;     // empty: $XDG_DATA_HOME (~/.local/share)/odyssey/quarantine
  bool keep_original = false;     // true: leave the original where it is (benchmarks)
  // Called after each validated page (index 1-based) and once the output is complete.
  std::function<void(uint32_t index, uint32_t total, const Page& page)> on_page;
};

struct ConvertResult {
  std::string output_path;       // NAME.trusted.pdf / NAME.trusted.png
  std::string quarantined_path;  // where the original went ("" with keep_original)
  uint32_t pages = 0;
  uint64_t pixel_bytes = 0;
};

// The service that renders each kind inside the disposable.
const char* ConverterService(ConvertOptions::Kind kind);  // odyssey.RenderPDF / RenderImage
// "dir/report.pdf" -> "dir/report.trusted.pdf" (or .png for images).
std::string TrustedOutputPath(const std::string& path, ConvertOptions::Kind kind);
// The default quarantine folder.
std::string DefaultQuarantineDir();

// Converts `path`. On any error the original is untouched and no output file is left.
Result<ConvertResult> ConvertFile(DisposableRunner& runner, const std::string& path,
                                  const ConvertOptions& options);

// Writes one page of validated pixels as a PNG to fd (used for convert:image).
Status WritePngPage(int fd, const Page& page);

// Moves path into dir (created 0700 if missing) under its basename, adding ".1", ".2", ...
// rather than replacing anything; copies and fsyncs when dir is on another filesystem.
Result<std::string> MoveToQuarantine(const std::string& path, const std::string& dir);

}  // namespace odyssey::handlers
