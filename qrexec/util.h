// Small process-level helpers shared by the qrexec binaries: Unix sockets, logging,
// posix_spawn with pipes, and a SIGCHLD reaper that also serves as init (pid 1).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace odyssey::qrexec {

// "prog: message" on stderr, one write (safe from threads).
void Log(const std::string& message);
// Program name used by Log().
void SetLogPrefix(const std::string& prefix);

Result<UniqueFd> ConnectUnix(const std::string& path);
// Unlinks path, binds, listens (mode applied with chmod).
Result<UniqueFd> ListenUnix(const std::string& path, int mode = 0660);
// Creates dir and its parents (mode 0755), existing is fine.
Status MakeDirs(const std::string& dir);
// Makes sure fds 0, 1 and 2 are open (/dev/null), so pipes never land on them.
void EnsureStdFds();
// Ignores SIGPIPE for the whole process (binaries only, never from a library).
void IgnoreSigpipe();

// Waits for children with one thread: SIGCHLD must be blocked in every thread before any
// thread starts (Install() does that; call it first in main). Children it did not spawn
// (orphans re-parented to us as pid 1 or subreaper) are reaped and forgotten.
class ChildReaper {
 public:
  // Blocks SIGCHLD in the calling thread (inherited by later threads) and starts reaping.
  static ChildReaper& Install();
  // Runs spawn() (which returns a pid or -errno) with reaping held off, and remembers the pid.
  template <typename F>
  pid_t SpawnWatched(F spawn) {
    std::lock_guard<std::mutex> lock(mu_);
    pid_t pid = spawn();
    if (pid > 0) watched_.insert(pid);
    return pid;
  }
  // Waits for a watched pid; returns its raw wait status. Sleeps on a pidfd of the child
  // (falls back to short timed waits on kernels without pidfd_open) and reaps it itself, so
  // the caller wakes once, when the child exits, not after the reaper thread ran.
  int Wait(pid_t pid);

 private:
  void Run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<pid_t> watched_;
  std::map<pid_t, int> exited_;
};

// Runs tasks on reused threads. A fresh std::thread per call costs a clone and a stack whose
// pages are faulted in again (glibc gives an exited thread's stack back with MADV_DONTNEED);
// on a VM where a page fault costs 10-30 us that was a large part of a call's latency.
// A task may block for as long as it likes: when no worker is idle, Run() starts a new one,
// so tasks never wait for each other. Up to `keep_idle` finished workers stay for the next
// task; the others exit. Threads start with the signal mask of the thread calling Run().
// In a child forked from the owning process (the workers did not survive the fork, and the
// lock may be held) Run() falls back to a new detached thread per task.
class WorkerPool {
 public:
  explicit WorkerPool(size_t keep_idle = 8) : keep_idle_(keep_idle), owner_(::getpid()) {}
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;
  void Run(std::function<void()> task);
  // The process-wide pool of the qrexec binaries and of the transports' helper threads.
  // Never destroyed (detached workers may still be waiting when the process exits).
  static WorkerPool& Shared();

 private:
  void Work();
  const size_t keep_idle_;
  const pid_t owner_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  size_t idle_ = 0;
};

// Exit code as a shell reports it: code, or 128+signal.
int ExitCodeFromStatus(int status);

// Credentials a child switches to before exec (a root agent running USER:COMMAND).
struct RunAs {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (initgroups' list, computed beforehand)
  std::string home;           // working directory; "/" when it cannot be entered
};

// The account `user` from the password database, with its group list (what initgroups
// would set). An Error with code ENOENT names the user when it does not exist.
Result<RunAs> LookUpUser(const std::string& user);

struct SpawnSpec {
  std::vector<std::string> argv;
  std::string path;              // the file to exec; empty: argv[0] (never a PATH search)
  std::vector<std::string> env;  // full environment, "K=V"
  int stdin_fd = -1;   // -1: /dev/null
  int stdout_fd = -1;
  int stderr_fd = -1;
  bool new_session = true;
  // Set: clone(CLONE_VM|CLONE_VFORK), setgroups/setresgid/setresuid to these, chdir home,
  // exec (posix_spawn cannot change credentials; fork would copy the page tables of a
  // large multi-threaded agent). Unset: posix_spawn as the caller.
  const RunAs* run_as = nullptr;
};
// Starts spec.path (else spec.argv[0]) with the given stdio; signal mask cleared and
// dispositions reset.
// Returns the pid or an Error whose code is the errno (ENOENT, EACCES, EPERM, ...); with
// run_as, a failed credential switch or exec is reported the same way.
Result<pid_t> Spawn(const SpawnSpec& spec, ChildReaper* reaper);

// The process environment as "K=V" strings, minus the names in drop.
std::vector<std::string> EnvironmentWithout(const std::vector<std::string>& drop);

}  // namespace odyssey::qrexec
