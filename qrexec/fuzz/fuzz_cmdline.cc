// Fuzzes the command-line parser ("USER:QUBESRPC service+arg source" / "USER:command").
#include <cstdint>
#include <string_view>

#include "qrexec/protocol.h"

using namespace odyssey::qrexec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto r = ParseCmdline(in);
  if (r.ok() && r->is_service && !IsValidServiceName(r->service_full())) __builtin_trap();
  (void)ParseExecRequest(in);
  return 0;
}
