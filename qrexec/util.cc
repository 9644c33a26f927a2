#include "qrexec/util.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "base/spawn.h"

extern char** environ;

namespace odyssey::qrexec {
namespace {
std::string& Prefix() {
  static std::string prefix = "qrexec";
  return prefix;
}

Result<sockaddr_un> UnixAddr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return Error{"socket path too long (" + std::to_string(path.size()) + " bytes): " + path, ENAMETOOLONG};
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}
}  // namespace

void SetLogPrefix(const std::string& prefix) { Prefix() = prefix; }

void Log(const std::string& message) {
  std::string line = Prefix() + ": " + message + "\n";
  (void)!::write(2, line.data(), line.size());
}

Result<UniqueFd> ConnectUnix(const std::string& path) {
  auto addr = UnixAddr(path);
  if (!addr.ok()) return addr.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::Errno("socket", path);
  for (;;) {
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) == 0) return fd;
    if (errno != EINTR) return Error::Errno("connect", path);
  }
}

Result<UniqueFd> ListenUnix(const std::string& path, int mode) {
  auto addr = UnixAddr(path);
  if (!addr.ok()) return addr.error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::Errno("socket", path);
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0)
    return Error::Errno("bind", path);
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
  if (::listen(fd.get(), 64) != 0) return Error::Errno("listen", path);
  return fd;
}

Status MakeDirs(const std::string& dir) {
  if (dir.empty()) return OkStatus();
  for (size_t pos = 1;; ++pos) {
    pos = dir.find('/', pos);
    std::string part = dir.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return Error::Errno("mkdir", part);
    if (pos == std::string::npos) return OkStatus();
  }
}

void EnsureStdFds() {
  for (int fd = 0; fd < 3; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0) {
      int n = ::open("/dev/null", O_RDWR);
      if (n >= 0 && n != fd) {
        ::dup2(n, fd);
        ::close(n);
      }
    }
  }
}

void IgnoreSigpipe() { ::signal(SIGPIPE, SIG_IGN); }

ChildReaper& ChildReaper::Install() {
  static ChildReaper* reaper = [] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    auto* r = new ChildReaper();
    std::thread([r] { r->Run(); }).detach();
    return r;
  }();
  return *reaper;
}

void ChildReaper::Run() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  for (;;) {
    {
      // Reaping and recording happen under one lock, so Wait() never sees a child that is
      // reaped but not yet recorded (its pid could then be reused).
      std::lock_guard<std::mutex> lock(mu_);
      for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) break;
        if (watched_.erase(pid)) exited_[pid] = status;
      }
    }
    cv_.notify_all();
    siginfo_t info;
    timespec tick{1, 0};  // also catches a SIGCHLD merged before we blocked
    (void)sigtimedwait(&set, &info, &tick);
  }
}

int ChildReaper::Wait(pid_t pid) {
  auto backoff = std::chrono::microseconds(200);
  for (;;) {
    UniqueFd pidfd;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto it = exited_.find(pid);
      if (it != exited_.end()) {
        int status = it->second;
        exited_.erase(it);
        return status;
      }
      // Under the lock nobody else reaps, so pid is still our unreaped child here.
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        watched_.erase(pid);
        return status;
      }
      pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
      if (!pidfd) {
        // No pidfd (kernel < 5.3): the reaper thread notifies after SIGCHLD.
        cv_.wait_for(lock, backoff);
        backoff = std::min(backoff * 2, std::chrono::microseconds(64000));
        continue;
      }
    }
    // Readable once the child has exited (then reaped above, by us or the reaper thread).
    pollfd p{pidfd.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
  }
}

WorkerPool& WorkerPool::Shared() {
  static WorkerPool* pool = new WorkerPool(8);
  return *pool;
}

void WorkerPool::Run(std::function<void()> task) {
  if (::getpid() != owner_) {  // forked child: no workers here, the lock may be stale
    std::thread(std::move(task)).detach();
    return;
  }
  std::unique_lock<std::mutex> lock(mu_);
  tasks_.push_back(std::move(task));
  if (idle_ >= tasks_.size()) {
    lock.unlock();
    cv_.notify_one();
    return;
  }
  lock.unlock();
  std::thread([this] { Work(); }).detach();
}

void WorkerPool::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (!tasks_.empty()) {
      std::function<void()> task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // destroy captures outside the lock
      lock.lock();
      continue;
    }
    if (idle_ >= keep_idle_) return;
    ++idle_;
    cv_.wait(lock, [this] { return !tasks_.empty(); });
    --idle_;
  }
}

int ExitCodeFromStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 125;
}

Result<RunAs> LookUpUser(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  int err = ::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
  if (err != 0) return Error::Errno(err, "getpwnam_r", user);
  if (!found) return Error{"user '" + user + "' does not exist", ENOENT};
  RunAs r;
  r.uid = pw.pw_uid;
  r.gid = pw.pw_gid;
  r.home = pw.pw_dir ? pw.pw_dir : "/";
  int n = 64;
  for (int tries = 0; tries < 8; ++tries) {
    r.groups.resize(static_cast<size_t>(n));
    int got = n;
    if (::getgrouplist(user.c_str(), pw.pw_gid, r.groups.data(), &got) >= 0) {
      r.groups.resize(static_cast<size_t>(got));
      return r;
    }
    n = got > n ? got : n * 2;
  }
  return Error{"group list of user '" + user + "' is too long", E2BIG};
}

