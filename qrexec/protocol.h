// qrexec wire protocol: every message and struct of the Qubes qrexec protocol
// (shared/specs/qrexec.md), the version rules, and strict parsers for everything a peer
// sends. This is the ONE place that knows the byte layout. It never allocates from an
// untrusted length before checking that length against the per-type table, and it never
// trusts a string from a peer: every parser returns sanitized, owned values or an error.
// It must never do I/O: transports live in qrexec/transport.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace odyssey::qrexec {

// ---- versions -------------------------------------------------------------------------
// 2: 4 KiB data chunks, MSG_TRIGGER_SERVICE (fixed 128 bytes).
// 3: 64 KiB data chunks, MSG_TRIGGER_SERVICE3 (service name of variable length).
// 4: MSG_TRIGGER_SERVICE4 (adds the source domain).
inline constexpr uint32_t kProtocolVersion = 4;     // what we speak on vchan
inline constexpr uint32_t kMinProtocolVersion = 2;  // oldest peer we accept
inline constexpr uint32_t kClientProtocolVersion = 3;  // daemon <-> local clients
inline constexpr size_t kMaxDataChunkV2 = 4096;
inline constexpr size_t kMaxDataChunkV3 = 65536;

// ---- limits ---------------------------------------------------------------------------
inline constexpr size_t kMaxServiceNameLen = 65000;  // service+arg, without the NUL
inline constexpr size_t kMaxCmdlineLen = 65535;      // including the NUL
inline constexpr size_t kDomainNameFieldLen = 64;    // trigger v3/v4 domain fields
inline constexpr size_t kIdentLen = 32;

// ---- vchan ports ----------------------------------------------------------------------
inline constexpr int kControlPort = 512;
inline constexpr int kFirstDataPort = 513;
inline constexpr int kLastDataPort = 768;  // inclusive
inline constexpr int kDataPortCount = kLastDataPort - kFirstDataPort + 1;

// ---- exit codes -----------------------------------------------------------------------
inline constexpr int kExitProblem = 125;
inline constexpr int kExitRefused = 126;
inline constexpr int kExitNotFound = 127;

// ---- message types (explicit numbers: they are the wire) ------------------------------
enum MsgType : uint32_t {
  MSG_DATA_STDIN = 0x190,
  MSG_DATA_STDOUT = 0x191,
  MSG_DATA_STDERR = 0x192,
  MSG_DATA_EXIT_CODE = 0x193,
  MSG_EXEC_CMDLINE = 0x200,
  MSG_JUST_EXEC = 0x201,
  MSG_SERVICE_CONNECT = 0x202,
  MSG_SERVICE_REFUSED = 0x203,
  MSG_TRIGGER_SERVICE = 0x210,
  MSG_CONNECTION_TERMINATED = 0x211,
  MSG_TRIGGER_SERVICE3 = 0x212,
  MSG_TRIGGER_SERVICE4 = 0x213,
  MSG_HELLO = 0x300,
};

// Name of a message type for logs ("MSG_HELLO", or "type 0x1234").
std::string MsgTypeName(uint32_t type);

// ---- packed wire structs ---------------------------------------------------------------
#pragma pack(push, 1)
struct MsgHeader {
  uint32_t type;
  uint32_t len;  // payload bytes that follow
};
struct PeerInfo {
  uint32_t version;
};
// Followed by a NUL-terminated command line (or a 32-byte ident for SERVICE_CONNECT).
struct ExecParams {
  uint32_t connect_domain;
  uint32_t connect_port;
};
struct ServiceParams {
  char ident[kIdentLen];
};
struct TriggerServiceParams {  // v2, fixed size
  char service_name[64];
  char target_domain[32];
  ServiceParams request_id;
};
struct TriggerServiceParams3 {  // followed by the NUL-terminated service name
  char target_domain[kDomainNameFieldLen];
  ServiceParams request_id;
};
struct TriggerServiceParams4 {  // followed by the NUL-terminated service name
  char source_domain[kDomainNameFieldLen];
  char target_domain[kDomainNameFieldLen];
  ServiceParams request_id;
};
// qubes.Filecopy stream entry header and the receiver's answer.
struct FileHeader {
  uint32_t namelen;
  uint32_t mode;
  uint64_t filelen;
  uint32_t atime;
  uint32_t atime_nsec;
  uint32_t mtime;
  uint32_t mtime_nsec;
};
struct ResultHeader {
  uint32_t error_code;
  uint32_t pad;
  uint64_t crc32;
};
#pragma pack(pop)

static_assert(sizeof(MsgHeader) == 8);
static_assert(sizeof(PeerInfo) == 4);
static_assert(sizeof(ExecParams) == 8);
static_assert(sizeof(ServiceParams) == 32);
static_assert(sizeof(TriggerServiceParams) == 128);
static_assert(sizeof(TriggerServiceParams3) == 96);
static_assert(sizeof(TriggerServiceParams4) == 160);
static_assert(sizeof(FileHeader) == 32);
static_assert(sizeof(ResultHeader) == 16);

// ---- which stream a message travels on -------------------------------------------------
enum class Channel {
  kControlFromAgent,   // agent -> daemon on port 512
  kControlFromDaemon,  // daemon -> agent on port 512
  kDataToService,      // caller -> service on a data port (STDIN)
  kDataFromService,    // service -> caller on a data port (STDOUT/STDERR/EXIT_CODE)
  kClientToDaemon,     // local client -> daemon socket
  kDaemonToClient,     // daemon -> local client (reply with the data port)
  kTriggerClient,      // qrexec-client-vm -> agent trigger socket
};

