// A strict URL splitter for routing decisions. It is no general URL library: it only
// extracts what routing rules match on and refuses anything ambiguous.
#pragma once

#include <string>

#include "base/result.h"

namespace odyssey::handlers {

// The parts routing matches on, normalized: scheme and host lower-case, port and userinfo
// dropped, the path with dot segments removed (so /docs/../admin is /admin).
struct Url {
  std::string scheme;  // "https"
  std::string host;    // "www.example.org", "" for URLs without authority (mailto:)
  std::string path;    // "/a/b", "" when absent; for mailto: the rest after the colon
  std::string original;
};

// True when text starts like "scheme:" (and so is to be treated as a URL, not a path).
bool LooksLikeUrl(const std::string& text);
// Parses untrusted_url; refuses control characters, spaces, empty or malformed hosts.
Result<Url> ParseUrl(const std::string& untrusted_url);
// RFC 3986 5.2.4 remove_dot_segments.
std::string RemoveDotSegments(const std::string& path);

}  // namespace odyssey::handlers
