// The host-side parser of the pixel stream a converter service sends from a disposable.
// Everything in it is hostile: every number is checked against caps before anything is
// allocated, and byte counts must match exactly.
//
// Stream (all decimal, '\n'-terminated lines of at most 32 bytes, no leading zeros):
//   PAGES\n                      1 <= PAGES <= max_pages
//   then PAGES times:
//   WIDTH HEIGHT\n               1 <= each <= max_dim, WIDTH*HEIGHT*3 <= max_page_bytes
//   WIDTH*HEIGHT*3 bytes         RGB, 8 bits per channel, rows top to bottom
//   then end of stream (any byte after the last page is an error).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"

namespace odyssey::handlers {

// Caps on what a converter service may send.
struct PixelLimits {
  uint32_t max_pages = 1000;
  uint32_t max_dim = 10000;                      // per side, in pixels
  uint64_t max_page_bytes = 64ull << 20;         // one page's RGB bytes
  uint64_t max_total_bytes = 2048ull << 20;      // all pages' RGB bytes together
};

// A page whose size has been validated; rgb holds exactly width*height*3 bytes.
struct Page {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> rgb;
};

// Called for each complete page: index is 1-based, total the announced page count.
using PageSink = std::function<Status(const Page& page, uint32_t index, uint32_t total)>;

// Incremental parser: feed it chunks as they arrive; it stops at the first error.
class PixelStreamParser {
 public:
  explicit PixelStreamParser(PixelLimits limits) : limits_(limits) {}

  // Consumes untrusted bytes. Returns the first error (of the stream or of the sink).
  Status Feed(const uint8_t* untrusted_data, size_t size, const PageSink& sink);
  // Call at end of stream: fails unless every announced page arrived completely.
  Status Finish() const;

  uint32_t pages_announced() const { return total_pages_; }
  uint32_t pages_done() const { return pages_done_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  enum class State { kCount, kDims, kPixels, kDone, kFailed };
  Status FinishLine(const PageSink& sink);
  Status Fail(Error e) {
    state_ = State::kFailed;
    return e;
  }

  PixelLimits limits_;
  State state_ = State::kCount;
  std::string line_;
  Page page_;
  size_t filled_ = 0;
  uint32_t total_pages_ = 0;
  uint32_t pages_done_ = 0;
  uint64_t bytes_received_ = 0;
  uint64_t pixel_bytes_announced_ = 0;
};

// Parses a decimal number made of 1..10 digits without a leading zero; caps it at max.
Result<uint64_t> ParseBoundedNumber(const std::string& untrusted_token, uint64_t max,
                                    const std::string& what);

}  // namespace odyssey::handlers