// Largest data chunk allowed at a negotiated version.
size_t MaxDataChunk(uint32_t version);
// min(local, remote); an error naming the remote version if below kMinProtocolVersion.
Result<uint32_t> NegotiateVersion(uint32_t local, uint32_t untrusted_remote);

// Checks a header read from a peer before any body is read: the type must be one the peer
// may send on that channel, and len must fit that type's table entry (data chunks:
// at most MaxDataChunk(version); fixed structs: exactly their size; strings: bounded).
// HELLO is accepted on every channel (it starts every stream).
Status ValidateHeader(const MsgHeader& untrusted_header, Channel channel, uint32_t version);

// ---- parsed, trusted values ------------------------------------------------------------
// Parses a HELLO body (exactly 4 bytes); the caller then calls NegotiateVersion.
Result<uint32_t> ParseHello(std::string_view untrusted_body);
// EXIT_CODE body: exactly 4 bytes.
Result<int32_t> ParseExitCode(std::string_view untrusted_body);

// EXEC_CMDLINE / JUST_EXEC: params + NUL-terminated command line without inner NULs.
struct ExecRequest {
  uint32_t connect_domain = 0;
  uint32_t connect_port = 0;
  std::string cmdline;  // validated: non-empty, no NUL, < kMaxCmdlineLen
};
Result<ExecRequest> ParseExecRequest(std::string_view untrusted_body);

// SERVICE_CONNECT: params + 32-byte ident.
struct ServiceConnect {
  uint32_t connect_domain = 0;
  uint32_t connect_port = 0;
  std::string ident;  // validated ident (see IsValidIdent)
};
Result<ServiceConnect> ParseServiceConnect(std::string_view untrusted_body);
// SERVICE_REFUSED: 32-byte ident.
Result<std::string> ParseServiceRefused(std::string_view untrusted_body);
// CONNECTION_TERMINATED: exactly ExecParams.
Result<ExecParams> ParseConnectionTerminated(std::string_view untrusted_body);

// Any of the three trigger forms, normalized.
struct TriggerRequest {
  uint32_t type = MSG_TRIGGER_SERVICE3;
  std::string source_domain;  // only v4 carries it; empty otherwise
  std::string target_domain;  // validated domain name or @keyword
  std::string ident;          // validated ident
  std::string service_name;   // validated "service[+arg]"
};
Result<TriggerRequest> ParseTrigger(uint32_t type, std::string_view untrusted_body);

// A parsed command line "USER:QUBESRPC SERVICE+ARG SOURCE" or "USER:[nogui:]COMMAND".
struct Cmdline {
  std::string user;          // "DEFAULT" kept as is; the daemon substitutes
  bool nogui = false;
  bool is_service = false;   // QUBESRPC form
  std::string command;       // shell command (not a service)
  std::string service;       // service name without argument
  std::string argument;      // argument without the '+', may be empty
  std::string source;        // source domain of a service call
  std::string service_full() const { return service + "+" + argument; }
};
Result<Cmdline> ParseCmdline(std::string_view untrusted_cmdline);

// Splits "service+arg" (the argument may be empty; a missing '+' means empty argument).
struct ServiceAndArg {
  std::string service;
  std::string argument;
};
Result<ServiceAndArg> SplitServiceName(std::string_view untrusted_service_name);

// ---- validators ------------------------------------------------------------------------
// Domain names: [A-Za-z0-9_.-], 1..31 chars, not starting with '-', plus the keywords
// "@default", "@adminvm", "@dispvm", "@dispvm:NAME", "uuid:UUID" used by triggers.
bool IsValidDomainName(std::string_view name);
bool IsValidTargetSpec(std::string_view target);
// Service names: [A-Za-z0-9_.-] then optional '+' and argument [A-Za-z0-9_.+-].
bool IsValidServiceName(std::string_view service_and_arg);
// Idents: printable ASCII without space, 1..31 chars.
bool IsValidIdent(std::string_view ident);
// User names in command lines: [A-Za-z0-9_.-], 1..32 chars.
bool IsValidUserName(std::string_view user);

// ---- encoders (our own messages; inputs are trusted and checked with ODYSSEY_CHECK) ----
std::string EncodeHeader(uint32_t type, uint32_t len);
std::string EncodeMessage(uint32_t type, std::string_view payload);
std::string EncodeHello(uint32_t version);
std::string EncodeExitCode(int32_t code);
std::string EncodeExec(uint32_t type, uint32_t connect_domain, uint32_t connect_port,
                       std::string_view cmdline);
std::string EncodeExecParams(uint32_t type, uint32_t connect_domain, uint32_t connect_port);
std::string EncodeServiceConnect(uint32_t connect_domain, uint32_t connect_port,
                                 std::string_view ident);
std::string EncodeServiceRefused(std::string_view ident);
std::string EncodeConnectionTerminated(uint32_t connect_domain, uint32_t connect_port);
// TRIGGER_SERVICE3 (source empty) or TRIGGER_SERVICE4 (source non-empty).
std::string EncodeTrigger(const TriggerRequest& req);

// ---- policy socket protocol (spec: "Policy is asked over a Unix socket") ---------------
struct PolicyQuery {
  int domain_id = 0;
  std::string source;
  std::string intended_target;
  std::string service_and_arg;
  std::string process_ident;
};
std::string EncodePolicyQuery(const PolicyQuery& q);
struct PolicyReply {
  bool allow = false;
  std::string target;        // required with allow
  std::string user;          // may be empty (DEFAULT)
  bool autostart = false;
  std::string requested_target;
};
// Parses the policy daemon's answer (lines "key=value", first must be result=...).
// Malformed answers are errors; the caller denies on error.
Result<PolicyReply> ParsePolicyReply(std::string_view untrusted_reply);

}  // namespace odyssey::qrexec
