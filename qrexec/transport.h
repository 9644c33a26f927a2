// qrexec transports: framed messages over a vchan or a local Unix socket, the HELLO
// handshake, and the two ends of a data channel (caller side: stdin out, stdout/stderr/exit
// code in; service side: the reverse). Every received header is checked with
// ValidateHeader() before its body is allocated; a violation is an error, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/vchan/vchan.h"
#include "qrexec/protocol.h"

namespace odyssey::qrexec {

// One received message; body is at most the per-type limit of protocol.h.
struct Message {
  uint32_t type = 0;
  std::string untrusted_body;
};

// A bidirectional message stream. Send() is serialized internally (safe from several
// threads); Recv() must be called from one thread at a time.
class MessageStream {
 public:
  virtual ~MessageStream() = default;
  // Writes one already-encoded message (or several) atomically with respect to Send().
  Status Send(std::string_view encoded);
  // Reads one message that `channel` allows at `version`; an invalid header is an error
  // (the stream must then be dropped: it is out of sync).
  Result<Message> Recv(Channel channel, uint32_t version);
  // Like Recv(), but the body of a data message (MSG_DATA_STDIN/STDOUT/STDERR) is not copied
  // into the Message: `sink` gets it (with the message type) in pieces straight from the
  // receive buffer, and the returned Message has an empty body and `*data_len` set to the
  // body's length (0 = EOF). Other messages are returned whole (*data_len = 0).
  using BodySink = std::function<void(uint32_t type, const char* data, size_t len)>;
  Result<Message> RecvStreaming(Channel channel, uint32_t version, const BodySink& sink,
                                size_t* data_len);
  // Shuts the stream down in both directions; a blocked Recv() returns an error.
  virtual void Close() = 0;
  // Readable when data (or EOF) is pending, for poll(). Recv() reads ahead into a buffer,
  // so poll only before the first Recv() (e.g. to wait for the connection).
  virtual int PollFd() const = 0;

 protected:
  virtual Status SendRaw(const void* buf, size_t len) = 0;
  // Reads what is available, at least 1 byte (blocking); EOF is an error with code 0.
  virtual Result<size_t> RecvSome(void* buf, size_t len) = 0;

 private:
  // Exactly len bytes, through the read-ahead buffer (one read() serves many messages).
  Status RecvExact(void* buf, size_t len);
  // Refills the empty read-ahead buffer with what one read returns.
  Status Refill();

  std::mutex send_mu_;
  // Not zero-filled: only the pages a read() writes get touched (and faulted in).
  std::unique_ptr<char[]> rbuf_;
  size_t rpos_ = 0, rlen_ = 0;
};

using MessageStreamPtr = std::unique_ptr<MessageStream>;

MessageStreamPtr StreamFromVchan(vchan::VchanPtr v);
MessageStreamPtr StreamFromFd(UniqueFd fd);

// Sends our HELLO (unless send_first is false, then after receiving) and reads the peer's;
// returns the negotiated version. `channel` is what the peer may send.
Result<uint32_t> Handshake(MessageStream& s, Channel channel, uint32_t local_version,
                           bool send_first = true);

// The caller's fds for a data channel; -1 = no input / discard output. Not owned.
struct CallerFds {
  int in = -1;
  int out = -1;
  int err = -1;
  // Close out/err when the service sends their EOF (the qrexec-client does; a library
  // caller that owns nothing does not).
  bool close_on_eof = false;
};

// Caller side of a data channel after the handshake: streams fds.in as STDIN (then EOF),
// writes STDOUT/STDERR to fds.out/err, and returns the service's exit code.
Result<int> RunCallerSide(MessageStream& s, uint32_t version, const CallerFds& fds);

// The service's pipes (owned, closed as their streams end). stdin_fd may equal a socket
// (socket services): EOF from the caller then shuts down its write side.
struct ServiceFds {
  UniqueFd in;    // we write the caller's STDIN here
  UniqueFd out;   // read and sent as STDOUT
  UniqueFd err;   // read and sent as STDERR (may be invalid)
  // rpc-config exit-on-client-eof: the caller's STDIN EOF ends the call — the service's
  // fds are closed, STDOUT/STDERR EOF sent, then the exit code.
  bool exit_on_client_eof = false;
};

// Service side after the handshake: streams until out and err reach EOF, then calls
// wait_exit() for the exit code and sends it. Returns once EXIT_CODE has been sent.
Status RunServiceSide(MessageStream& s, uint32_t version, ServiceFds fds,
                      const std::function<int()>& wait_exit);

// Raises a pipe's capacity (F_SETPIPE_SZ; failures ignored): fewer wake-ups per MiB moved.
void SetPipeSize(int fd, int bytes);

// Blocks SIGPIPE in the calling thread, so writes to closed pipes fail with EPIPE even in
// a library whose host process did not ignore SIGPIPE.
void BlockSigpipeInThisThread();

}  // namespace odyssey::qrexec
