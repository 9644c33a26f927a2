// One error model for all of Odyssey: Result<T> carries a value or an Error saying what
// failed and on which object. Exceptions never cross module boundaries; broken invariants
// abort through ODYSSEY_CHECK.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace odyssey {

// What went wrong, in words a user can act on, plus an errno-style code (0 if none).
struct Error {
  std::string message;
  int code = 0;

  // "CALL(OBJECT): strerror(errno)" with code = errno (read at the call).
  static Error Errno(const std::string& call, const std::string& object = {});
  static Error Errno(int err, const std::string& call, const std::string& object = {});
  // Prefixes context: Wrap("starting domain x") -> "starting domain x: <message>".
  Error Wrap(const std::string& context) const;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}      // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { Check(); return std::get<0>(v_); }
  const T& value() const& { Check(); return std::get<0>(v_); }
  T&& value() && { Check(); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  void Check() const {
    if (!ok()) {
      std::fprintf(stderr, "odyssey: value() on error result: %s\n", error().message.c_str());
      std::abort();
    }
  }
  std::variant<T, Error> v_;
};

// Result<void>.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

inline Status OkStatus() { return Status(); }

}  // namespace odyssey

// Aborts with file:line when an invariant of our own code is broken (never for bad input).
#define ODYSSEY_CHECK(cond)                                                              \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (0)

// Returns the error of a Status/Result expression from the enclosing function.
#define ODYSSEY_TRY(expr)                       \
  do {                                          \
    auto odyssey_try_ = (expr);                 \
    if (!odyssey_try_.ok()) return odyssey_try_.error(); \
  } while (0)
