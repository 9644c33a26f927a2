#include "hal/native/zygote/seccomp.h"

#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace odyssey::hal::native::zygote {
namespace {

// Refused outright with EPERM.
constexpr const char* kDenied[] = {
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr",
    "unshare", "setns", "swapon", "swapoff", "reboot", "acct", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "quotactl", "quotactl_fd", "syslog",
    "uselib", "userfaultfd", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
    "lookup_dcookie", "vhangup", "nfsservctl", "fanotify_init",
};

// Namespace flags clone() may not carry.
constexpr unsigned long kNamespaceFlags[] = {CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID,
                                             CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWIPC,
                                             CLONE_NEWCGROUP, CLONE_NEWTIME};

MaybeFailure RuleFailure(int rc, const std::string& what) {
  return Failure{-rc, "seccomp rule for " + what + ": " + std::strerror(-rc)};
}

MaybeFailure AddRules(scmp_filter_ctx ctx) {
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0); rc < 0) {
      return RuleFailure(rc, name);
    }
  }
  for (unsigned long flag : kNamespaceFlags) {
    int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag));
    if (rc < 0) return RuleFailure(rc, "clone");
  }
  if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0); rc < 0) {
    return RuleFailure(rc, "clone3");
  }
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                            SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, TIOCSTI));
  if (rc < 0) return RuleFailure(rc, "ioctl(TIOCSTI)");
  return std::nullopt;
}

}  // namespace

MaybeFailure SyscallFilter::Build(SyscallFilter* out) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Failure{ENOMEM, "seccomp_init failed"};
  MaybeFailure failure = AddRules(ctx);
  // Export the BPF through a memfd: libseccomp only writes programs to file descriptors.
  int fd = failure ? -1 : ::memfd_create("odyssey-seccomp", MFD_CLOEXEC);
  if (!failure && fd < 0) failure = Errno("memfd_create", "seccomp");
  if (!failure) {
    if (int rc = seccomp_export_bpf(ctx, fd); rc < 0) {
      failure = Failure{-rc, std::string("seccomp_export_bpf: ") + std::strerror(-rc)};
    }
  }
  if (!failure) {
    off_t size = ::lseek(fd, 0, SEEK_END);
    out->program_.resize(static_cast<size_t>(size) / sizeof(sock_filter));
    if (size <= 0 || ::pread(fd, out->program_.data(), size, 0) != size) {
      failure = Errno("read back", "seccomp program");
    }
  }
  if (fd >= 0) ::close(fd);
  seccomp_release(ctx);
  return failure;
}

MaybeFailure SyscallFilter::Install() const {
  struct sock_fprog prog {};
  prog.len = static_cast<unsigned short>(program_.size());
  prog.filter = const_cast<sock_filter*>(program_.data());
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    return Errno("install seccomp filter");
  }
  return std::nullopt;
}

}  // namespace odyssey::hal::native::zygote
