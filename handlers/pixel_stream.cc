#include "handlers/pixel_stream.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace odyssey::handlers {
namespace {

constexpr size_t kMaxLine = 32;

// Shows an untrusted token safely: printable ASCII kept, the rest as \xNN, cut at 40.
std::string Printable(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > 40) out += "...";
  return out;
}

}  // namespace

Result<uint64_t> ParseBoundedNumber(const std::string& untrusted_token, uint64_t max,
                                    const std::string& what) {
  const std::string& t = untrusted_token;
  if (t.empty() || t.size() > 10 || t[0] == '0')
    return Error{what + ": not a number in range 1.." + std::to_string(max) + ": '" + Printable(t) + "'",
                 EPROTO};
  uint64_t v = 0;
  for (char c : t) {
    if (c < '0' || c > '9')
      return Error{what + ": not a decimal number: '" + Printable(t) + "'", EPROTO};
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > max)
    return Error{what + " " + std::to_string(v) + " exceeds the cap of " + std::to_string(max), EPROTO};
  return v;
}

Status PixelStreamParser::FinishLine(const PageSink& sink) {
  (void)sink;
  if (state_ == State::kCount) {
    auto n = ParseBoundedNumber(line_, limits_.max_pages, "page count");
    if (!n.ok()) return Fail(n.error());
    total_pages_ = static_cast<uint32_t>(n.value());
    state_ = State::kDims;
    line_.clear();
    return OkStatus();
  }
  std::string where = "page " + std::to_string(pages_done_ + 1) + "/" + std::to_string(total_pages_);
  size_t space = line_.find(' ');
  if (space == std::string::npos)
    return Fail(Error{where + ": expected 'WIDTH HEIGHT', got '" + Printable(line_) + "'", EPROTO});
  auto w = ParseBoundedNumber(line_.substr(0, space), limits_.max_dim, where + " width");
  if (!w.ok()) return Fail(w.error());
  auto h = ParseBoundedNumber(line_.substr(space + 1), limits_.max_dim, where + " height");
  if (!h.ok()) return Fail(h.error());
  uint64_t bytes = 0;
  bool overflow = __builtin_mul_overflow(w.value(), h.value(), &bytes) ||
                  __builtin_mul_overflow(bytes, uint64_t{3}, &bytes);
  if (overflow || bytes > limits_.max_page_bytes)
    return Fail(Error{where + ": " + std::to_string(w.value()) + "x" + std::to_string(h.value()) +
                          " needs " + std::to_string(bytes) + " bytes, over the per-page cap of " +
                          std::to_string(limits_.max_page_bytes),
                      EPROTO});
  if (pixel_bytes_announced_ + bytes > limits_.max_total_bytes)
    return Fail(Error{where + ": the pages so far would need more than the total cap of " +
                          std::to_string(limits_.max_total_bytes) + " bytes",
                      EPROTO});
  pixel_bytes_announced_ += bytes;
  page_.width = static_cast<uint32_t>(w.value());
  page_.height = static_cast<uint32_t>(h.value());
  page_.rgb.assign(static_cast<size_t>(bytes), 0);  // only now, with validated dimensions
  filled_ = 0;
  line_.clear();
  state_ = State::kPixels;
  return OkStatus();
}

Status PixelStreamParser::Feed(const uint8_t* untrusted_data, size_t size, const PageSink& sink) {
  size_t i = 0;
  bytes_received_ += size;
  while (i < size) {
    switch (state_) {
      case State::kFailed:
        return Error{"pixel stream: fed after an error", EPROTO};
      case State::kDone:
        return Fail(Error{"pixel stream: " + std::to_string(size - i) +
                              " unexpected byte(s) after the last page",
                          EPROTO});
      case State::kCount:
      case State::kDims: {
        char c = static_cast<char>(untrusted_data[i++]);
        if (c == '\n') {
          ODYSSEY_TRY(FinishLine(sink));
          break;
        }
        if (line_.size() >= kMaxLine)
          return Fail(Error{"pixel stream: header line longer than 32 bytes: '" + Printable(line_) + "'",
                            EPROTO});
        line_ += c;
        break;
      }
      case State::kPixels: {
        size_t n = std::min(size - i, page_.rgb.size() - filled_);
        std::memcpy(page_.rgb.data() + filled_, untrusted_data + i, n);
        filled_ += n;
        i += n;
        if (filled_ == page_.rgb.size()) {
          ++pages_done_;
          Status st = sink ? sink(page_, pages_done_, total_pages_) : OkStatus();
          if (!st.ok()) return Fail(st.error());
          page_.rgb.clear();
          page_.rgb.shrink_to_fit();
          state_ = pages_done_ == total_pages_ ? State::kDone : State::kDims;
        }
        break;
      }
    }
  }
  return state_ == State::kFailed ? Status(Error{"pixel stream: failed", EPROTO}) : OkStatus();
}

Status PixelStreamParser::Finish() const {
  switch (state_) {
    case State::kDone: return OkStatus();
    case State::kFailed: return Error{"pixel stream: failed earlier", EPROTO};
    case State::kCount:
      return Error{bytes_received_ == 0 ? "pixel stream: empty (the renderer sent nothing)"
                                        : "pixel stream: truncated in the page count",
                   EPROTO};
    case State::kDims:
      return Error{"pixel stream: truncated: " + std::to_string(pages_done_) + " of " +
                       std::to_string(total_pages_) + " pages arrived",
                   EPROTO};
    case State::kPixels:
      return Error{"pixel stream: truncated in page " + std::to_string(pages_done_ + 1) + ": " +
                       std::to_string(filled_) + " of " + std::to_string(page_.rgb.size()) +
                       " bytes",
                   EPROTO};
  }
  return Error{"pixel stream: bad state", EPROTO};
}

}  // namespace odyssey::handlers
