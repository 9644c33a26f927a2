// vchan: a bidirectional byte stream between two domains, identified by (domain, port), as
// in Qubes' libvchan. Backends: "socket" (Unix sockets, Qubes' socket-vchan naming; native
// sandboxes and tests), "xen" (libxenvchan, when built), "virtio-serial" (inside a QEMU
// guest: /dev/virtio-ports/org.odyssey.vchan.<port>). This header never trusts the peer:
// every byte read is the caller's to validate.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"

namespace odyssey::vchan {

enum class Backend { kSocket, kXen, kVirtioSerial };

// Connection state, as libvchan_is_open reports it.
enum class State { kClosed = 0, kConnected = 1, kWaiting = 2 };

struct Options {
  // nullopt: $VCHAN_BACKEND ("socket", "xen", "virtio-serial") if set, else socket.
  std::optional<Backend> backend;
  // Socket backend: directory of the sockets; empty means $VCHAN_SOCKET_DIR or /var/run/vchan.
  std::string socket_dir;
  // Our own domain id; nullopt means $VCHAN_DOMAIN or 0.
  std::optional<int> own_domain;
  // Client connect retry: how long to keep retrying a missing/refused socket. nullopt = forever.
  std::optional<std::chrono::milliseconds> connect_timeout;
  // Ring sizes (hints for xen; the socket backend raises SO_SNDBUF so that an empty
  // channel reports BufferSpace() >= write_min; it never shrinks the kernel default).
  size_t read_min = 0;
  size_t write_min = 0;
  // virtio-serial backend: directory of the port devices; empty means $VCHAN_VIRTIO_DIR or
  // /dev/virtio-ports. The device is <dir>/org.odyssey.vchan.<port>.
  std::string virtio_dir;
};

// Path of the socket for a server in server_domain talking to client_domain on port:
// <dir>/vchan.<server_domain>.<client_domain>.<port>.sock
std::string SocketPath(const std::string& dir, int server_domain, int client_domain, int port);
// The socket directory in effect for opts ($VCHAN_SOCKET_DIR or /var/run/vchan by default).
std::string EffectiveSocketDir(const Options& opts);
// Our own domain id in effect for opts ($VCHAN_DOMAIN or 0 by default).
int EffectiveOwnDomain(const Options& opts);
// The backend in effect for opts; an unknown $VCHAN_BACKEND value is an error.
Result<Backend> EffectiveBackend(const Options& opts);
// "socket", "xen", "virtio-serial" -> Backend; anything else is an error.
Result<Backend> ParseBackend(const std::string& name);
const char* BackendName(Backend backend);
// Whether this build has the xen backend (libxenvchan was found at build time).
bool XenBackendCompiled();
// Device path of a virtio-serial port: <dir>/org.odyssey.vchan.<port>.
std::string VirtioPortPath(const std::string& dir, int port);
// The virtio port directory in effect for opts ($VCHAN_VIRTIO_DIR or /dev/virtio-ports).
std::string EffectiveVirtioDir(const Options& opts);

// True for the error Read()/Recv() return at end of stream (the peer closed cleanly).
inline bool IsPeerClosed(const Error& error) { return error.code == 0; }

// Threading: once connected, one thread may read (Read/Recv/DataReady) while another
// writes (Write/Send/BufferSpace); Close() may come from any thread and wakes both.
// Everything else belongs to one thread at a time.
class Vchan {
 public:
  virtual ~Vchan() = default;

  // Listens for exactly one client from peer_domain on port. Returns at once; the
  // connection is accepted on the first Wait()/Read()/Write() or when PollFd() is readable.
  static Result<std::unique_ptr<Vchan>> Server(int peer_domain, int port, const Options& opts = {});
  // Connects to the server in peer_domain on port, retrying until opts.connect_timeout.
  static Result<std::unique_ptr<Vchan>> Client(int peer_domain, int port, const Options& opts = {});
  // Starts connecting without blocking; State() is kWaiting until connected.
  static Result<std::unique_ptr<Vchan>> ClientAsync(int peer_domain, int port, const Options& opts = {});

  // Partial I/O: returns bytes moved (>0), 0 if nothing can move now without blocking
  // (only when non-blocking), or an error (including EOF: code 0, "peer closed").
  virtual Result<size_t> Read(void* buf, size_t len) = 0;
  virtual Result<size_t> Write(const void* buf, size_t len) = 0;
  // All-or-error I/O: blocks until exactly len bytes moved.
  virtual Status Recv(void* buf, size_t len) = 0;
  virtual Status Send(const void* buf, size_t len) = 0;
  // Bytes that can be read now without blocking.
  virtual size_t DataReady() = 0;
  // Bytes that can be written now without blocking.
  virtual size_t BufferSpace() = 0;
  virtual State GetState() = 0;
  bool IsOpen() { return GetState() != State::kClosed; }
  // Blocks until there is an event (data, space, connect, close); like libvchan_wait.
  // Data and close are level-triggered (Wait returns at once while data is unread);
  // "space freed" is an edge, consumed by Wait/WaitFor.
  virtual Status Wait() = 0;
  // Like Wait() but gives up after timeout (nullopt: never); true = an event was seen.
  // The default polls PollFd() and then calls Wait().
  virtual Result<bool> WaitFor(std::optional<std::chrono::milliseconds> timeout);
  // An fd that becomes readable whenever Wait() would return (for poll/epoll/Boost.Asio;
  // wrap a dup() of it in Asio, the Vchan keeps ownership).
  virtual int PollFd() const = 0;
  // Shuts the stream down; the peer sees EOF. Idempotent. PollFd() stays valid (and
  // readable) until the object is destroyed.
  virtual void Close() = 0;
  // Non-blocking mode for Read/Write (Recv/Send always block).
  virtual void SetNonBlocking(bool on) = 0;

 protected:
  // One step of a Recv/Send: moves some of the `left` bytes that start `done` bytes into
  // the caller's buffer; returns how many (0: none this time, call again) or an error.
  using TransferStep = std::function<Result<size_t>(size_t done, size_t left)>;
  // The all-or-error loop of every backend's Recv/Send: calls step until len bytes have
  // moved, or returns the first error it gives.
  static Status TransferAll(size_t len, const TransferStep& step);
};

using VchanPtr = std::unique_ptr<Vchan>;

}  // namespace odyssey::vchan
