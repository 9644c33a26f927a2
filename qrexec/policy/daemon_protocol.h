// The policy socket protocol (Qubes qrexec-policy-daemon): a client writes `key=value`
// lines ending with an empty line; the daemon answers `result=allow|deny` plus extension
// lines, then closes the connection. Parsing here treats every byte as hostile.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "base/result.h"
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {

// Longest request accepted, blank line included; longer ones get an error reply.
inline constexpr size_t kMaxSocketRequestBytes = 64 * 1024;
// Longest single value accepted.
inline constexpr size_t kMaxSocketValueBytes = 4096;

// A validated request from the socket.
struct SocketRequest {
  Request request;
  DecideFlags flags;
  std::string domain_id;         // optional, digits
  std::string process_ident;     // optional, opaque (printable ASCII)
  std::string requested_source;  // optional
};

// Parses the bytes of one request, which must end with "\n\n" (the blank line) and hold
// nothing after it. Required keys: source, intended_target, service_and_arg. Optional:
// domain_id, process_ident, requested_source, assume_yes_for_ask=yes|no,
// just_evaluate=yes|no. Unknown or repeated keys, missing '=', control bytes, or values
// longer than kMaxSocketValueBytes are errors naming the offending line.
Result<SocketRequest> ParseSocketRequest(std::string_view untrusted_bytes);

// The reply for a decision: "result=allow\ntarget=…\n[target_uuid=…\n]autostart=True|False\n
// requested_target=…\n[user=…\n]" or "result=deny\n" (an `ask` that reaches here is deny).
std::string FormatSocketReply(const Decision& decision);
// The reply for a request that could not be parsed: "result=deny\nerror=MESSAGE\n".
std::string FormatSocketError(std::string_view message);

}  // namespace odyssey::qrexec::policy
