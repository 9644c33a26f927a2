// Small, EINTR-safe helpers for whole-buffer I/O on file descriptors.
#pragma once

#include <cstddef>
#include <string>

#include "base/result.h"

namespace odyssey {

// Writes all of buf or fails (EPIPE, ...). Never raises SIGPIPE on sockets.
Status WriteAll(int fd, const void* buf, size_t len);
// Reads exactly len bytes; an early EOF is an error with code 0 and "unexpected end of data".
Status ReadExact(int fd, void* buf, size_t len);
// Reads a whole file, refusing files larger than max_bytes.
Result<std::string> ReadFileToString(const std::string& path, size_t max_bytes = 64 << 20);
// Writes content to path atomically: temp file in the same directory, fsync, rename.
Status WriteFileAtomic(const std::string& path, const std::string& content, int mode = 0644);

}  // namespace odyssey
