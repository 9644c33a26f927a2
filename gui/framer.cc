#include "gui/framer.h"

#include <algorithm>
#include <cstring>

namespace odyssey::gui {

Status Framer::Fail(Error e) {
  dead_ = true;
  body_.clear();
  body_.shrink_to_fit();
  return e;
}

Status Framer::Feed(std::span<const uint8_t> data) {
  if (dead_) return Error{"gui: stream already failed", 0};
  while (!data.empty()) {
    if (!in_body_) {
      size_t take = std::min(sizeof(MsgHeader) - have_, data.size());
      std::memcpy(reinterpret_cast<uint8_t*>(&hdr_) + have_, data.data(), take);
      have_ += take;
      data = data.subspan(take);
      if (have_ < sizeof(MsgHeader)) break;
      Status st = check_(hdr_);
      if (!st.ok()) return Fail(st.error());
      in_body_ = true;
      have_ = 0;
      // Bounded by check_: it refused any length larger than the type allows.
      body_.resize(hdr_.untrusted_len);
    }
    size_t take = std::min(body_.size() - have_, data.size());
    if (take) std::memcpy(body_.data() + have_, data.data(), take);
    have_ += take;
    data = data.subspan(take);
    if (have_ < body_.size()) break;
    in_body_ = false;
    have_ = 0;
    Status st = sink_(hdr_, std::span<const uint8_t>(body_.data(), body_.size()));
    if (!st.ok()) return Fail(st.error());
  }
  return OkStatus();
}

std::vector<uint8_t> EncodeMessage(uint32_t type, uint32_t window, const void* body,
                                   size_t body_len) {
  std::vector<uint8_t> out(sizeof(MsgHeader) + body_len);
  MsgHeader hdr{type, window, static_cast<uint32_t>(body_len)};
  std::memcpy(out.data(), &hdr, sizeof(hdr));
  if (body_len) std::memcpy(out.data() + sizeof(hdr), body, body_len);
  return out;
}

const char* MsgTypeName(uint32_t type) {
  switch (type) {
    case MSG_KEYPRESS: return "MSG_KEYPRESS";
    case MSG_BUTTON: return "MSG_BUTTON";
    case MSG_MOTION: return "MSG_MOTION";
    case MSG_CROSSING: return "MSG_CROSSING";
    case MSG_FOCUS: return "MSG_FOCUS";
    case MSG_CREATE: return "MSG_CREATE";
    case MSG_DESTROY: return "MSG_DESTROY";
    case MSG_MAP: return "MSG_MAP";
    case MSG_UNMAP: return "MSG_UNMAP";
    case MSG_CONFIGURE: return "MSG_CONFIGURE";
    case MSG_SHMIMAGE: return "MSG_SHMIMAGE";
    case MSG_CLOSE: return "MSG_CLOSE";
    case MSG_CLIPBOARD_REQ: return "MSG_CLIPBOARD_REQ";
    case MSG_CLIPBOARD_DATA: return "MSG_CLIPBOARD_DATA";
    case MSG_WMNAME: return "MSG_WMNAME";
    case MSG_WINDOW_HINTS: return "MSG_WINDOW_HINTS";
    case MSG_WINDOW_FLAGS: return "MSG_WINDOW_FLAGS";
    case MSG_WMCLASS: return "MSG_WMCLASS";
    case MSG_WINDOW_DUMP: return "MSG_WINDOW_DUMP";
    case MSG_CURSOR: return "MSG_CURSOR";
    case MSG_WINDOW_DUMP_ACK: return "MSG_WINDOW_DUMP_ACK";
    case MSG_PIXELS: return "MSG_PIXELS";
    default: return "unknown";
  }
}

}  // namespace odyssey::gui
