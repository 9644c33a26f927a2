// libFuzzer target for the daemon's parser: arbitrary guest bytes into GuestStream, fed in
// chunks whose sizes come from the input too, so header/body splits at every offset run.
// Every event is checked against the promises validate.h makes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "gui/validate.h"

namespace {

using namespace odyssey::gui;

void CheckRect(const Rect& r) {
  if (r.width == 0 || r.height == 0 || r.width > kMaxWindowWidth || r.height > kMaxWindowHeight) {
    std::abort();
  }
}

void CheckEvent(const GuestEvent& ev) {
  if (auto* c = std::get_if<EvCreate>(&ev)) CheckRect(c->rect);
  if (auto* c = std::get_if<EvConfigure>(&ev)) CheckRect(c->rect);
  if (auto* p = std::get_if<EvPixels>(&ev)) {
    CheckRect(p->rect);
    if (p->pixels.size() != size_t{p->rect.width} * p->rect.height * 4) std::abort();
    volatile uint8_t sum = 0;  // touch the span's ends: ASan checks they are in bounds
    sum = sum + p->pixels.front() + p->pixels.back();
  }
  if (auto* t = std::get_if<EvTitle>(&ev)) {
    if (t->title.size() > kMaxTitleBytes) std::abort();
    for (char ch : t->title) {
      if (ch != '_' && (ch < 0x20 || ch > 0x7e)) std::abort();
    }
  }
  if (auto* c = std::get_if<EvClipboard>(&ev)) {
    if (c->data.size() > kClipboardDefaultMax) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // First byte: chunk size for feeding (0 = all at once).
  size_t chunk = data[0];
  std::span<const uint8_t> rest(data + 1, size - 1);
  Limits limits;
  limits.screen_width = 1024;
  limits.screen_height = 768;
  GuestStream stream(limits, CheckEvent);
  while (!rest.empty()) {
    size_t n = chunk == 0 ? rest.size() : std::min(chunk, rest.size());
    if (!stream.Feed(rest.first(n)).ok()) break;
    rest = rest.subspan(n);
  }
  return 0;
}