namespace {

// What the clone(CLONE_VM) child of SpawnAs reads, and where it leaves its errno.
struct CloneChildArgs {
  const SpawnSpec* spec;
  const char* file;
  char* const* argv;
  char* const* envp;
  int null_fd;
  int err;  // written by the child when it fails (shared memory: CLONE_VM)
};

// The child of SpawnAs. It shares the parent's memory (CLONE_VM) and the parent is
// suspended until it execs or exits (CLONE_VFORK), so it only makes system calls: glibc's
// setuid/setgid/setgroups would broadcast to the parent's threads (they share the thread
// list), hence raw setresuid/setresgid/setgroups, which change only this process.
// Uninstrumented: it runs on a stack ASan does not know.
__attribute__((no_sanitize("address", "undefined"))) int CloneChild(void* p) {
  auto* a = static_cast<CloneChildArgs*>(p);
  const SpawnSpec& spec = *a->spec;
  const RunAs& as = *spec.run_as;
  int fds[3] = {spec.stdin_fd, spec.stdout_fd, spec.stderr_fd};
  int err = 0;
  // Move every source fd above 2 first, so a dup2 never clobbers a later source.
  for (int i = 0; i < 3; ++i) {
    int src = fds[i] >= 0 ? fds[i] : a->null_fd;
    int moved = static_cast<int>(::syscall(SYS_fcntl, src, F_DUPFD_CLOEXEC, 3));
    if (moved < 0) err = errno;
    fds[i] = moved;
  }
  for (int i = 0; i < 3 && err == 0; ++i)
    if (::syscall(SYS_dup3, fds[i], i, 0) < 0) err = errno;
  // Every disposition to default while all signals are still blocked (inherited from
  // SpawnAs), then the empty mask: no handler of the parent ever runs in the child. Raw
  // rt_sigaction / rt_sigprocmask with the kernel's structures: no libc wrapper or
  // sanitizer interceptor runs here.
  struct {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    unsigned long mask;
  } dfl = {SIG_DFL, 0, nullptr, 0};
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP) (void)::syscall(SYS_rt_sigaction, sig, &dfl, nullptr, sizeof dfl.mask);
  if (err == 0 && spec.new_session && ::syscall(SYS_setsid) < 0) err = errno;
  if (err == 0 && ::syscall(SYS_setgroups, as.groups.size(), as.groups.data()) != 0) err = errno;
  if (err == 0 && ::syscall(SYS_setresgid, as.gid, as.gid, as.gid) != 0) err = errno;
  if (err == 0 && ::syscall(SYS_setresuid, as.uid, as.uid, as.uid) != 0) err = errno;
  if (err == 0 && ::syscall(SYS_chdir, as.home.c_str()) != 0) (void)::syscall(SYS_chdir, "/");
  unsigned long empty = 0;
  (void)::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, sizeof empty);
  if (err == 0) {
    ::syscall(SYS_execve, a->file, a->argv, a->envp);
    err = errno;
  }
  a->err = err != 0 ? err : EINVAL;
  ::syscall(SYS_exit, 127);
  return 127;
}

// clone(CLONE_VM|CLONE_VFORK) + credential switch + exec: as cheap as posix_spawn (no copy
// of the page tables, unlike fork), and the exec's errno comes back through memory.
Result<pid_t> SpawnAs(const SpawnSpec& spec, char* const* argv, char* const* envp,
                      ChildReaper* reaper) {
  UniqueFd null_keep(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (!null_keep) return Error::Errno("open", "/dev/null");
  constexpr size_t kStack = 64 << 10;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return Error::Errno("mmap", "spawn stack");
  const std::string& file = spec.path.empty() ? spec.argv[0] : spec.path;
  CloneChildArgs args{&spec, file.c_str(), argv, envp, null_keep.get(), 0};
  // All signals blocked across the clone: a handler must never run on the child's stack
  // while it shares our memory. The child resets dispositions before unblocking.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int clone_errno = 0;
  auto do_clone = [&]() -> pid_t {
    pid_t pid = ::clone(CloneChild, static_cast<char*>(stack) + kStack,
                        CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    if (pid < 0) clone_errno = errno;
    return pid;
  };
  pid_t pid = reaper ? reaper->SpawnWatched(do_clone) : do_clone();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ::munmap(stack, kStack);
  if (pid < 0) return Error::Errno(clone_errno, "clone", file);
  if (args.err != 0) {
    if (reaper) (void)reaper->Wait(pid);  // collect the failed child
    return Error::Errno(args.err, "exec as uid " + std::to_string(spec.run_as->uid), file);
  }
  return pid;
}

}  // namespace

Result<pid_t> Spawn(const SpawnSpec& spec, ChildReaper* reaper) {
  if (spec.argv.empty()) return Error{"spawn: empty argv", EINVAL};
  if (spec.run_as) {
    std::vector<char*> argv, envp;
    for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    for (auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    return SpawnAs(spec, argv.data(), envp.data(), reaper);
  }
  SpawnOptions o;
  o.argv = spec.argv;
  o.path = spec.path;
  o.env = spec.env;
  o.stdin_fd = spec.stdin_fd;
  o.stdout_fd = spec.stdout_fd;
  o.stderr_fd = spec.stderr_fd;
  o.new_session = spec.new_session;
  if (!reaper) return SpawnProcess(o);
  Result<pid_t> result = Error{"not started", 0};
  // Held under the reaper's lock: the child cannot be reaped before it is watched.
  reaper->SpawnWatched([&]() -> pid_t {
    result = SpawnProcess(o);
    return result.ok() ? *result : -1;
  });
  return result;
}

std::vector<std::string> EnvironmentWithout(const std::vector<std::string>& drop) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    std::string key = kv.substr(0, kv.find('='));
    bool skip = false;
    for (auto& d : drop) skip = skip || d == key;
    if (!skip) out.push_back(std::move(kv));
  }
  return out;
}

}  // namespace odyssey::qrexec
