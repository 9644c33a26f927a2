#include "handlers/mime.h"

#include <fcntl.h>
#include <magic.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>

#include "base/unique_fd.h"

namespace odyssey::handlers {

Result<std::unique_ptr<MimeDetector>> MimeDetector::Create() {
  magic_t cookie = magic_open(MAGIC_MIME_TYPE | MAGIC_NO_CHECK_COMPRESS | MAGIC_NO_CHECK_ELF |
                              MAGIC_NO_CHECK_TAR | MAGIC_ERROR);
  if (!cookie) return Error::Errno("magic_open");
  if (magic_load(cookie, nullptr) != 0) {
    std::string why = magic_error(cookie) ? magic_error(cookie) : "unknown error";
    magic_close(cookie);
    return Error{"magic_load(default database): " + why, EINVAL};
  }
  return std::unique_ptr<MimeDetector>(new MimeDetector(cookie));
}

MimeDetector::~MimeDetector() { magic_close(static_cast<magic_t>(cookie_)); }

Result<std::string> MimeDetector::FromContent(const std::string& untrusted_content) {
  size_t n = std::min(untrusted_content.size(), kMaxSniffBytes);
  auto cookie = static_cast<magic_t>(cookie_);
  const char* type = magic_buffer(cookie, untrusted_content.data(), n);
  if (!type) {
    const char* why = magic_error(cookie);
    return Error{std::string("libmagic: ") + (why ? why : "no answer"), EINVAL};
  }
  return std::string(type);
}

Result<MimeGuess> MimeDetector::FromFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!fd) return Error::Errno("open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::Errno("fstat", path);
  if (!S_ISREG(st.st_mode)) return Error{path + ": not a regular file", EINVAL};
  std::string head(std::min<size_t>(static_cast<size_t>(st.st_size), kMaxSniffBytes), '\0');
  size_t got = 0;
  while (got < head.size()) {
    ssize_t r = ::read(fd.get(), head.data() + got, head.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::Errno("read", path);
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  head.resize(got);
  MimeGuess guess;
  auto content = FromContent(head);
  if (!content.ok()) return content.error().Wrap(path);
  guess.content_mime = content.value();
  guess.extension_mime = MimeFromExtension(path);
  return guess;
}

std::string MimeFromExtension(const std::string& name) {
  static const std::map<std::string, std::string> kTable = {
      {"pdf", "application/pdf"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"bmp", "image/bmp"},
      {"tif", "image/tiff"},
      {"tiff", "image/tiff"},
      {"svg", "image/svg+xml"},
      {"ppm", "image/x-portable-pixmap"},
      {"txt", "text/plain"},
      {"html", "text/html"},
      {"htm", "text/html"},
      {"odt", "application/vnd.oasis.opendocument.text"},
      {"ods", "application/vnd.oasis.opendocument.spreadsheet"},
      {"doc", "application/msword"},
      {"docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
      {"xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"},
      {"zip", "application/zip"},
      {"sh", "text/x-shellscript"},
  };
  size_t slash = name.rfind('/');
  std::string base = slash == std::string::npos ? name : name.substr(slash + 1);
  size_t dot = base.rfind('.');
  if (dot == std::string::npos || dot == 0) return {};
  std::string ext = base.substr(dot + 1);
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  auto it = kTable.find(ext);
  return it == kTable.end() ? std::string() : it->second;
}

}  // namespace odyssey::handlers
