// Fuzzes the trigger parsers (agent trigger socket and the daemon's control channel):
// byte 0 picks MSG_TRIGGER_SERVICE, 3 or 4; the rest is the body.
#include <cstdint>
#include <string_view>

#include "qrexec/protocol.h"

using namespace odyssey::qrexec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const uint32_t kTypes[] = {MSG_TRIGGER_SERVICE, MSG_TRIGGER_SERVICE3, MSG_TRIGGER_SERVICE4};
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  auto r = ParseTrigger(kTypes[data[0] % 3], body);
  if (r.ok()) {
    // A parsed request must re-encode (v3/v4) and parse back to the same values.
    if (r->type != MSG_TRIGGER_SERVICE) {
      std::string again = EncodeTrigger(*r);
      auto r2 = ParseTrigger(r->type, std::string_view(again).substr(sizeof(MsgHeader)));
      if (!r2.ok() || r2->service_name != r->service_name || r2->ident != r->ident) __builtin_trap();
    }
    (void)SplitServiceName(r->service_name);
  }
  return 0;
}
