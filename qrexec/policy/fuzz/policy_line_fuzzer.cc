// Fuzz target: policy.d text, line by line (both line formats), then evaluation of the
// rules that parsed against a fixed catalog. Never touches the filesystem (includes are
// parsed, not followed).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "qrexec/policy/parser.h"
#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"

using namespace odyssey::qrexec::policy;

namespace {

const DomainCatalog& Catalog() {
  static DomainCatalogPtr catalog = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture").value();
  return *catalog;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto impl = std::make_unique<PolicyImpl>();
  int line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    ++line_no;
    for (LineFormat format : {LineFormat::kFull, LineFormat::kService}) {
      ParsedLine parsed;
      LineContext ctx{format, "fuzz.policy", line_no, "qubes.Foo", "+"};
      auto error = ParseLine(line, ctx, &parsed);
      if (error) {
        std::string shown = error->ToString();
        if (shown.empty()) __builtin_trap();
      } else if (parsed.kind == ParsedLine::Kind::kRule) {
        impl->rules_.push_back(parsed.rule);
      }
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  Policy policy(std::move(impl));
  static const Request kRequests[] = {
      {"work", "vault", "qubes.Foo+"},          {"work", "@dispvm", "qubes.Foo+x"},
      {"dom0", "@default", "qubes.Bar+"},      {"disp1234", "@dispvm:personal-dvm", "qubes.Foo+"},
      {"personal", "dom0", "any.Thing+a+b"},   {"uuid:11111111-1111-4111-8111-111111111111", "", "qubes.Foo"},
  };
  for (const auto& request : kRequests) {
    Decision d = policy.Evaluate(request, Catalog());
    if (d.reason.empty()) __builtin_trap();
    if (d.action == Action::kAllow && d.target.empty()) __builtin_trap();
  }
  return 0;
}
