// MIME type detection from a file's content (libmagic), plus the type its extension
// suggests, so that a mismatch can be reported. Routing trusts the content, never the name.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"

namespace odyssey::handlers {

// What the content and the name of a file say it is.
struct MimeGuess {
  std::string content_mime;    // from libmagic, e.g. "application/pdf"
  std::string extension_mime;  // from the name's extension, "" if unknown
  bool Mismatch() const { return !extension_mime.empty() && extension_mime != content_mime; }
};

// Owns one libmagic cookie. libmagic parses untrusted bytes on the host, so it is given at
// most kMaxSniffBytes and its decompression and ELF checks are off.
class MimeDetector {
 public:
  static constexpr size_t kMaxSniffBytes = 1 << 20;
  static Result<std::unique_ptr<MimeDetector>> Create();
  ~MimeDetector();
  MimeDetector(const MimeDetector&) = delete;
  MimeDetector& operator=(const MimeDetector&) = delete;

  // Detects the type of untrusted_content (only the first kMaxSniffBytes are looked at).
  Result<std::string> FromContent(const std::string& untrusted_content);
  // Reads the start of a regular file and detects its type; also looks at the extension.
  Result<MimeGuess> FromFile(const std::string& path);

 private:
  explicit MimeDetector(void* cookie) : cookie_(cookie) {}
  void* cookie_;  // magic_t
};

// The type the extension of name suggests ("x.PDF" -> "application/pdf"), "" if unknown.
std::string MimeFromExtension(const std::string& name);

}  // namespace odyssey::handlers
