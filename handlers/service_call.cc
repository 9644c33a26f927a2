#include "handlers/service_call.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

#include "base/io.h"
#include "base/unique_fd.h"

namespace odyssey::handlers {
namespace {

// A connected pair; sockets rather than pipes so that writes to a peer that hung up return
// EPIPE (MSG_NOSIGNAL) instead of killing this process with SIGPIPE.
Status MakePair(UniqueFd* ours, UniqueFd* theirs) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return Error::Errno("socketpair");
  ours->reset(sv[0]);
  theirs->reset(sv[1]);
  return OkStatus();
}

// SIGPIPE from a plain write() on this thread becomes EPIPE; the signal stays pending on
// the thread and is discarded when it exits.
void BlockSigpipeOnThisThread() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

}  // namespace

Status CopyFd(int in_fd, int out_fd) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(in_fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("read", "fd " + std::to_string(in_fd));
    }
    if (n == 0) return OkStatus();
    ODYSSEY_TRY(WriteAll(out_fd, buf, static_cast<size_t>(n)));
  }
}

Status ReadAllCapped(int fd, size_t max_bytes, std::string* out) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::Errno("read", "fd " + std::to_string(fd));
    }
    if (n == 0) return OkStatus();
    if (out->size() + static_cast<size_t>(n) > max_bytes)
      return Error{"service output exceeds the cap of " + std::to_string(max_bytes) + " bytes",
                   EFBIG};
    out->append(buf, static_cast<size_t>(n));
  }
}

Result<CallOutcome> CallService(DisposableRunner& runner, const Target& target,
                                const std::string& service, const std::string& argument,
                                CallIo io) {
  UniqueFd in_ours, in_theirs, out_ours, out_theirs;
  ODYSSEY_TRY(MakePair(&in_ours, &in_theirs));
  ODYSSEY_TRY(MakePair(&out_ours, &out_theirs));
  ::shutdown(in_ours.get(), SHUT_RD);
  ::shutdown(out_ours.get(), SHUT_WR);

  CallOutcome outcome;
  Result<int> run_result = Error{"service call did not run"};
  ServiceCall call{target, service, argument, in_theirs.get(), out_theirs.get(), io.stderr_fd};

  // The runner thread owns the service's ends and closes them once the call is over, so the
  // consumer below sees EOF and the feeder sees EPIPE at the latest then.
  std::thread run_thread([&, in_fd = std::move(in_theirs), out_fd = std::move(out_theirs)]() mutable {
    BlockSigpipeOnThisThread();
    run_result = runner.Run(call);
    in_fd.reset();
    out_fd.reset();
  });
  std::thread feed_thread([&, fd = std::move(in_ours)]() mutable {
    BlockSigpipeOnThisThread();
    if (io.write_stdin) {
      Status st = io.write_stdin(fd.get());
      // A service may legitimately stop reading (it refused, or it only needed a prefix).
      if (!st.ok() && st.error().code != EPIPE && st.error().code != ECONNRESET)
        outcome.stdin_status = st;
    }
    fd.reset();
  });

  if (io.read_stdout) {
    outcome.stdout_status = io.read_stdout(out_ours.get());
  } else {
    std::string sink;
    char buf[65536];
    while (::read(out_ours.get(), buf, sizeof buf) > 0) {
    }
  }
  out_ours.reset();  // hang up: a service still writing gets EPIPE and ends
  feed_thread.join();
  run_thread.join();
  // When the consumer rejected the output and hung up, the call usually ends in an error
  // (the engine abandons a call whose stdout reader went away): the rejection is the news.
  if (!run_result.ok() && outcome.stdout_status.ok())
    return run_result.error().Wrap("calling " + service + " in " + target.Describe());
  if (!run_result.ok()) return outcome;
  outcome.exit_code = run_result.value();
  return outcome;
}

}  // namespace odyssey::handlers
