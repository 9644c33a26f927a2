#include "base/io.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "base/unique_fd.h"

namespace odyssey {

Status WriteAll(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("write", "fd " + std::to_string(fd));
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Status ReadExact(int fd, void* buf, size_t len) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = ::read(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("read", "fd " + std::to_string(fd));
    }
    if (n == 0) return Error{"unexpected end of data on fd " + std::to_string(fd), 0};
    p += n;
    len -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Result<std::string> ReadFileToString(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("read", path);
    }
    if (n == 0) break;
    if (out.size() + static_cast<size_t>(n) > max_bytes)
      return Error{path + ": larger than " + std::to_string(max_bytes) + " bytes", EFBIG};
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

Status WriteFileAtomic(const std::string& path, const std::string& content, int mode) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!fd) return Error::Errno("open", tmp);
  Status st = WriteAll(fd.get(), content.data(), content.size());
  if (st.ok() && ::fsync(fd.get()) != 0) st = Error::Errno("fsync", tmp);
  fd.reset();
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Error::Errno("rename", path);
  if (!st.ok()) ::unlink(tmp.c_str());
  return st;
}

}  // namespace odyssey
