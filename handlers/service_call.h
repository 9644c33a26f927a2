// Runs one service call through a DisposableRunner while this process feeds its stdin and
// consumes its stdout concurrently, so that a host-side parser can validate the untrusted
// output as it arrives and hang up early (the service then sees EPIPE).
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "base/result.h"
#include "handlers/disposable_runner.h"

namespace odyssey::handlers {

// What to send and how to receive. Both callbacks get a borrowed fd that is closed after
// they return; write_stdin runs on its own thread, read_stdout on the calling thread.
struct CallIo {
  std::function<Status(int fd)> write_stdin;  // empty: the service gets an empty stdin
  std::function<Status(int fd)> read_stdout;  // empty: stdout is drained and discarded
  int stderr_fd = -1;                          // forwarded to ServiceCall::stderr_fd
};

// How a call ended: the service's exit code and what each side of this process reported.
struct CallOutcome {
  int exit_code = -1;    // -1 when the call was abandoned after the consumer rejected it
  Status stdin_status;   // errors writing stdin (a service that stops reading is not one)
  Status stdout_status;  // the consumer's verdict on the untrusted output
};

// Runs service+argument in target. Fails only when the runner could not make the call.
Result<CallOutcome> CallService(DisposableRunner& runner, const Target& target,
                                const std::string& service, const std::string& argument,
                                CallIo io);

// Copies the whole of in_fd to out_fd (in_fd must be readable to EOF).
Status CopyFd(int in_fd, int out_fd);
// Reads fd to EOF into out, failing (and stopping) once more than max_bytes arrive.
Status ReadAllCapped(int fd, size_t max_bytes, std::string* out);

}  // namespace odyssey::handlers
