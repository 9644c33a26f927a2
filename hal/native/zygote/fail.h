// Error type of the zygote helper: it is built without base/ (unsanitized, no shared
// runtime with the host library), so it carries its own tiny "what failed, errno" pair.
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>

namespace odyssey::hal::native::zygote {

struct Failure {
  int code = 0;
  std::string what;  // "mount(proc on /x/proc): Operation not permitted"
};
using MaybeFailure = std::optional<Failure>;

// "call(object): strerror(errno)" with errno read now.
inline Failure Errno(const std::string& call, const std::string& object = {}) {
  int err = errno;
  std::string msg = call;
  if (!object.empty()) msg += "(" + object + ")";
  msg += ": ";
  msg += std::strerror(err);
  return Failure{err, msg};
}

#define ZYGOTE_TRY(expr)                         \
  do {                                           \
    if (auto zygote_try_ = (expr)) return zygote_try_; \
  } while (0)

}  // namespace odyssey::hal::native::zygote
