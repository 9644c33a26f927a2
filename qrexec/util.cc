#include "qrexec/util.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
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

// fork + credential switch + exec. The child runs only async-signal-safe calls (the
// parent is multi-threaded); a failure's errno comes back through a close-on-exec pipe.
Result<pid_t> SpawnAs(const SpawnSpec& spec, char* const* argv, char* const* envp,
                      ChildReaper* reaper) {
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return Error::Errno("pipe2", "spawn report");
  UniqueFd report_r(report[0]), report_w(report[1]);
  int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  UniqueFd null_keep(null_fd);
  const RunAs& as = *spec.run_as;
  auto do_fork = [&]() -> pid_t {
    pid_t pid = ::fork();
    if (pid != 0) return pid;
    // Child.
    int fds[3] = {spec.stdin_fd, spec.stdout_fd, spec.stderr_fd};
    int err = 0;
    // Move every source fd above 2 first, so a dup2 never clobbers a later source.
    for (int i = 0; i < 3; ++i) {
      int src = fds[i] >= 0 ? fds[i] : null_fd;
      int moved = ::fcntl(src, F_DUPFD_CLOEXEC, 3);
      if (moved < 0) err = errno;
      fds[i] = moved;
    }
    for (int i = 0; i < 3 && err == 0; ++i)
      if (::dup2(fds[i], i) < 0) err = errno;
    for (int sig = 1; sig < NSIG; ++sig)
      if (sig != SIGKILL && sig != SIGSTOP) ::signal(sig, SIG_DFL);
    sigset_t empty;
    sigemptyset(&empty);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    if (err == 0 && spec.new_session && ::setsid() < 0) err = errno;
    if (err == 0 && ::setgroups(as.groups.size(), as.groups.data()) != 0) err = errno;
    if (err == 0 && ::setgid(as.gid) != 0) err = errno;
    if (err == 0 && ::setuid(as.uid) != 0) err = errno;
    if (err == 0 && ::chdir(as.home.c_str()) != 0) (void)!::chdir("/");
    if (err == 0) {
      ::execve(argv[0], argv, envp);
      err = errno;
    }
    (void)!::write(report_w.get(), &err, sizeof err);
    ::_exit(127);
  };
  pid_t pid = reaper ? reaper->SpawnWatched(do_fork) : do_fork();
  if (pid < 0) return Error::Errno("fork", spec.argv[0]);
  report_w.reset();
  int child_err = 0;
  ssize_t n;
  while ((n = ::read(report_r.get(), &child_err, sizeof child_err)) < 0 && errno == EINTR) {
  }
  if (n == static_cast<ssize_t>(sizeof child_err)) {
    if (reaper) (void)reaper->Wait(pid);  // collect the failed child
    return Error::Errno(child_err, "exec as uid " + std::to_string(as.uid), spec.argv[0]);
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
