#include "engine/process_backend.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>
#include <mutex>
#include <thread>

#include "base/io.h"

extern char** environ;

namespace odyssey::engine {
namespace {

int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSignal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// Sum of Rss/Pss (kB lines of smaps_rollup) of pid; 0 when unreadable.
void AddUsage(pid_t pid, MemberUsage* u) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string key;
  uint64_t kb;
  bool any = false;
  while (in >> key) {
    if (key == "Rss:" && in >> kb) { u->memory_bytes += kb * 1024; any = true; }
    else if (key == "Pss:" && in >> kb) u->memory_pss_bytes += kb * 1024;
  }
  if (any) u->processes++;
}

std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

class ProcessMember : public Member {
 public:
  ProcessMember(std::string name, std::string tmpl, pid_t pid, UniqueFd pidfd, UniqueFd ctrl,
                std::vector<std::string> service_path)
      : name_(std::move(name)), template_(std::move(tmpl)), pid_(pid), pidfd_(std::move(pidfd)),
        ctrl_(std::move(ctrl)), service_path_(std::move(service_path)) {}
  ~ProcessMember() override { (void)Destroy(); }

  const std::string& name() const override { return name_; }
  const std::string& template_name() const override { return template_; }
  int64_t handle() const override { return pid_; }

  Result<int> Call(CallSpec spec) override {
    std::vector<std::string> argv = spec.argv;
    std::vector<std::string> env;
    if (!spec.service.empty()) {
      std::string path = ResolveService(service_path_, spec.service, spec.service_arg);
      if (path.empty()) {
        Kill();
        (void)Reap();
        return Error{"service " + spec.service + " not found in the disposable (looked in " +
                         std::to_string(service_path_.size()) +
                         " directories; set service_path in odysseyd.conf)", ENOENT};
      }
      argv = {path};
      if (!spec.service_arg.empty()) argv.push_back(spec.service_arg);
      std::string full = spec.service + "+" + spec.service_arg;
      env = {"QREXEC_REMOTE_DOMAIN=" + spec.source, "QREXEC_SERVICE_FULL_NAME=" + full,
             "QREXEC_SERVICE_ARGUMENT=" + spec.service_arg};
    }
    std::string payload;
    for (auto& a : argv) payload += "a" + a + '\0';
    for (auto& e : env) payload += "e" + e + '\0';
    if (payload.size() > 65536) return Error{"command line too long (max 64 KiB)", E2BIG};
    // A service runs from a descriptor the daemon opened (its own file, never a user's):
    // the disposable's private /tmp and /home may hide the directory it lives in.
    UniqueFd exec_fd;
    if (!spec.service.empty()) {
      exec_fd.reset(::open(argv[0].c_str(), O_RDONLY | O_CLOEXEC));
      if (!exec_fd) return Error::Errno("open", "service " + argv[0]);
    }
    int fds[4] = {spec.stdin_fd.get(), spec.stdout_fd.get(), spec.stderr_fd.get(), exec_fd.get()};
    const size_t nfds = exec_fd ? 4 : 3;
    alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
    struct iovec iov = {payload.data(), payload.size()};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    ssize_t n;
    do {
      n = ::sendmsg(ctrl_.get(), &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return Error::Errno("sendmsg", "disposable " + name_ + " (it died before the call)");
    // Our copies must go now: the caller sees EOF on its stdout only when every holder closed.
    spec.stdin_fd.reset();
    spec.stdout_fd.reset();
    spec.stderr_fd.reset();
    return Reap();
  }

  void Kill() override {
    if (reaped_.load()) return;
    // The domain's pid 1 first (its death ends the whole pid namespace), then the helper.
    for (pid_t c : Children(pid_)) ::kill(c, SIGKILL);
    (void)PidfdSignal(pidfd_.get(), SIGKILL);
  }

  Status Destroy() override {
    ctrl_.reset();  // an idle member exits by itself when its control socket closes
    if (!reaped_.load()) {
      Kill();
      (void)Reap();
    }
    return OkStatus();
  }

  MemberUsage Usage() override {
    MemberUsage u;
    if (reaped_.load()) return u;
    AddUsage(pid_, &u);
    for (pid_t c : Children(pid_)) {
      AddUsage(c, &u);
      for (pid_t g : Children(c)) AddUsage(g, &u);
    }
    return u;
  }

 private:
  Result<int> Reap() {
    std::lock_guard lock(reap_mu_);
    if (reaped_.load()) return exit_code_;
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    reaped_.store(true);
    if (r < 0) return Error::Errno("waitpid", name_);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_code_;
  }

  std::string name_, template_;
  pid_t pid_;
  UniqueFd pidfd_, ctrl_;
  std::vector<std::string> service_path_;
  std::mutex reap_mu_;
  std::atomic<bool> reaped_{false};
  int exit_code_ = -1;
};

// Number of pid namespaces pid is visible in (entries of NSpid); 0 if unknown.
int NsDepth(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::stringstream ss(line.substr(6));
    int n = 0;
    std::string tok;
    while (ss >> tok) ++n;
    return n;
  }
  return 0;
}

std::string ReadCmdline(pid_t pid) {
  auto text = ReadFileToString("/proc/" + std::to_string(pid) + "/cmdline", 1 << 16);
  return text.ok() ? *text : std::string();
}

}  // namespace

bool ValidServiceName(const std::string& s) {
  if (s.empty() || s.size() > 255 || s[0] == '.') return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  return true;
}

bool ValidServiceArg(const std::string& s) {
  if (s.size() > 255) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-' &&
        c != '+' && c != '@')
      return false;
  return true;
}

