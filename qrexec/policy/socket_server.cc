#include "qrexec/policy/socket_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "base/io.h"
#include "qrexec/policy/daemon_protocol.h"

namespace odyssey::qrexec::policy {
namespace {

constexpr size_t kMaxDrainBytes = 16 << 20;

void SendReply(int fd, const std::string& reply) {
  (void)WriteAll(fd, reply.data(), reply.size());  // a vanished client is not our problem
  ::shutdown(fd, SHUT_WR);
}

// After an early reply, read and drop what the client still sends so it can finish
// writing and read the reply; bounded by size and the receive timeout.
void Drain(int fd) {
  char buf[16384];
  size_t total = 0;
  while (total < kMaxDrainBytes) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    total += static_cast<size_t>(n);
  }
}

bool RequestComplete(const std::string& buf) {
  return (!buf.empty() && buf[0] == '\n') || buf.find("\n\n") != std::string::npos;
}

std::string Sanitize(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 200)) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

}  // namespace

Result<std::unique_ptr<SocketServer>> SocketServer::Create(SocketServerOptions options,
                                                           std::shared_ptr<PolicyService> service) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.socket_path.empty() || options.socket_path.size() >= sizeof addr.sun_path) {
    return Error{"socket path '" + options.socket_path + "' is empty or too long", ENAMETOOLONG};
  }
  std::memcpy(addr.sun_path, options.socket_path.c_str(), options.socket_path.size() + 1);
  struct stat st;
  if (::lstat(options.socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{"'" + options.socket_path + "' exists and is not a socket", EEXIST};
    ::unlink(options.socket_path.c_str());
  }
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::Errno("socket", options.socket_path);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return Error::Errno("bind", options.socket_path);
  ::chmod(options.socket_path.c_str(), 0660);
  if (::listen(fd.get(), 128) != 0) return Error::Errno("listen", options.socket_path);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) != 0) return Error::Errno("pipe2", "wake pipe");
  return std::unique_ptr<SocketServer>(new SocketServer(std::move(options), std::move(service), std::move(fd),
                                                        UniqueFd(pipefd[0]), UniqueFd(pipefd[1])));
}

SocketServer::SocketServer(SocketServerOptions options, std::shared_ptr<PolicyService> service, UniqueFd listen_fd,
                           UniqueFd wake_read, UniqueFd wake_write)
    : options_(std::move(options)),
      service_(std::move(service)),
      listen_fd_(std::move(listen_fd)),
      wake_read_(std::move(wake_read)),
      wake_write_(std::move(wake_write)) {}

SocketServer::~SocketServer() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait(lock, [this] { return active_ == 0; });
  ::unlink(options_.socket_path.c_str());
}

void SocketServer::Stop() {
  char c = 1;
  ssize_t n = ::write(wake_write_.get(), &c, 1);
  (void)n;
}

Status SocketServer::Run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_.get(), POLLIN, 0}, {wake_read_.get(), POLLIN, 0}};
    int rc = ::poll(fds, 2, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("poll", options_.socket_path);
    }
    if (fds[1].revents) return OkStatus();
    if (!(fds[0].revents & POLLIN)) continue;
    UniqueFd conn(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) continue;  // EAGAIN, ECONNABORTED, EMFILE...: keep serving
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (active_ >= options_.max_connections) {
        SendReply(conn.get(), FormatSocketError("server busy"));
        continue;
      }
      ++active_;
    }
    std::thread([this, c = std::move(conn)]() mutable {
      Serve(std::move(c));
      Finish();
    }).detach();
  }
}

void SocketServer::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  --active_;
  idle_.notify_all();
}

void SocketServer::Serve(UniqueFd fd) {
  timeval tv{options_.request_timeout_seconds, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string untrusted_buf;
  char chunk[4096];
  while (!RequestComplete(untrusted_buf)) {
    if (untrusted_buf.size() > kMaxSocketRequestBytes) {
      std::fprintf(stderr, "qrexec-policy-daemon: refused a request longer than %zu bytes\n", kMaxSocketRequestBytes);
      SendReply(fd.get(), FormatSocketError("request too long"));
      Drain(fd.get());
      return;
    }
    ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string why = (errno == EAGAIN || errno == EWOULDBLOCK) ? "request timed out" : std::strerror(errno);
      std::fprintf(stderr, "qrexec-policy-daemon: dropped a connection: %s\n", why.c_str());
      SendReply(fd.get(), FormatSocketError(why));
      return;
    }
    if (n == 0) {
      std::fprintf(stderr, "qrexec-policy-daemon: truncated request (%zu bytes, no blank line)\n", untrusted_buf.size());
      SendReply(fd.get(), FormatSocketError("truncated request (no blank line)"));
      return;
    }
    untrusted_buf.append(chunk, static_cast<size_t>(n));
  }
  auto request = ParseSocketRequest(untrusted_buf);
  if (!request.ok()) {
    std::fprintf(stderr, "qrexec-policy-daemon: %s\n", request.error().message.c_str());
    SendReply(fd.get(), FormatSocketError(request.error().message));
    return;
  }
  Decision d = service_->Decide(request->request, request->flags);
  if (options_.log_decisions) {
    std::fprintf(stderr, "qrexec-policy-daemon: %s source=%s target=%s service=%s rule=%s: %s\n",
                 std::string(ActionName(d.action)).c_str(), Sanitize(request->request.source).c_str(),
                 Sanitize(d.target.empty() ? request->request.intended_target : d.target).c_str(),
                 Sanitize(request->request.service_and_arg).c_str(), d.rule.ToString().c_str(), d.reason.c_str());
  }
  SendReply(fd.get(), FormatSocketReply(d));
}

}  // namespace odyssey::qrexec::policy
