// Fuzz target: the pixel-stream parser with tight caps, fed in chunks whose sizes come
// from the input, so that every split of headers and pixel runs is exercised.
#include <cstddef>
#include <cstdint>

#include "handlers/pixel_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace odyssey::handlers;
  PixelLimits limits;
  limits.max_pages = 8;
  limits.max_dim = 64;
  limits.max_page_bytes = 64 * 64 * 3;
  limits.max_total_bytes = 4 * 64 * 64 * 3;
  PixelStreamParser parser(limits);
  size_t chunk = size ? (data[0] % 17) + 1 : 1;
  uint64_t seen = 0;
  PageSink sink = [&](const Page& page, uint32_t index, uint32_t total) -> odyssey::Status {
    ODYSSEY_CHECK(page.rgb.size() == static_cast<size_t>(page.width) * page.height * 3);
    ODYSSEY_CHECK(index >= 1 && index <= total && total <= limits.max_pages);
    seen += page.rgb.size();
    return odyssey::OkStatus();
  };
  size_t i = 0;
  bool ok = true;
  while (i < size && ok) {
    size_t n = size - i < chunk ? size - i : chunk;
    ok = parser.Feed(data + i, n, sink).ok();
    i += n;
  }
  if (ok) (void)parser.Finish();
  ODYSSEY_CHECK(seen <= limits.max_total_bytes);
  return 0;
}
