#include "base/result.h"

#include <cstring>

namespace odyssey {

Error Error::Errno(const std::string& call, const std::string& object) {
  return Errno(errno, call, object);
}

Error Error::Errno(int err, const std::string& call, const std::string& object) {
  std::string msg = call;
  if (!object.empty()) msg += "(" + object + ")";
  msg += ": ";
  msg += std::strerror(err);
  return Error{msg, err};
}

Error Error::Wrap(const std::string& context) const {
  return Error{context + ": " + message, code};
}

}  // namespace odyssey
