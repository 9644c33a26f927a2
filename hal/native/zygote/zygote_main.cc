// odyssey-native-zygote: one per prepared template. Started by the host library inside a
// fresh user namespace (uid 0 inside maps to an unprivileged host range), it does the
// template's set-up once (private mount namespace, read-only root, compiled seccomp
// filter), then forks one clone per request on its control socket. Each clone gets fresh
// pid/mount/net/uts/ipc namespaces (cgroup namespace after it joins its cgroups), mounts its
// own layers, pivots, drops every privilege and runs the agent under a tiny init that
// reaps orphans. Built without sanitizers and without base/: it forks without exec.
// Exits when the control socket closes; clones already made keep running.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "hal/native/protocol.h"
#include "hal/native/zygote/caps.h"
#include "hal/native/zygote/mount.h"
#include "hal/native/zygote/net.h"
#include "hal/native/zygote/seccomp.h"

namespace odyssey::hal::native::zygote {
namespace {

struct Config {
  TemplateLayout layout;
};

bool ParseArgs(int argc, char** argv, Config* config) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* key, std::string* out) {
      std::string prefix = std::string(key) + "=";
      if (arg.compare(0, prefix.size(), prefix) != 0) return false;
      *out = arg.substr(prefix.size());
      return true;
    };
    std::string number;
    if (value("--template-dir", &config->layout.template_dir) ||
        value("--agent", &config->layout.agent_path) || value("--staging", &config->layout.staging) ||
        value("--services", &config->layout.services_dir) ||
        value("--gui-agent", &config->layout.gui_agent_path)) {
      continue;
    }
    if (value("--uid", &number)) {
      config->layout.inner_uid = static_cast<uint32_t>(std::strtoul(number.c_str(), nullptr, 10));
    } else if (value("--gid", &number)) {
      config->layout.inner_gid = static_cast<uint32_t>(std::strtoul(number.c_str(), nullptr, 10));
    } else {
      std::fprintf(stderr, "odyssey-native-zygote: unknown argument %s\n", argv[i]);
      return false;
    }
  }
  return !config->layout.agent_path.empty() && !config->layout.staging.empty();
}

void SendReady(const MaybeFailure& failure) {
  proto::ReadyMsg msg{};
  msg.magic = proto::kMagic;
  msg.version = proto::kVersion;
  if (failure) {
    msg.error = failure->code ? failure->code : EIO;
    std::snprintf(msg.message, sizeof(msg.message), "%s", failure->what.c_str());
  }
  (void)::send(proto::kControlFd, &msg, sizeof(msg), MSG_NOSIGNAL);
}

void WriteStatus(int fd, const std::string& text) {
  if (fd >= 0) (void)!::write(fd, text.data(), text.size());
}

// Runs in the clone (pid 1 of its pid namespace); never returns.
[[noreturn]] void RunClone(const Config& config, const SyscallFilter& filter,
                           const proto::CloneRequest& req, const std::vector<int>& fds) {
  const int status_fd = fds[0];
  ::signal(SIGCHLD, SIG_DFL);  // the zygote ignores it; init and the agent must not
  auto fail = [&](const Failure& f) {
    WriteStatus(status_fd, "setting up domain " + std::string(req.name) + ": " + f.what);
    ::_exit(1);
  };
  // Join the domain's cgroups (fds opened by the host, so host root's credentials apply),
  // then root a cgroup namespace there.
  for (size_t i = 1; i <= req.cgroup_fd_count; ++i) {
    if (::write(fds[i], "0", 1) != 1) fail(Errno("join cgroup", std::to_string(i)));
    ::close(fds[i]);
  }
  const int vchan_mount_fd = (req.flags & proto::kFlagVchanMountFd) ? fds.back() : -1;
  if (::unshare(CLONE_NEWCGROUP) != 0) fail(Errno("unshare(CLONE_NEWCGROUP)"));
  CloneMounts mounts{req.vchan_dir, vchan_mount_fd, req.tmpfs_bytes};
  if (auto f = MountCloneAndPivot(config.layout, mounts)) fail(*f);
  // The zygote's stdio belongs to the host; nothing in the domain keeps it.
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) {
    fail(Errno("open", "/dev/null"));
  }
  if (::sethostname(req.name, std::strlen(req.name)) != 0) fail(Errno("sethostname", req.name));
  if (auto f = BringUpLoopback()) fail(*f);
  if (auto f = DropPrivileges(config.layout.inner_uid, config.layout.inner_gid)) fail(*f);
  if (auto f = filter.Install()) fail(*f);

  const std::string domid = "VCHAN_DOMAIN=" + std::to_string(req.domid);
  const std::string sockdir = std::string("VCHAN_SOCKET_DIR=") + kVchanDirInside;
  std::vector<const char*> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/user",
                                  "USER=user", "LOGNAME=user", "QREXEC_NO_ROOT=1",
                                  domid.c_str(), sockdir.c_str()};
  const std::string rpc_dir = std::string("ODYSSEY_RPC_DIR=") + kServicesDirInside;
  if (!config.layout.services_dir.empty()) env.push_back(rpc_dir.c_str());
  if (req.flags & proto::kFlagNoLeakCheck) env.push_back("ASAN_OPTIONS=detect_leaks=0");
  env.push_back(nullptr);
  const char* argv[] = {kAgentPathInside, nullptr};
  const std::string exec_failed =
      "setting up domain " + std::string(req.name) + ": execve(" + config.layout.agent_path + "): ";

  // vfork: the agent is exec'd at once, so copying this process's page tables (fork) would
  // be wasted. The child shares our memory until execve: syscalls only, nothing allocated.
  pid_t agent = ::vfork();
  if (agent < 0) fail(Errno("vfork", "agent"));
  if (agent == 0) {
    ::setsid();
    ::execve(kAgentPathInside, const_cast<char* const*>(argv), const_cast<char* const*>(env.data()));
    const char* why = ::strerrordesc_np(errno);  // static text: no locale, no allocation
    if (!why) why = "unknown error";
    (void)!::write(status_fd, exec_failed.data(), exec_failed.size());
    (void)!::write(status_fd, why, std::strlen(why));
    ::_exit(1);
  }
  ::close(status_fd);
  // Init: reap everything; the domain lives as long as its agent.
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid == agent) ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    if (pid < 0 && errno == ECHILD) ::_exit(0);
  }
}

