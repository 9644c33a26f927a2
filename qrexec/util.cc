#include "qrexec/util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

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
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      std::lock_guard<std::mutex> lock(mu_);
      if (watched_.erase(pid)) {
        exited_[pid] = status;
        cv_.notify_all();
      }
    }
    siginfo_t info;
    timespec tick{1, 0};  // also catches a SIGCHLD merged before we blocked
    (void)sigtimedwait(&set, &info, &tick);
  }
}

int ChildReaper::Wait(pid_t pid) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return exited_.count(pid) > 0; });
  int status = exited_[pid];
  exited_.erase(pid);
  return status;
}

int ExitCodeFromStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 125;
}

Result<pid_t> Spawn(const SpawnSpec& spec, ChildReaper* reaper) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  int fds[3] = {spec.stdin_fd, spec.stdout_fd, spec.stderr_fd};
  for (int i = 0; i < 3; ++i) {
    if (fds[i] >= 0) posix_spawn_file_actions_adddup2(&fa, fds[i], i);
    else posix_spawn_file_actions_addopen(&fa, i, "/dev/null", O_RDWR, 0);
  }
  sigset_t empty, all;
  sigemptyset(&empty);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &all);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (spec.new_session) flags |= POSIX_SPAWN_SETSID;
  posix_spawnattr_setflags(&attr, flags);

  std::vector<char*> argv, envp;
  for (auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int err = 0;
  auto do_spawn = [&]() -> pid_t {
    pid_t pid = -1;
    err = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
    return err ? -1 : pid;
  };
  pid_t pid = reaper ? reaper->SpawnWatched(do_spawn) : do_spawn();
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (pid < 0) return Error::Errno(err, "posix_spawn", spec.argv.empty() ? "" : spec.argv[0]);
  return pid;
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
