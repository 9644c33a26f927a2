// Fuzz target: the policy socket request parser, then evaluation and reply formatting.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "qrexec/policy/daemon_protocol.h"
#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"

using namespace odyssey::qrexec::policy;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static DomainCatalogPtr catalog = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture").value();
  static PolicyPtr policy = Policy::FromString(
      "qubes.Foo * @anyvm @dispvm allow\nqubes.Foo +x work @tag:trusted ask default_target=vault\n"
      "* * @adminvm * allow target=@dispvm user=root\n* * @dispvm:@tag:personal @default allow target=vault\n"
      "* * * * deny\n",
      "fuzz.policy", "/nonexistent");
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto request = ParseSocketRequest(bytes);
  if (!request.ok()) {
    std::string reply = FormatSocketError(request.error().message);
    if (reply.rfind("result=deny\n", 0) != 0) __builtin_trap();
    return 0;
  }
  Decision d = policy->Evaluate(request->request, *catalog);
  std::string reply = FormatSocketReply(d);
  if (reply.rfind("result=", 0) != 0) __builtin_trap();
  for (char c : reply) {
    if (c != '\n' && (c < 0x20 || c >= 0x7f)) __builtin_trap();
  }
  return 0;
}
