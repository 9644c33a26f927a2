// Policy socket protocol: strict request parsing (every byte hostile) and reply lines.
#include "qrexec/policy/daemon_protocol.h"

namespace odyssey::qrexec::policy {
namespace {

Error Malformed(int line_no, const std::string& what) {
  return Error{"malformed request line " + std::to_string(line_no) + ": " + what, 0};
}

Result<bool> ParseYesNo(std::string_view value, int line_no) {
  if (value == "yes") return true;
  if (value == "no") return false;
  return Malformed(line_no, "expected yes or no");
}

struct Seen {
  bool source = false, target = false, service = false, domain_id = false, ident = false, requested = false,
       yes = false, just = false;
};

Status CheckOnce(bool* seen, std::string_view key, int line_no) {
  if (*seen) return Malformed(line_no, "repeated key '" + std::string(key) + "'");
  *seen = true;
  return OkStatus();
}

Status ApplyLine(std::string_view key, std::string_view value, int line_no, Seen* seen, SocketRequest* out) {
  if (key == "source") {
    ODYSSEY_TRY(CheckOnce(&seen->source, key, line_no));
    out->request.source = std::string(value);
  } else if (key == "intended_target") {
    ODYSSEY_TRY(CheckOnce(&seen->target, key, line_no));
    out->request.intended_target = std::string(value);
  } else if (key == "service_and_arg") {
    ODYSSEY_TRY(CheckOnce(&seen->service, key, line_no));
    out->request.service_and_arg = std::string(value);
  } else if (key == "domain_id") {
    ODYSSEY_TRY(CheckOnce(&seen->domain_id, key, line_no));
    if (value.empty() || value.size() > 10 || value.find_first_not_of("0123456789") != std::string_view::npos)
      return Malformed(line_no, "domain_id is not a number");
    out->domain_id = std::string(value);
  } else if (key == "process_ident") {
    ODYSSEY_TRY(CheckOnce(&seen->ident, key, line_no));
    out->process_ident = std::string(value);
  } else if (key == "requested_source") {
    ODYSSEY_TRY(CheckOnce(&seen->requested, key, line_no));
    out->requested_source = std::string(value);
  } else if (key == "assume_yes_for_ask") {
    ODYSSEY_TRY(CheckOnce(&seen->yes, key, line_no));
    auto v = ParseYesNo(value, line_no);
    if (!v.ok()) return v.error();
    out->flags.assume_yes_for_ask = *v;
  } else if (key == "just_evaluate") {
    ODYSSEY_TRY(CheckOnce(&seen->just, key, line_no));
    auto v = ParseYesNo(value, line_no);
    if (!v.ok()) return v.error();
    out->flags.just_evaluate = *v;
  } else {
    std::string shown(key.substr(0, 64));
    return Malformed(line_no, "unknown key '" + shown + "'");
  }
  return OkStatus();
}

}  // namespace

Result<SocketRequest> ParseSocketRequest(std::string_view untrusted_bytes) {
  if (untrusted_bytes.size() > kMaxSocketRequestBytes) return Error{"request too long", 0};
  // Lines up to body_end each end with '\n'; the blank line follows.
  size_t body_end = 0;
  size_t request_end = 1;
  if (untrusted_bytes.empty() || untrusted_bytes[0] != '\n') {
    size_t end = untrusted_bytes.find("\n\n");
    if (end == std::string_view::npos) return Error{"truncated request (no blank line)", 0};
    body_end = end + 1;
    request_end = end + 2;
  }
  if (untrusted_bytes.size() != request_end) return Error{"data after the blank line", 0};
  SocketRequest out;
  Seen seen;
  int line_no = 0;
  size_t pos = 0;
  while (pos < body_end) {
    size_t nl = untrusted_bytes.find('\n', pos);
    std::string_view line = untrusted_bytes.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    for (unsigned char c : line) {
      if (c < 0x20 || c >= 0x7f) return Malformed(line_no, "control or non-ASCII byte");
    }
    size_t eq = line.find('=');
    if (eq == std::string_view::npos) return Malformed(line_no, "no '='");
    std::string_view value = line.substr(eq + 1);
    if (value.size() > kMaxSocketValueBytes) return Malformed(line_no, "value too long");
    ODYSSEY_TRY(ApplyLine(line.substr(0, eq), value, line_no, &seen, &out));
  }
  if (!seen.source) return Error{"missing source=", 0};
  if (!seen.target) return Error{"missing intended_target=", 0};
  if (!seen.service) return Error{"missing service_and_arg=", 0};
  return out;
}

std::string FormatSocketReply(const Decision& d) {
  if (d.action != Action::kAllow) return "result=deny\n";
  std::string out = "result=allow\ntarget=" + d.target + "\n";
  if (!d.target_uuid.empty()) out += "target_uuid=" + d.target_uuid + "\n";
  out += std::string("autostart=") + (d.autostart ? "True" : "False") + "\n";
  if (!d.requested_target.empty()) out += "requested_target=" + d.requested_target + "\n";
  if (!d.user.empty()) out += "user=" + d.user + "\n";
  return out;
}

std::string FormatSocketError(std::string_view message) {
  std::string clean;
  for (char c : message) clean += (c >= 0x20 && c < 0x7f) ? c : '?';
  return "result=deny\nerror=" + clean + "\n";
}

}  // namespace odyssey::qrexec::policy
