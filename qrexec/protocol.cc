#include "qrexec/protocol.h"

#include <cstring>

namespace odyssey::qrexec {
namespace {

Error ProtoError(const std::string& what) { return Error{"qrexec protocol: " + what, EPROTO}; }

bool IsAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool AllCharsIn(std::string_view s, std::string_view extra) {
  for (char c : s)
    if (!IsAlnum(c) && extra.find(c) == std::string_view::npos) return false;
  return true;
}

template <typename T>
T LoadPod(std::string_view body, size_t offset = 0) {
  T v;
  ODYSSEY_CHECK(offset + sizeof(T) <= body.size());
  std::memcpy(&v, body.data() + offset, sizeof(T));
  return v;
}

template <typename T>
std::string_view PodBytes(const T& v) {
  return std::string_view(reinterpret_cast<const char*>(&v), sizeof(T));
}

// A fixed char[N] field from a peer: must contain a NUL; returns the part before it.
Result<std::string> FixedField(const char* untrusted_field, size_t n, const char* what) {
  const void* nul = std::memchr(untrusted_field, '\0', n);
  if (!nul) return ProtoError(std::string(what) + " is not NUL-terminated");
  return std::string(untrusted_field, static_cast<const char*>(nul) - untrusted_field);
}

// A trailing string that must end with exactly one NUL and contain no other.
Result<std::string> TrailingString(std::string_view untrusted, const char* what) {
  if (untrusted.empty() || untrusted.back() != '\0')
    return ProtoError(std::string(what) + " is not NUL-terminated");
  untrusted.remove_suffix(1);
  if (untrusted.find('\0') != std::string_view::npos)
    return ProtoError(std::string(what) + " contains a NUL byte");
  return std::string(untrusted);
}

void PutFixed(char* field, size_t n, std::string_view value) {
  ODYSSEY_CHECK(value.size() < n);
  std::memset(field, 0, n);
  std::memcpy(field, value.data(), value.size());
}

struct LenRule {
  uint32_t type;
  size_t min_len;
  size_t max_len;   // SIZE_MAX: data chunk, bounded by the version
  uint32_t min_version;
};

constexpr size_t kChunk = SIZE_MAX;
constexpr size_t kExecMin = sizeof(ExecParams) + 2;  // at least one char and the NUL
constexpr size_t kExecMax = sizeof(ExecParams) + kMaxCmdlineLen;
constexpr size_t kTrig3Min = sizeof(TriggerServiceParams3) + 2;
constexpr size_t kTrig3Max = sizeof(TriggerServiceParams3) + kMaxServiceNameLen + 1;
constexpr size_t kTrig4Min = sizeof(TriggerServiceParams4) + 2;
constexpr size_t kTrig4Max = sizeof(TriggerServiceParams4) + kMaxServiceNameLen + 1;
constexpr size_t kConnect = sizeof(ExecParams) + kIdentLen;

constexpr LenRule kHello{MSG_HELLO, sizeof(PeerInfo), sizeof(PeerInfo), 0};

constexpr LenRule kFromAgent[] = {
    kHello,
    {MSG_TRIGGER_SERVICE, sizeof(TriggerServiceParams), sizeof(TriggerServiceParams), 2},
    {MSG_TRIGGER_SERVICE3, kTrig3Min, kTrig3Max, 3},
    {MSG_TRIGGER_SERVICE4, kTrig4Min, kTrig4Max, 4},
    {MSG_CONNECTION_TERMINATED, sizeof(ExecParams), sizeof(ExecParams), 0},
};
constexpr LenRule kFromDaemon[] = {
    kHello,
    {MSG_EXEC_CMDLINE, kExecMin, kExecMax, 0},
    {MSG_JUST_EXEC, kExecMin, kExecMax, 0},
    {MSG_SERVICE_CONNECT, kConnect, kConnect, 0},
    {MSG_SERVICE_REFUSED, kIdentLen, kIdentLen, 0},
};
constexpr LenRule kToService[] = {
    kHello,
    {MSG_DATA_STDIN, 0, kChunk, 0},
};
constexpr LenRule kFromService[] = {
    kHello,
    {MSG_DATA_STDOUT, 0, kChunk, 0},
    {MSG_DATA_STDERR, 0, kChunk, 0},
    {MSG_DATA_EXIT_CODE, sizeof(int32_t), sizeof(int32_t), 0},
};
constexpr LenRule kClientToDaemon[] = {
    kHello,
    {MSG_EXEC_CMDLINE, kExecMin, kExecMax, 0},
    {MSG_JUST_EXEC, kExecMin, kExecMax, 0},
    {MSG_SERVICE_CONNECT, kConnect, kConnect, 0},
};
constexpr LenRule kDaemonToClient[] = {
    kHello,
    {MSG_EXEC_CMDLINE, sizeof(ExecParams), sizeof(ExecParams), 0},
    {MSG_JUST_EXEC, sizeof(ExecParams), sizeof(ExecParams), 0},
    {MSG_SERVICE_CONNECT, sizeof(ExecParams), sizeof(ExecParams), 0},
};
constexpr LenRule kTriggerClient[] = {
    {MSG_TRIGGER_SERVICE3, kTrig3Min, kTrig3Max, 0},
    {MSG_TRIGGER_SERVICE4, kTrig4Min, kTrig4Max, 0},
};

template <size_t N>
const LenRule* Find(const LenRule (&table)[N], uint32_t type) {
  for (const auto& r : table)
    if (r.type == type) return &r;
  return nullptr;
}

const LenRule* Lookup(Channel channel, uint32_t type) {
  switch (channel) {
    case Channel::kControlFromAgent: return Find(kFromAgent, type);
    case Channel::kControlFromDaemon: return Find(kFromDaemon, type);
    case Channel::kDataToService: return Find(kToService, type);
    case Channel::kDataFromService: return Find(kFromService, type);
    case Channel::kClientToDaemon: return Find(kClientToDaemon, type);
    case Channel::kDaemonToClient: return Find(kDaemonToClient, type);
    case Channel::kTriggerClient: return Find(kTriggerClient, type);
  }
  return nullptr;
}

const char* ChannelName(Channel channel) {
  switch (channel) {
    case Channel::kControlFromAgent: return "agent control channel";
    case Channel::kControlFromDaemon: return "daemon control channel";
    case Channel::kDataToService: return "data channel (to service)";
    case Channel::kDataFromService: return "data channel (from service)";
    case Channel::kClientToDaemon: return "client socket";
    case Channel::kDaemonToClient: return "daemon reply";
    case Channel::kTriggerClient: return "trigger socket";
  }
  return "?";
}

}  // namespace

std::string MsgTypeName(uint32_t type) {
  switch (type) {
    case MSG_DATA_STDIN: return "MSG_DATA_STDIN";
    case MSG_DATA_STDOUT: return "MSG_DATA_STDOUT";
    case MSG_DATA_STDERR: return "MSG_DATA_STDERR";
    case MSG_DATA_EXIT_CODE: return "MSG_DATA_EXIT_CODE";
    case MSG_EXEC_CMDLINE: return "MSG_EXEC_CMDLINE";
    case MSG_JUST_EXEC: return "MSG_JUST_EXEC";
    case MSG_SERVICE_CONNECT: return "MSG_SERVICE_CONNECT";
    case MSG_SERVICE_REFUSED: return "MSG_SERVICE_REFUSED";
    case MSG_TRIGGER_SERVICE: return "MSG_TRIGGER_SERVICE";
    case MSG_CONNECTION_TERMINATED: return "MSG_CONNECTION_TERMINATED";
    case MSG_TRIGGER_SERVICE3: return "MSG_TRIGGER_SERVICE3";
    case MSG_TRIGGER_SERVICE4: return "MSG_TRIGGER_SERVICE4";
    case MSG_HELLO: return "MSG_HELLO";
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "type 0x%x", type);
  return buf;
}

size_t MaxDataChunk(uint32_t version) {
  return version >= 3 ? kMaxDataChunkV3 : kMaxDataChunkV2;
}

Result<uint32_t> NegotiateVersion(uint32_t local, uint32_t untrusted_remote) {
  uint32_t v = untrusted_remote < local ? untrusted_remote : local;
  if (v < kMinProtocolVersion)
    return ProtoError("peer protocol version " + std::to_string(untrusted_remote) +
                      " is older than the minimum " + std::to_string(kMinProtocolVersion));
  return v;
}

Status ValidateHeader(const MsgHeader& untrusted_header, Channel channel, uint32_t version) {
  const LenRule* rule = Lookup(channel, untrusted_header.type);
  if (!rule)
    return ProtoError("unexpected " + MsgTypeName(untrusted_header.type) + " on " +
                      ChannelName(channel));
  if (version < rule->min_version)
    return ProtoError(MsgTypeName(untrusted_header.type) + " not allowed at protocol version " +
                      std::to_string(version));
  size_t max = rule->max_len == kChunk ? MaxDataChunk(version) : rule->max_len;
  if (untrusted_header.len < rule->min_len || untrusted_header.len > max)
    return ProtoError(MsgTypeName(untrusted_header.type) + " with length " +
                      std::to_string(untrusted_header.len) + " (allowed " +
                      std::to_string(rule->min_len) + ".." + std::to_string(max) + ")");
  return OkStatus();
}

Result<uint32_t> ParseHello(std::string_view untrusted_body) {
  if (untrusted_body.size() != sizeof(PeerInfo)) return ProtoError("HELLO of wrong size");
  return LoadPod<PeerInfo>(untrusted_body).version;
}

Result<int32_t> ParseExitCode(std::string_view untrusted_body) {
  if (untrusted_body.size() != sizeof(int32_t)) return ProtoError("EXIT_CODE of wrong size");
  return LoadPod<int32_t>(untrusted_body);
}

Result<ExecRequest> ParseExecRequest(std::string_view untrusted_body) {
  if (untrusted_body.size() < kExecMin || untrusted_body.size() > kExecMax)
    return ProtoError("exec request of length " + std::to_string(untrusted_body.size()));
  auto params = LoadPod<ExecParams>(untrusted_body);
  auto cmd = TrailingString(untrusted_body.substr(sizeof(ExecParams)), "command line");
  if (!cmd.ok()) return cmd.error();
  if (cmd->empty()) return ProtoError("empty command line");
  ExecRequest req;
  req.connect_domain = params.connect_domain;
  req.connect_port = params.connect_port;
  req.cmdline = std::move(cmd.value());
  return req;
}

Result<ServiceConnect> ParseServiceConnect(std::string_view untrusted_body) {
  if (untrusted_body.size() != kConnect) return ProtoError("SERVICE_CONNECT of wrong size");
  auto params = LoadPod<ExecParams>(untrusted_body);
  auto ident = FixedField(untrusted_body.data() + sizeof(ExecParams), kIdentLen, "ident");
  if (!ident.ok()) return ident.error();
  if (!IsValidIdent(*ident)) return ProtoError("invalid ident '" + *ident + "'");
  ServiceConnect sc;
  sc.connect_domain = params.connect_domain;
  sc.connect_port = params.connect_port;
  sc.ident = std::move(ident.value());
  return sc;
}

Result<std::string> ParseServiceRefused(std::string_view untrusted_body) {
  if (untrusted_body.size() != kIdentLen) return ProtoError("SERVICE_REFUSED of wrong size");
  auto ident = FixedField(untrusted_body.data(), kIdentLen, "ident");
  if (!ident.ok()) return ident.error();
  if (!IsValidIdent(*ident)) return ProtoError("invalid ident '" + *ident + "'");
  return ident;
}

Result<ExecParams> ParseConnectionTerminated(std::string_view untrusted_body) {
  if (untrusted_body.size() != sizeof(ExecParams))
    return ProtoError("CONNECTION_TERMINATED of wrong size");
  return LoadPod<ExecParams>(untrusted_body);
}

Result<TriggerRequest> ParseTrigger(uint32_t type, std::string_view untrusted_body) {
  TriggerRequest req;
  req.type = type;
  std::string_view untrusted_name;
  if (type == MSG_TRIGGER_SERVICE) {
    if (untrusted_body.size() != sizeof(TriggerServiceParams))
      return ProtoError("TRIGGER_SERVICE of wrong size");
    auto p = LoadPod<TriggerServiceParams>(untrusted_body);
    auto name = FixedField(p.service_name, sizeof p.service_name, "service name");
    auto target = FixedField(p.target_domain, sizeof p.target_domain, "target domain");
    auto ident = FixedField(p.request_id.ident, kIdentLen, "ident");
    if (!name.ok()) return name.error();
    if (!target.ok()) return target.error();
    if (!ident.ok()) return ident.error();
    req.service_name = std::move(name.value());
    req.target_domain = std::move(target.value());
    req.ident = std::move(ident.value());
  } else if (type == MSG_TRIGGER_SERVICE3 || type == MSG_TRIGGER_SERVICE4) {
    size_t fixed = type == MSG_TRIGGER_SERVICE3 ? sizeof(TriggerServiceParams3)
                                                : sizeof(TriggerServiceParams4);
    if (untrusted_body.size() < fixed + 2 || untrusted_body.size() > fixed + kMaxServiceNameLen + 1)
      return ProtoError(MsgTypeName(type) + " of length " + std::to_string(untrusted_body.size()));
    const char* target_field;
    const char* ident_field;
    if (type == MSG_TRIGGER_SERVICE3) {
      target_field = untrusted_body.data() + offsetof(TriggerServiceParams3, target_domain);
      ident_field = untrusted_body.data() + offsetof(TriggerServiceParams3, request_id);
    } else {
      auto source = FixedField(untrusted_body.data() + offsetof(TriggerServiceParams4, source_domain),
                               kDomainNameFieldLen, "source domain");
      if (!source.ok()) return source.error();
      if (!IsValidDomainName(*source))
        return ProtoError("invalid source domain '" + *source + "'");
      req.source_domain = std::move(source.value());
      target_field = untrusted_body.data() + offsetof(TriggerServiceParams4, target_domain);
      ident_field = untrusted_body.data() + offsetof(TriggerServiceParams4, request_id);
    }
    auto target = FixedField(target_field, kDomainNameFieldLen, "target domain");
    auto ident = FixedField(ident_field, kIdentLen, "ident");
    if (!target.ok()) return target.error();
    if (!ident.ok()) return ident.error();
    auto name = TrailingString(untrusted_body.substr(fixed), "service name");
    if (!name.ok()) return name.error();
    req.target_domain = std::move(target.value());
    req.ident = std::move(ident.value());
    req.service_name = std::move(name.value());
  } else {
    return ProtoError(MsgTypeName(type) + " is not a trigger");
  }
  (void)untrusted_name;
  if (!IsValidTargetSpec(req.target_domain))
    return ProtoError("invalid target domain '" + req.target_domain + "'");
  if (!IsValidIdent(req.ident)) return ProtoError("invalid ident '" + req.ident + "'");
  if (!IsValidServiceName(req.service_name))
    return ProtoError("invalid service name '" + req.service_name.substr(0, 128) + "'");
  return req;
}

Result<ServiceAndArg> SplitServiceName(std::string_view untrusted_service_name) {
  if (!IsValidServiceName(untrusted_service_name))
    return ProtoError("invalid service name '" +
                      std::string(untrusted_service_name.substr(0, 128)) + "'");
  ServiceAndArg sa;
  size_t plus = untrusted_service_name.find('+');
  if (plus == std::string_view::npos) {
    sa.service = std::string(untrusted_service_name);
  } else {
    sa.service = std::string(untrusted_service_name.substr(0, plus));
    sa.argument = std::string(untrusted_service_name.substr(plus + 1));
  }
  return sa;
}

Result<Cmdline> ParseCmdline(std::string_view untrusted_cmdline) {
  if (untrusted_cmdline.empty() || untrusted_cmdline.size() >= kMaxCmdlineLen)
    return ProtoError("command line of length " + std::to_string(untrusted_cmdline.size()));
  if (untrusted_cmdline.find('\0') != std::string_view::npos)
    return ProtoError("command line contains a NUL byte");
  size_t colon = untrusted_cmdline.find(':');
  if (colon == std::string_view::npos)
    return ProtoError("command line without USER: prefix");
  Cmdline c;
  c.user = std::string(untrusted_cmdline.substr(0, colon));
  if (!IsValidUserName(c.user)) return ProtoError("invalid user name '" + c.user.substr(0, 64) + "'");
  std::string_view rest = untrusted_cmdline.substr(colon + 1);
  constexpr std::string_view kNogui = "nogui:";
  if (rest.substr(0, kNogui.size()) == kNogui) {
    c.nogui = true;
    rest.remove_prefix(kNogui.size());
  }
  constexpr std::string_view kRpc = "QUBESRPC ";
  if (rest.substr(0, kRpc.size()) == kRpc) {
    rest.remove_prefix(kRpc.size());
    size_t sp = rest.find(' ');
    std::string_view name = rest.substr(0, sp);
    std::string_view source = sp == std::string_view::npos ? std::string_view() : rest.substr(sp + 1);
    auto sa = SplitServiceName(name);
    if (!sa.ok()) return sa.error();
    if (!source.empty() && !IsValidTargetSpec(source))
      return ProtoError("invalid source domain '" + std::string(source.substr(0, 64)) + "'");
    c.is_service = true;
    c.service = std::move(sa->service);
    c.argument = std::move(sa->argument);
    c.source = std::string(source);
    return c;
  }
  if (rest.empty()) return ProtoError("empty command");
  c.command = std::string(rest);
  return c;
}

bool IsValidDomainName(std::string_view name) {
  if (name.empty() || name.size() > 31 || name[0] == '-') return false;
  return AllCharsIn(name, "_.-");
}

bool IsValidTargetSpec(std::string_view target) {
  if (target.empty() || target.size() >= kDomainNameFieldLen) return false;
  if (target[0] == '@' || target.substr(0, 5) == "uuid:" || target[0] == '$')
    return AllCharsIn(target, "_.-@:$");
  return IsValidDomainName(target);
}

bool IsValidServiceName(std::string_view s) {
  if (s.empty() || s.size() > kMaxServiceNameLen) return false;
  size_t plus = s.find('+');
  std::string_view name = s.substr(0, plus);
  if (name.empty() || name[0] == '.' || name[0] == '-' || !AllCharsIn(name, "_.-")) return false;
  if (plus == std::string_view::npos) return true;
  std::string_view arg = s.substr(plus + 1);
  if (arg == "." || arg == "..") return false;
  return AllCharsIn(arg, "_.-+");
}

bool IsValidIdent(std::string_view ident) {
  if (ident.empty() || ident.size() >= kIdentLen) return false;
  return AllCharsIn(ident, "_.-:");
}

bool IsValidUserName(std::string_view user) {
  if (user.empty() || user.size() > 32 || user[0] == '-') return false;
  return AllCharsIn(user, "_.-");
}

std::string EncodeHeader(uint32_t type, uint32_t len) {
  MsgHeader h{type, len};
  return std::string(PodBytes(h));
}

std::string EncodeMessage(uint32_t type, std::string_view payload) {
  ODYSSEY_CHECK(payload.size() <= UINT32_MAX);
  std::string out = EncodeHeader(type, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

std::string EncodeHello(uint32_t version) {
  PeerInfo p{version};
  return EncodeMessage(MSG_HELLO, PodBytes(p));
}

std::string EncodeExitCode(int32_t code) { return EncodeMessage(MSG_DATA_EXIT_CODE, PodBytes(code)); }

std::string EncodeExec(uint32_t type, uint32_t connect_domain, uint32_t connect_port,
                       std::string_view cmdline) {
  ODYSSEY_CHECK(cmdline.size() + 1 <= kMaxCmdlineLen);
  ExecParams p{connect_domain, connect_port};
  std::string payload(PodBytes(p));
  payload.append(cmdline);
  payload.push_back('\0');
  return EncodeMessage(type, payload);
}

std::string EncodeExecParams(uint32_t type, uint32_t connect_domain, uint32_t connect_port) {
  ExecParams p{connect_domain, connect_port};
  return EncodeMessage(type, PodBytes(p));
}

std::string EncodeServiceConnect(uint32_t connect_domain, uint32_t connect_port,
                                 std::string_view ident) {
  ExecParams p{connect_domain, connect_port};
  ServiceParams s;
  PutFixed(s.ident, kIdentLen, ident);
  std::string payload(PodBytes(p));
  payload.append(PodBytes(s));
  return EncodeMessage(MSG_SERVICE_CONNECT, payload);
}

std::string EncodeServiceRefused(std::string_view ident) {
  ServiceParams s;
  PutFixed(s.ident, kIdentLen, ident);
  return EncodeMessage(MSG_SERVICE_REFUSED, PodBytes(s));
}

std::string EncodeConnectionTerminated(uint32_t connect_domain, uint32_t connect_port) {
  return EncodeExecParams(MSG_CONNECTION_TERMINATED, connect_domain, connect_port);
}

std::string EncodeTrigger(const TriggerRequest& req) {
  ODYSSEY_CHECK(req.service_name.size() <= kMaxServiceNameLen);
  std::string payload;
  if (req.source_domain.empty()) {
    TriggerServiceParams3 p;
    PutFixed(p.target_domain, sizeof p.target_domain, req.target_domain);
    PutFixed(p.request_id.ident, kIdentLen, req.ident);
    payload.assign(PodBytes(p));
  } else {
    TriggerServiceParams4 p;
    PutFixed(p.source_domain, sizeof p.source_domain, req.source_domain);
    PutFixed(p.target_domain, sizeof p.target_domain, req.target_domain);
    PutFixed(p.request_id.ident, kIdentLen, req.ident);
    payload.assign(PodBytes(p));
  }
  payload.append(req.service_name);
  payload.push_back('\0');
  return EncodeMessage(req.source_domain.empty() ? MSG_TRIGGER_SERVICE3 : MSG_TRIGGER_SERVICE4,
                       payload);
}

std::string EncodePolicyQuery(const PolicyQuery& q) {
  std::string s;
  s += "domain_id=" + std::to_string(q.domain_id) + "\n";
  s += "source=" + q.source + "\n";
  s += "intended_target=" + q.intended_target + "\n";
  s += "service_and_arg=" + q.service_and_arg + "\n";
  s += "process_ident=" + q.process_ident + "\n";
  s += "\n";
  return s;
}

Result<PolicyReply> ParsePolicyReply(std::string_view untrusted_reply) {
  PolicyReply r;
  bool first = true, have_autostart = false;
  size_t pos = 0;
  if (untrusted_reply.size() > 65536) return ProtoError("policy reply too long");
  while (pos < untrusted_reply.size()) {
    size_t nl = untrusted_reply.find('\n', pos);
    if (nl == std::string_view::npos) nl = untrusted_reply.size();
    std::string_view line = untrusted_reply.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      return ProtoError("policy reply line without '=': '" + std::string(line.substr(0, 64)) + "'");
    std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
    if (first) {
      if (key != "result" || (value != "allow" && value != "deny"))
        return ProtoError("policy reply does not start with result=allow|deny");
      r.allow = value == "allow";
      first = false;
      continue;
    }
    if (key == "result") return ProtoError("policy reply with two results");
    if (key == "target") {
      if (!IsValidTargetSpec(value))
        return ProtoError("policy reply target '" + std::string(value.substr(0, 64)) + "'");
      r.target = std::string(value);
    } else if (key == "user") {
      if (!value.empty() && !IsValidUserName(value)) return ProtoError("policy reply user invalid");
      r.user = std::string(value);
    } else if (key == "autostart") {
      if (value != "True" && value != "False") return ProtoError("policy reply autostart invalid");
      r.autostart = value == "True";
      have_autostart = true;
    } else if (key == "requested_target") {
      r.requested_target = std::string(value.substr(0, 64));
    }
    // Other keys are extensions (target_uuid=, service=, policy_source=, ...): ignored.
  }
  if (first) return ProtoError("empty policy reply");
  if (r.allow && (r.target.empty() || !have_autostart))
    return ProtoError("policy reply allow without target= and autostart=");
  if (!r.allow && (!r.target.empty() || have_autostart))
    return ProtoError("policy reply deny with target= or autostart=");
  return r;
}

}  // namespace odyssey::qrexec
