// Fuzzes the message layer as every receiver uses it: byte 0 picks the channel, byte 1 the
// negotiated version; the rest is a stream of header+body messages that must be validated
// by ValidateHeader before the body is handed to the type's parser.
#include <cstdint>
#include <cstring>
#include <string_view>

#include "qrexec/protocol.h"

using namespace odyssey::qrexec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  auto channel = static_cast<Channel>(data[0] % 7);
  uint32_t version = 2 + data[1] % 3;
  std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
  while (in.size() >= sizeof(MsgHeader)) {
    MsgHeader h;
    std::memcpy(&h, in.data(), sizeof h);
    in.remove_prefix(sizeof h);
    if (!ValidateHeader(h, channel, version).ok()) return 0;
    if (in.size() < h.len) return 0;
    std::string_view body = in.substr(0, h.len);
    in.remove_prefix(h.len);
    switch (h.type) {
      case MSG_HELLO: (void)ParseHello(body); break;
      case MSG_DATA_EXIT_CODE: (void)ParseExitCode(body); break;
      case MSG_EXEC_CMDLINE:
      case MSG_JUST_EXEC:
        if (channel != Channel::kDaemonToClient) {
          auto r = ParseExecRequest(body);
          if (r.ok()) (void)ParseCmdline(r->cmdline);
        }
        break;
      case MSG_SERVICE_CONNECT:
        if (channel != Channel::kDaemonToClient) (void)ParseServiceConnect(body);
        break;
      case MSG_SERVICE_REFUSED: (void)ParseServiceRefused(body); break;
      case MSG_CONNECTION_TERMINATED: (void)ParseConnectionTerminated(body); break;
      case MSG_TRIGGER_SERVICE:
      case MSG_TRIGGER_SERVICE3:
      case MSG_TRIGGER_SERVICE4: (void)ParseTrigger(h.type, body); break;
      default: break;
    }
  }
  return 0;
}
