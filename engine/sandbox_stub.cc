// odyssey-sandbox-stub: one pool member of the engine's process backend. Started by odysseyd
// with a SOCK_SEQPACKET control socket on fd 3. It enters fresh namespaces, becomes the
// parent of the domain's pid 1, and that pid 1 finishes every set-up step (hostname, private
// /tmp and /home, fresh /proc, read-only root, loopback up, privileges dropped) before it
// reports "R" and waits. One request = argv + environment + the caller's stdin/stdout/stderr
// (SCM_RIGHTS); pid 1 runs it, reaps, and exits with its status; the kernel then kills
// whatever is left in the pid namespace. This program must stay single-threaded and small;
// it trusts the daemon (its parent) but nothing that runs inside.
#include <fcntl.h>
#include <grp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kCtrlFd = 3;
constexpr uid_t kSandboxUid = 65534;  // root runs disposables as nobody
constexpr uid_t kUserNsUid = 1000;    // non-root: this uid inside the user namespace

[[noreturn]] void Fail(const std::string& what) {
  std::string msg = "E" + what + ": " + std::strerror(errno);
  (void)!::send(kCtrlFd, msg.data(), msg.size(), MSG_NOSIGNAL);
  _exit(125);
}

bool WriteFile(const char* path, const std::string& text) {
  int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

void LoopbackUp() {
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct ifreq ifr = {};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    (void)::ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  ::close(s);
}

struct Request {
  std::vector<std::string> argv, env;
  int fds[3] = {-1, -1, -1};
  // A service's executable, opened by the daemon: the disposable's mounts may hide the
  // path it lives at (e.g. a tree under /tmp or /home), so it is run from this descriptor.
  int exec_fd = -1;
};

// Blocks for one request; false when the daemon closed the socket (member discarded).
bool ReceiveRequest(Request* req) {
  static char data[65536 + 1];
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  struct iovec iov = {data, sizeof data - 1};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(kCtrlFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    if (c->cmsg_len == CMSG_LEN(sizeof(int) * 3) || c->cmsg_len == CMSG_LEN(sizeof(int) * 4))
      std::memcpy(req->fds, CMSG_DATA(c), sizeof(int) * 3);
    if (c->cmsg_len == CMSG_LEN(sizeof(int) * 4))
      std::memcpy(&req->exec_fd, CMSG_DATA(c) + sizeof(int) * 3, sizeof(int));
  }
  data[n] = '\0';
  // Payload: NUL-terminated strings, 'a' = argv element, 'e' = KEY=VALUE.
  for (ssize_t off = 0; off < n;) {
    const char* s = data + off;
    size_t len = ::strnlen(s, static_cast<size_t>(n - off));
    if (len > 0 && s[0] == 'a') req->argv.emplace_back(s + 1, len - 1);
    if (len > 0 && s[0] == 'e') req->env.emplace_back(s + 1, len - 1);
    off += static_cast<ssize_t>(len) + 1;
  }
  return !req->argv.empty() && req->fds[0] >= 0 && req->fds[1] >= 0 && req->fds[2] >= 0;
}

[[noreturn]] void RunCommand(Request& req) {
  for (int i = 0; i < 3; ++i) {
    if (::dup2(req.fds[i], i) < 0) _exit(125);
  }
  int first_to_close = 3;
  if (req.exec_fd >= 0) {
    // Keep the executable at fd 3, without close-on-exec: a script's interpreter opens it
    // again through /dev/fd/3.
    if (req.exec_fd != 3 && ::dup2(req.exec_fd, 3) < 0) _exit(125);
    if (::fcntl(3, F_SETFD, 0) != 0) _exit(125);
    first_to_close = 4;
  }
  for (int fd = first_to_close; fd < 1024; ++fd) ::close(fd);
  ::signal(SIGPIPE, SIG_DFL);
  std::vector<char*> argv, envp;
  for (auto& a : req.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : req.env) envp.push_back(e.data());
  envp.push_back(nullptr);
  if (req.exec_fd >= 0) {
    ::fexecve(3, argv.data(), envp.data());
  } else {
    ::execvpe(argv[0], argv.data(), envp.data());
  }
  int err = errno;
  std::fprintf(stderr, "odyssey: cannot run %s in the disposable: %s\n", argv[0],
               std::strerror(err));
  // execvpe reports EACCES when any PATH entry was unusable; a bare name not found is 127.
  bool bare = std::strchr(argv[0], '/') == nullptr;
  _exit(err == ENOENT || err == ENOTDIR || (bare && err == EACCES) ? 127 : 126);
}

// Pid 1 of the domain: finish set-up, report ready, run one request, exit with its status.
[[noreturn]] void DomainInit(const std::string& name, const std::string& root, bool as_root) {
  if (::sethostname(name.data(), name.size()) != 0) Fail("sethostname");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) Fail("mount private /");
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    Fail("mount /proc");
  const char* base = root.empty() ? "" : root.c_str();
  std::string tmp = std::string(base) + "/tmp", home = std::string(base) + "/home";
  if (::mount("tmpfs", tmp.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m") != 0)
    Fail("mount /tmp");
  if (::mount("tmpfs", home.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=256m") != 0)
    Fail("mount /home");
  uid_t uid = as_root ? kSandboxUid : kUserNsUid;
  std::string user_home = home + "/user";
  if (::mkdir(user_home.c_str(), 0700) != 0 || ::chown(user_home.c_str(), uid, uid) != 0)
    Fail("mkdir /home/user");
  if (!root.empty()) {
    if (::mount(root.c_str(), root.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      Fail("bind template root");
    if (::chroot(root.c_str()) != 0) Fail("chroot template root");
  }
  // Read-only root: best effort (a locked mount in a user namespace may refuse).
  (void)::mount(nullptr, "/", nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr);
  LoopbackUp();
  if (::chdir("/home/user") != 0) Fail("chdir /home/user");
  if (as_root) {
    if (::setgroups(0, nullptr) != 0) Fail("setgroups");
    if (::setresgid(kSandboxUid, kSandboxUid, kSandboxUid) != 0) Fail("setresgid");
    if (::setresuid(kSandboxUid, kSandboxUid, kSandboxUid) != 0) Fail("setresuid");
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail("no_new_privs");
  // Die with the stub. Set only now: changing uids clears the parent-death signal. (The
  // daemon also kills this process directly; this covers the daemon's own death.)
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) Fail("pdeathsig");
  if (::send(kCtrlFd, "R", 1, MSG_NOSIGNAL) != 1) _exit(125);

  Request req;
  if (!ReceiveRequest(&req)) _exit(0);
  req.env.insert(req.env.begin(), {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/user",
                                   "USER=user", "HOSTNAME=" + name, "LANG=C.UTF-8"});
  pid_t child = ::fork();
  if (child < 0) _exit(125);
  if (child == 0) RunCommand(req);
  for (int i = 0; i < 3; ++i) ::close(req.fds[i]);
  ::close(kCtrlFd);
  int status = 0;
  for (;;) {
    int st;
    pid_t p = ::waitpid(-1, &st, 0);
    if (p < 0 && errno == EINTR) continue;
    if (p < 0) break;
    if (p == child) { status = st; break; }
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

}  // namespace

int main(int argc, char** argv) {
  std::string name = "disp", root;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--name=", 0) == 0) name = a.substr(7);
    if (a.rfind("--root=", 0) == 0) root = a.substr(7);
    // --state-dir=DIR only marks the process as ours for leftover scans.
  }
  if (::fcntl(kCtrlFd, F_GETFD) < 0) {
    std::fprintf(stderr, "odyssey-sandbox-stub: started by odysseyd only (no control fd 3)\n");
    return 2;
  }
  bool as_root = ::geteuid() == 0;
  if (!as_root) {
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWUSER) != 0) Fail("unshare(user namespace)");
    if (!WriteFile("/proc/self/setgroups", "deny") ||
        !WriteFile("/proc/self/uid_map", std::to_string(kUserNsUid) + " " + std::to_string(uid) + " 1") ||
        !WriteFile("/proc/self/gid_map", std::to_string(kUserNsUid) + " " + std::to_string(gid) + " 1"))
      Fail("user namespace id maps");
  }
  if (::unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWPID) != 0)
    Fail("unshare(namespaces)");
  pid_t init = ::fork();
  if (init < 0) Fail("fork");
  if (init == 0) DomainInit(name, root, as_root);
  ::close(kCtrlFd);
  int status = 0;
  while (::waitpid(init, &status, 0) < 0) {
    if (errno != EINTR) _exit(125);
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}
