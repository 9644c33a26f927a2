#include "engine/client.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "engine/config.h"

extern char** environ;

namespace odyssey::engine {

Result<AdminClient> AdminClient::Connect(const std::string& socket_path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::Errno("socket", socket_path);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof addr.sun_path)
    return Error{"socket path too long: " + socket_path, ENAMETOOLONG};
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0)
    return Error::Errno("connect", socket_path);
  return AdminClient(std::move(fd));
}

Status AdminClient::Send(const nlohmann::json& request, const std::vector<int>& fds) {
  return SendLine(fd_.get(), request, fds);
}

Result<nlohmann::json> AdminClient::Receive() {
  for (;;) {
    if (auto line = reader_.Next()) {
      if (line->oversized) return Error{"reply from odysseyd too large", EMSGSIZE};
      auto j = nlohmann::json::parse(line->text, nullptr, false);
      if (j.is_discarded() || !j.is_object())
        return Error{"odysseyd sent a malformed reply", EPROTO};
      return j;
    }
    struct pollfd p = {fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("poll", "admin socket");
    }
    auto n = reader_.ReadFrom(fd_.get());
    if (!n.ok()) {
      if (n.error().code == EAGAIN) continue;
      return n.error();
    }
    if (*n == 0) return Error{"odysseyd closed the connection (it may have stopped; see its log)", EPIPE};
  }
}

Result<nlohmann::json> AdminClient::Request(const nlohmann::json& request) {
  ODYSSEY_TRY(Send(request));
  return Receive();
}

namespace {

std::string FindDaemon(const ConnectOptions& o) {
  if (!o.daemon_path.empty()) return o.daemon_path;
  if (const char* env = std::getenv("ODYSSEY_DAEMON"); env && *env) return env;
  std::string next = ExecutableDir() + "/odysseyd";
  if (::access(next.c_str(), X_OK) == 0) return next;
  return "odysseyd";  // PATH
}

}  // namespace

Result<AdminClient> ConnectOrStart(const ConnectOptions& o) {
  std::string path = o.socket_path.empty() ? DefaultSocketPath() : o.socket_path;
  auto c = AdminClient::Connect(path);
  if (c.ok()) return c;
  int err = c.error().code;
  bool absent = err == ENOENT || err == ECONNREFUSED;
  const char* no_auto = std::getenv("ODYSSEY_NO_AUTOSTART");
  if (!absent || !o.autostart || (no_auto && std::strcmp(no_auto, "1") == 0)) {
    return Error{"odysseyd is not reachable on " + path + " (" + c.error().message +
                     "); start it with `odysseyd` (or `systemctl start odysseyd`), or point "
                     "--socket/ODYSSEY_SOCKET at a running one", err};
  }
  std::string daemon = FindDaemon(o);
  if (!o.quiet) std::fprintf(stderr, "odyssey: starting %s for you (socket %s)\n", daemon.c_str(), path.c_str());
  std::vector<std::string> args = {daemon, "--socket", path};
  if (!o.config_path.empty()) {
    args.push_back("--config");
    args.push_back(o.config_path);
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // odysseyd detaches after readiness; its foreground part exits 0 once the socket accepts.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (o.quiet) posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  else posix_spawn_file_actions_adddup2(&fa, 2, 1);
  pid_t pid;
  int rc = ::posix_spawnp(&pid, daemon.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    return Error::Errno(rc, "starting odysseyd", daemon)
        .Wrap("no odysseyd is running and none could be started (install it, or set ODYSSEY_DAEMON)");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Error{"odysseyd failed to start (see the message above, or its log in the state "
                 "directory)", EIO};
  return AdminClient::Connect(path);
}

}  // namespace odyssey::engine
