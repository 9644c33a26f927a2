// Fuzzes the parser of the policy daemon's answer (key=value lines).
#include <cstdint>
#include <string_view>

#include "qrexec/protocol.h"

using namespace odyssey::qrexec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = ParsePolicyReply(std::string_view(reinterpret_cast<const char*>(data), size));
  if (r.ok() && r->allow && r->target.empty()) __builtin_trap();
  return 0;
}
