#include "hal/native/user.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/unique_fd.h"
#include "hal/native/protocol.h"

namespace odyssey::hal::native {
namespace {

Status WriteProcFile(pid_t pid, const char* file, const std::string& content) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + file;
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    return Error::Errno("write '" + content + "'", path);
  }
  return OkStatus();
}

// The child between clone and execve: raw syscalls only (no allocation, no locks, no
// sanitizer interceptors), then exec or _exit.
[[noreturn]] void ChildAfterClone(int sync_fd, int control_fd, const char* path,
                                  char* const* argv, char* const* envp) {
  char go = 0;
  if (::syscall(SYS_read, sync_fd, &go, 1) != 1 || go != 'g') ::syscall(SYS_exit_group, 127);
  // Still host root's kuid, unmapped here: become the namespace's root (host_base) so that
  // execve keeps the namespace's full capability set.
  if (::syscall(SYS_setgroups, 0, nullptr) != 0 || ::syscall(SYS_setresgid, 0, 0, 0) != 0 ||
      ::syscall(SYS_setresuid, 0, 0, 0) != 0) {
    ::syscall(SYS_exit_group, 126);
  }
  const int target = proto::kControlFd;
  if (control_fd == target) {
    ::syscall(SYS_fcntl, target, F_SETFD, 0);
  } else if (::syscall(SYS_dup3, control_fd, target, 0) < 0) {
    ::syscall(SYS_exit_group, 127);
  }
  ::syscall(SYS_close_range, target + 1, ~0U, 0);
  ::syscall(SYS_execve, path, argv, envp);
  ::syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

}  // namespace

Result<pid_t> SpawnInUserNamespace(const UserNsChild& child) {
  std::vector<char*> argv, envp;
  for (auto& a : child.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : child.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int sync[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return Error::Errno("pipe2", child.path);
  UniqueFd sync_read(sync[0]), sync_write(sync[1]);

  long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return Error::Errno("clone(CLONE_NEWUSER)", child.path);
  if (pid == 0) {
    ChildAfterClone(sync_read.get(), child.control_fd, child.path.c_str(), argv.data(), envp.data());
  }
  auto abort_child = [&](const Error& e) -> Error {
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return e;
  };
  const std::string map = "0 " + std::to_string(child.ids.host_base) + " " +
                          std::to_string(child.ids.count) + "\n";
  if (auto s = WriteProcFile(pid, "uid_map", map); !s.ok()) return abort_child(s.error());
  if (auto s = WriteProcFile(pid, "gid_map", map); !s.ok()) return abort_child(s.error());
  if (child.before_exec) {
    if (auto s = child.before_exec(static_cast<pid_t>(pid)); !s.ok()) return abort_child(s.error());
  }
  if (::write(sync_write.get(), "g", 1) != 1) return abort_child(Error::Errno("write", "sync pipe"));
  return static_cast<pid_t>(pid);
}

Result<UniqueFd> MakeIdmapUserNamespace(uint32_t host_uid, uint32_t host_gid) {
  int sync[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return Error::Errno("pipe2", "idmap user namespace");
  UniqueFd sync_read(sync[0]), sync_write(sync[1]);
  long pid = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return Error::Errno("clone(CLONE_NEWUSER)", "idmap user namespace");
  if (pid == 0) {
    // Only holds the namespace until the parent has opened it; raw syscalls only.
    char c;
    ::syscall(SYS_close, sync[1]);
    ::syscall(SYS_read, sync[0], &c, 1);
    ::syscall(SYS_exit_group, 0);
  }
  Result<UniqueFd> result = Error{"unreachable", 0};
  auto done = [&](Result<UniqueFd> r) {
    sync_write.reset();
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return r;
  };
  if (auto s = WriteProcFile(pid, "uid_map", "0 " + std::to_string(host_uid) + " 1\n"); !s.ok()) {
    return done(s.error());
  }
  if (auto s = WriteProcFile(pid, "gid_map", "0 " + std::to_string(host_gid) + " 1\n"); !s.ok()) {
    return done(s.error());
  }
  std::string ns = "/proc/" + std::to_string(pid) + "/ns/user";
  UniqueFd fd(::open(ns.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return done(Error::Errno("open", ns));
  return done(std::move(fd));
}

Result<UniqueFd> IdmappedBindMount(const std::string& dir, int userns_fd) {
  UniqueFd tree(static_cast<int>(::syscall(SYS_open_tree, AT_FDCWD, dir.c_str(),
                                           OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)));
  if (!tree) return Error::Errno("open_tree", dir);
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
  attr.userns_fd = static_cast<uint64_t>(userns_fd);
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0) {
    return Error::Errno("mount_setattr(idmap)", dir);
  }
  return tree;
}

}  // namespace odyssey::hal::native