std::string ResolveService(const std::vector<std::string>& path, const std::string& service,
                           const std::string& arg) {
  for (const auto& dir : path) {
    for (const std::string& leaf : {service + "+" + arg, service}) {
      std::string p = dir + "/" + leaf;
      if (::access(p.c_str(), X_OK) == 0) return p;
    }
  }
  return "";
}

Result<BackendPtr> ProcessBackend::Create(const ProcessBackendOptions& options) {
  if (::access(options.stub_path.c_str(), X_OK) != 0)
    return Error::Errno("access", options.stub_path)
        .Wrap("the process backend needs odyssey-sandbox-stub (build target odyssey-sandbox-stub "
              "or set stub_path in odysseyd.conf)");
  return BackendPtr(new ProcessBackend(options));
}

Result<MemberPtr> ProcessBackend::Prepare(const TemplateInfo& tmpl, const std::string& name) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return Error::Errno("socketpair", name);
  UniqueFd ours(sv[0]), theirs(sv[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, theirs.get(), 3);
  // Nothing of the daemon (admin sockets, other members' control sockets) reaches a helper.
  posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> args = {options_.stub_path, "--name=" + name,
                                   "--state-dir=" + options_.state_dir};
  if (!tmpl.root_dir.empty()) args.push_back("--root=" + tmpl.root_dir);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawn(&pid, options_.stub_path.c_str(), &fa, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) return Error::Errno(rc, "posix_spawn", options_.stub_path);
  theirs.reset();
  UniqueFd pidfd(PidfdOpen(pid));
  int ctrl = ours.get();
  auto member = std::make_unique<ProcessMember>(name, tmpl.name, pid, std::move(pidfd),
                                                std::move(ours), options_.service_path);
  // Wait for "R" (ready) or "E<why>"; a helper that dies closes the socket.
  char buf[512];
  ssize_t n;
  do {
    n = ::recv(ctrl, buf, sizeof buf - 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n == 1 && buf[0] == 'R') return MemberPtr(std::move(member));
  std::string why = n > 1 && buf[0] == 'E' ? std::string(buf + 1, static_cast<size_t>(n - 1))
                                           : std::string("helper exited during set-up");
  (void)member->Destroy();
  return Error{"preparing disposable " + name + ": " + why +
                   " (namespaces may be unavailable here; see engine/README.md)", EIO};
}

Result<int> ProcessBackend::ReapLeftovers() {
  std::vector<int> pids = FindHelpers();
  int own = NsDepth("self"), found = 0;
  for (int pid : pids) found += NsDepth(std::to_string(pid)) == own;  // one per disposable
  for (int pid : pids) ::kill(pid, SIGKILL);
  // Not our children (their parent was the killed daemon): wait until they are gone or
  // zombies (empty cmdline), so nothing of the old run is alive once we serve.
  for (int tries = 0; tries < 500 && !FindHelpers().empty(); ++tries) ::usleep(10000);
  return found;
}

int ProcessBackend::CountLive() {
  // One per disposable: the helper itself, not its pid 1 (same command line, one pid
  // namespace deeper).
  int own = NsDepth("self"), n = 0;
  for (int pid : FindHelpers())
    if (NsDepth(std::to_string(pid)) == own) ++n;
  return n;
}

std::vector<int> ProcessBackend::FindHelpers() const {
  std::vector<int> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  std::string marker = "--state-dir=" + options_.state_dir;
  while (struct dirent* e = ::readdir(d)) {
    char* end;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::string cmd = ReadCmdline(static_cast<pid_t>(pid));
    if (cmd.empty()) continue;  // zombie or kernel thread
    std::string arg0 = cmd.substr(0, cmd.find('\0'));
    if (arg0.size() < 20 || arg0.compare(arg0.size() - 20, 20, "odyssey-sandbox-stub") != 0)
      continue;
    // Exact argument match, so /x/state never matches /x/state2.
    size_t pos = 0;
    bool mine = false;
    while (pos < cmd.size()) {
      size_t next = cmd.find('\0', pos);
      if (next == std::string::npos) next = cmd.size();
      if (cmd.compare(pos, next - pos, marker) == 0 && next - pos == marker.size()) mine = true;
      pos = next + 1;
    }
    if (mine) out.push_back(static_cast<int>(pid));
  }
  ::closedir(d);
  return out;
}

}  // namespace odyssey::engine
