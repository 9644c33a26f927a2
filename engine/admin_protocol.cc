#include "engine/admin_protocol.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace odyssey::engine {

Result<size_t> LineReader::ReadFrom(int fd) {
  char data[16384];
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  struct iovec iov = {data, sizeof data};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Error::Errno("recvmsg", "admin connection");
  std::vector<UniqueFd> fds;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.emplace_back(received);
    }
  }
  // Descriptors belong to the line whose bytes they came with; with a truncated control
  // buffer some were dropped by the kernel, so the whole request becomes invalid.
  bool truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (auto& f : fds) {
    if (discarding_ || truncated) continue;  // UniqueFd closes it
    pending_fds_.push_back(std::move(f));
  }
  if (truncated) {
    pending_fds_.clear();
    if (!discarding_) {
      ready_.push_back({"", {}, true});
      discarding_ = true;
      buf_.clear();
    }
  }
  for (ssize_t i = 0; i < n; ++i) {
    char ch = data[i];
    if (discarding_) {
      if (ch == '\n') discarding_ = false;
      continue;
    }
    if (ch == '\n') {
      ReceivedLine line{std::move(buf_), std::move(pending_fds_), false};
      buf_.clear();
      pending_fds_.clear();
      ready_.push_back(std::move(line));
      continue;
    }
    buf_.push_back(ch);
    if (buf_.size() > max_line_) {
      buf_.clear();
      pending_fds_.clear();
      ready_.push_back({"", {}, true});
      discarding_ = true;
    }
  }
  return static_cast<size_t>(n);
}

std::optional<ReceivedLine> LineReader::Next() {
  if (ready_.empty()) return std::nullopt;
  ReceivedLine line = std::move(ready_.front());
  ready_.pop_front();
  return line;
}

Status SendLine(int fd, const nlohmann::json& j, const std::vector<int>& fds) {
  std::string text = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (fds.size() > 16) return Error{"too many descriptors for one request", EINVAL};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)] = {};
  size_t off = 0;
  bool fds_sent = fds.empty();
  while (off < text.size()) {
    struct iovec iov = {text.data() + off, text.size() - off};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds_sent) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, nullptr);
        continue;
      }
      return Error::Errno("sendmsg", "admin socket");
    }
    fds_sent = true;
    off += static_cast<size_t>(n);
  }
  return OkStatus();
}

Result<struct ucred> PeerCredentials(int fd) {
  struct ucred cred = {};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return Error::Errno("getsockopt(SO_PEERCRED)", "admin connection");
  return cred;
}

Result<nlohmann::json> ParseRequest(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Error{"malformed request: not valid JSON", EINVAL};
  if (!j.is_object()) return Error{"malformed request: expected a JSON object", EINVAL};
  if (!j.contains("op") || !j["op"].is_string())
    return Error{"malformed request: missing string field \"op\"", EINVAL};
  return j;
}

nlohmann::json ErrorReply(const std::string& message, const nlohmann::json& id) {
  nlohmann::json j = {{"ok", false}, {"error", message}};
  if (!id.is_null()) j["id"] = id;
  return j;
}

nlohmann::json OkReply(const nlohmann::json& id) {
  nlohmann::json j = {{"ok", true}};
  if (!id.is_null()) j["id"] = id;
  return j;
}

}  // namespace odyssey::engine