// Receives one request with its fds; false on EOF (the host went away) or garbage.
bool ReceiveRequest(proto::CloneRequest* req, std::vector<int>* fds) {
  char control[CMSG_SPACE(sizeof(int) * (proto::kMaxCgroupFds + 1))];
  struct iovec iov {req, sizeof(*req)};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(proto::kControlFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  fds->clear();
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
    fds->assign(p, p + count);
  }
  bool valid = n == sizeof(*req) && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) &&
               req->magic == proto::kMagic && req->version == proto::kVersion &&
               req->cgroup_fd_count <= proto::kMaxCgroupFds &&
               fds->size() == req->cgroup_fd_count + 1 + ((req->flags & proto::kFlagVchanMountFd) ? 1 : 0);
  req->name[sizeof(req->name) - 1] = '\0';
  req->vchan_dir[sizeof(req->vchan_dir) - 1] = '\0';
  return valid;
}

void Reply(pid_t pid, int pidfd, const MaybeFailure& failure) {
  proto::CloneReply reply{};
  reply.magic = proto::kMagic;
  reply.pid = pid;
  char control[CMSG_SPACE(sizeof(int))] = {};
  struct iovec iov {&reply, sizeof(reply)};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (failure) {
    reply.error = failure->code ? failure->code : EIO;
    std::snprintf(reply.message, sizeof(reply.message), "%s", failure->what.c_str());
  } else {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &pidfd, sizeof(int));
  }
  (void)::sendmsg(proto::kControlFd, &msg, MSG_NOSIGNAL);
}

int Serve(const Config& config, const SyscallFilter& filter) {
  proto::CloneRequest req{};
  std::vector<int> fds;
  for (;;) {
    if (!ReceiveRequest(&req, &fds)) {
      for (int fd : fds) ::close(fd);
      return 0;
    }
    int pidfd = -1;
    long pid = ::syscall(SYS_clone,
                         CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
                             CLONE_PIDFD | SIGCHLD,
                         nullptr, &pidfd, nullptr, nullptr);
    if (pid == 0) {
      ::close(proto::kControlFd);
      RunClone(config, filter, req, fds);
    }
    for (int fd : fds) ::close(fd);
    if (pid < 0) {
      Reply(-1, -1, Errno("clone", req.name));
    } else {
      Reply(static_cast<pid_t>(pid), pidfd, std::nullopt);
      ::close(pidfd);
    }
  }
}

}  // namespace
}  // namespace odyssey::hal::native::zygote

int main(int argc, char** argv) {
  using namespace odyssey::hal::native::zygote;
  // Clones are reaped automatically; the host watches them through pidfds.
  ::signal(SIGCHLD, SIG_IGN);
  ::prctl(PR_SET_NAME, "odyssey-zygote", 0, 0, 0);
  // The modes the zygote gives the domain's mount points are meant as written, whatever
  // umask its owner runs with (odysseyd: 077).
  ::umask(022);
  Config config;
  if (!ParseArgs(argc, argv, &config)) {
    SendReady(Failure{EINVAL, "zygote: bad arguments"});
    return 2;
  }
  if (::unshare(CLONE_NEWNS) != 0) {
    SendReady(Errno("unshare(CLONE_NEWNS)"));
    return 1;
  }
  MaybeFailure failure = PrepareTemplate(config.layout);
  SyscallFilter filter;
  if (!failure) failure = SyscallFilter::Build(&filter);
  SendReady(failure);
  if (failure) return 1;
  return Serve(config, filter);
}
