// Stream framing for the GUI protocol: turns a byte stream into (header, body) pairs. The
// length in each header is untrusted: a per-message rule supplied by the caller decides the
// largest body it will buffer before a single body byte is read, so a peer can never make
// us allocate more than that rule allows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "base/result.h"
#include "gui/protocol.h"

namespace odyssey::gui {

class Framer {
 public:
  // Checks a header before its body is read; returns an error to end the stream.
  using HeaderCheck = std::function<Status(const MsgHeader& untrusted_hdr)>;
  // Receives a complete message; the body span is valid only during the call. The header's
  // untrusted_len equals body.size() but has been bounded only by HeaderCheck.
  using MessageSink = std::function<Status(const MsgHeader& untrusted_hdr,
                                           std::span<const uint8_t> untrusted_body)>;

  Framer(HeaderCheck check, MessageSink sink)
      : check_(std::move(check)), sink_(std::move(sink)) {}

  // Consumes bytes; may deliver any number of messages. After the first error the framer
  // is dead and refuses everything (the connection must be dropped).
  Status Feed(std::span<const uint8_t> data);
  bool dead() const { return dead_; }
  // True when no partial message is buffered.
  bool idle() const { return have_ == 0 && !in_body_; }

 private:
  Status Fail(Error e);

  HeaderCheck check_;
  MessageSink sink_;
  MsgHeader hdr_{};
  size_t have_ = 0;  // bytes of the current header or body received
  bool in_body_ = false;
  bool dead_ = false;
  std::vector<uint8_t> body_;
};

// Encodes one message: header with untrusted_len = body size, then the body.
std::vector<uint8_t> EncodeMessage(uint32_t type, uint32_t window, const void* body = nullptr,
                                   size_t body_len = 0);
template <typename T>
std::vector<uint8_t> Encode(uint32_t type, uint32_t window, const T& body) {
  return EncodeMessage(type, window, &body, sizeof(body));
}

}  // namespace odyssey::gui
