// vchan front door: environment defaults, path schemes and backend selection.
#include "hal/vchan/vchan.h"

#include <poll.h>

#include <cerrno>
#include <cstdlib>

#include "hal/vchan/socket/socket_vchan.h"
#include "hal/vchan/virtio/virtio_vchan.h"
#include "hal/vchan/xen/xen_vchan.h"

namespace odyssey::vchan {
namespace {

constexpr const char* kDefaultSocketDir = "/var/run/vchan";
constexpr const char* kDefaultVirtioDir = "/dev/virtio-ports";

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? std::string(v) : std::string(fallback);
}

}  // namespace

std::string SocketPath(const std::string& dir, int server_domain, int client_domain, int port) {
  return dir + "/vchan." + std::to_string(server_domain) + "." + std::to_string(client_domain) +
         "." + std::to_string(port) + ".sock";
}

std::string EffectiveSocketDir(const Options& opts) {
  if (!opts.socket_dir.empty()) return opts.socket_dir;
  return EnvOr("VCHAN_SOCKET_DIR", kDefaultSocketDir);
}

int EffectiveOwnDomain(const Options& opts) {
  if (opts.own_domain) return *opts.own_domain;
  // Same as Qubes' socket vchan: atoi, so garbage means 0.
  const char* v = std::getenv("VCHAN_DOMAIN");
  return v != nullptr ? std::atoi(v) : 0;
}

std::string VirtioPortPath(const std::string& dir, int port) {
  return dir + "/org.odyssey.vchan." + std::to_string(port);
}

std::string EffectiveVirtioDir(const Options& opts) {
  if (!opts.virtio_dir.empty()) return opts.virtio_dir;
  return EnvOr("VCHAN_VIRTIO_DIR", kDefaultVirtioDir);
}

Result<Backend> ParseBackend(const std::string& name) {
  if (name == "socket") return Backend::kSocket;
  if (name == "xen") return Backend::kXen;
  if (name == "virtio-serial" || name == "virtio") return Backend::kVirtioSerial;
  return Error{"unknown vchan backend '" + name + "' (want socket, xen or virtio-serial)", EINVAL};
}

const char* BackendName(Backend backend) {
  switch (backend) {
    case Backend::kSocket: return "socket";
    case Backend::kXen: return "xen";
    case Backend::kVirtioSerial: return "virtio-serial";
  }
  return "?";
}

Result<Backend> EffectiveBackend(const Options& opts) {
  if (opts.backend) return *opts.backend;
  const char* v = std::getenv("VCHAN_BACKEND");
  if (v == nullptr || *v == '\0') return Backend::kSocket;
  return ParseBackend(v);
}

bool XenBackendCompiled() { return XenVchanCompiled(); }

Result<bool> Vchan::WaitFor(std::optional<std::chrono::milliseconds> timeout) {
  if (timeout) {
    pollfd p{PollFd(), POLLIN, 0};
    int n;
    do {
      n = ::poll(&p, 1, static_cast<int>(timeout->count()));
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Error::Errno("poll", "vchan");
    if (n == 0) return false;
  }
  ODYSSEY_TRY(Wait());
  return true;
}

Status Vchan::TransferAll(size_t len, const TransferStep& step) {
  size_t done = 0;
  while (done < len) {
    auto n = step(done, len - done);
    if (!n.ok()) return n.error();
    done += *n;
  }
  return OkStatus();
}

namespace {

enum class Role { kServer, kClient, kClientAsync };

Result<VchanPtr> Open(Role role, int peer_domain, int port, const Options& opts) {
  auto backend = EffectiveBackend(opts);
  if (!backend.ok()) return backend.error();
  if (port < 0 || peer_domain < 0) {
    return Error{"vchan: negative domain or port (" + std::to_string(peer_domain) + ", " +
                     std::to_string(port) + ")",
                 EINVAL};
  }
  switch (*backend) {
    case Backend::kSocket: {
      const std::string dir = EffectiveSocketDir(opts);
      const int own = EffectiveOwnDomain(opts);
      if (role == Role::kServer) {
        return SocketVchan::CreateServer(SocketPath(dir, own, peer_domain, port), opts);
      }
      return SocketVchan::CreateClient(SocketPath(dir, peer_domain, own, port), opts,
                                       role == Role::kClientAsync);
    }
    case Backend::kVirtioSerial:
      return VirtioVchan::Open(VirtioPortPath(EffectiveVirtioDir(opts), port), opts);
    case Backend::kXen:
      if (role == Role::kServer) return XenVchanServer(peer_domain, port, opts);
      return XenVchanClient(peer_domain, port, opts);
  }
  return Error{"vchan: bad backend", EINVAL};
}

}  // namespace

Result<VchanPtr> Vchan::Server(int peer_domain, int port, const Options& opts) {
  return Open(Role::kServer, peer_domain, port, opts);
}

Result<VchanPtr> Vchan::Client(int peer_domain, int port, const Options& opts) {
  return Open(Role::kClient, peer_domain, port, opts);
}

Result<VchanPtr> Vchan::ClientAsync(int peer_domain, int port, const Options& opts) {
  return Open(Role::kClientAsync, peer_domain, port, opts);
}

}  // namespace odyssey::vchan
