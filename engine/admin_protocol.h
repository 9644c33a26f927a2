// Admin protocol between the odyssey CLI (or any local client) and odysseyd: JSON objects,
// one per line, over a Unix stream socket. File descriptors (the caller's stdin, stdout,
// stderr, a file's contents) travel with SCM_RIGHTS attached to the bytes of the request
// line they belong to, so the daemon never opens a user's path. The daemon learns who the
// caller is from SO_PEERCRED, never from the request. Both sides treat the peer's bytes as
// untrusted: lines are size-capped, JSON parse errors become error replies.
//
// Requests:  {"op": "ping"|"run"|"call"|"ls"|"kill"|"pool"|"template_ls"|"template_add"|
//             "template_rm"|"policy_check"|"stats"|"calls"|"shutdown", "id": any, ...}
// Replies:   {"ok": true, ...} or {"ok": false, "error": "what happened and what to do"};
//            "run"/"call" first send {"event": "started", ...} then {"event": "exit", ...}.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace odyssey::engine {

inline constexpr int kMaxFdsPerRequest = 4;
inline constexpr const char* kProtocolVersion = "odyssey-admin/1";

// One complete line read from the peer and the descriptors that arrived with it.
struct ReceivedLine {
  std::string text;              // untrusted; without the trailing '\n'
  std::vector<UniqueFd> fds;     // untrusted descriptors, owned
  bool oversized = false;        // the line exceeded the cap; text is empty
};

// Accumulates bytes and SCM_RIGHTS descriptors from a stream socket and cuts them into
// lines of at most max_line bytes. An oversized line is reported once (oversized=true) and
// its remaining bytes and descriptors are discarded up to its newline.
class LineReader {
 public:
  explicit LineReader(size_t max_line) : max_line_(max_line) {}
  // One recvmsg() on fd. Returns bytes read (0 = peer closed); EAGAIN comes back as an
  // error with code EAGAIN.
  Result<size_t> ReadFrom(int fd);
  // The next complete line, if any.
  std::optional<ReceivedLine> Next();
  bool discarding() const { return discarding_; }

 private:
  size_t max_line_;
  std::string buf_;
  std::vector<UniqueFd> pending_fds_;
  std::deque<ReceivedLine> ready_;
  bool discarding_ = false;
};

// Sends j as one line, with fds attached (SCM_RIGHTS) to its first byte. Blocking.
Status SendLine(int fd, const nlohmann::json& j, const std::vector<int>& fds = {});

// The peer's credentials (SO_PEERCRED).
Result<struct ucred> PeerCredentials(int fd);

// Parses one request line; a non-object or invalid JSON is an error naming the problem.
Result<nlohmann::json> ParseRequest(const std::string& line);

// Reply helpers.
nlohmann::json ErrorReply(const std::string& message, const nlohmann::json& id = nullptr);
nlohmann::json OkReply(const nlohmann::json& id = nullptr);

}  // namespace odyssey::engine
