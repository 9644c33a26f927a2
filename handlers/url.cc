#include "handlers/url.h"

#include <cctype>

namespace odyssey::handlers {
namespace {

bool IsSchemeChar(char c, bool first) {
  if (std::isalpha(static_cast<unsigned char>(c))) return true;
  return !first && (std::isdigit(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.');
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool ValidHost(const std::string& host) {
  if (host.empty() || host.size() > 253) return false;
  if (host.front() == '[') {  // IPv6 literal
    if (host.back() != ']' || host.size() < 3) return false;
    for (size_t i = 1; i + 1 < host.size(); ++i) {
      char c = host[i];
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    }
    return true;
  }
  for (char c : host) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_')
      return false;
  }
  return host.find("..") == std::string::npos && host.front() != '.';
}

}  // namespace

bool LooksLikeUrl(const std::string& text) {
  size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || colon > 32) return false;
  for (size_t i = 0; i < colon; ++i)
    if (!IsSchemeChar(text[i], i == 0)) return false;
  // "C:" style single letters are not schemes we route.
  return colon > 1;
}

std::string RemoveDotSegments(const std::string& path) {
  std::string in = path, out;
  while (!in.empty()) {
    if (in.rfind("../", 0) == 0) {
      in.erase(0, 3);
    } else if (in.rfind("./", 0) == 0) {
      in.erase(0, 2);
    } else if (in.rfind("/./", 0) == 0) {
      in.erase(0, 2);
    } else if (in == "/.") {
      in = "/";
    } else if (in.rfind("/../", 0) == 0 || in == "/..") {
      in = in == "/.." ? "/" : in.substr(3);
      size_t slash = out.rfind('/');
      out.erase(slash == std::string::npos ? 0 : slash);
    } else if (in == "." || in == "..") {
      in.clear();
    } else {
      size_t next = in.find('/', in[0] == '/' ? 1 : 0);
      out += in.substr(0, next);
      in.erase(0, next == std::string::npos ? in.size() : next);
    }
  }
  return out;
}

Result<Url> ParseUrl(const std::string& untrusted_url) {
  if (untrusted_url.size() > 65536) return Error{"URL longer than 65536 bytes", EINVAL};
  for (unsigned char c : untrusted_url) {
    if (c <= 0x20 || c == 0x7f)
      return Error{"URL contains a space or control character (byte " + std::to_string(c) + ")",
                   EINVAL};
  }
  if (!LooksLikeUrl(untrusted_url))
    return Error{"not a URL (no scheme): '" + untrusted_url + "'", EINVAL};
  Url url;
  url.original = untrusted_url;
  size_t colon = untrusted_url.find(':');
  url.scheme = Lower(untrusted_url.substr(0, colon));
  std::string rest = untrusted_url.substr(colon + 1);
  if (rest.rfind("//", 0) != 0) {  // mailto:x, urn:...: no authority
    url.path = rest;
    return url;
  }
  rest.erase(0, 2);
  size_t end = rest.find_first_of("/?#");
  std::string authority = rest.substr(0, end);
  std::string tail = end == std::string::npos ? "" : rest.substr(end);
  size_t at = authority.rfind('@');
  if (at != std::string::npos) authority.erase(0, at + 1);
  std::string host = authority;
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string::npos) return Error{"URL host: unterminated '[': '" + authority + "'", EINVAL};
    host = host.substr(0, close + 1);
  } else if (size_t port = host.find(':'); port != std::string::npos) {
    host.erase(port);
  }
  host = Lower(host);
  if (!host.empty() && host.back() == '.') host.pop_back();
  if (url.scheme != "file" && !ValidHost(host))
    return Error{"URL host is empty or malformed: '" + authority + "'", EINVAL};
  url.host = host;
  size_t q = tail.find_first_of("?#");
  url.path = RemoveDotSegments(tail.substr(0, q));
  return url;
}

}  // namespace odyssey::handlers
