// Fuzz target: the rule-file parser and matching against a few fixed subjects. Any input
// must give either a RuleSet or an error naming FILE:LINE, never a crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/result.h"
#include "handlers/rules.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace odyssey::handlers;
  std::string text(reinterpret_cast<const char*>(data), size);
  auto set = RuleSet::Parse(text, "fuzz.rules");
  if (!set.ok()) {
    ODYSSEY_CHECK(set.error().message.rfind("fuzz.rules:", 0) == 0);
    return 0;
  }
  set->MatchMime("application/pdf");
  set->MatchMime("image/png");
  for (const char* u : {"https://www.example.org/docs/a", "mailto:a@b", "ftp://[::1]/x"}) {
    auto url = ParseUrl(u);
    if (url.ok()) set->MatchUrl(url.value());
  }
  // The URL parser is fed the same bytes.
  auto url = ParseUrl(text);
  if (url.ok()) set->MatchUrl(url.value());
  for (const auto& r : set->rules()) (void)r.action.Explain();
  return 0;
}
