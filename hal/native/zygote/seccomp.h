// Syscall filter of a native domain, built once per zygote with libseccomp and installed
// in every clone. Refuses (EPERM) what a disposable never needs: kernel modules, kexec,
// bpf, perf, keyrings, ptrace and cross-process memory access, any mount-table change after
// set-up, new namespaces, clock/swap/reboot/accounting, TIOCSTI. clone3 gets ENOSYS so libc
// falls back to clone, whose namespace flags the filter can inspect.
#pragma once

#include <linux/filter.h>

#include <vector>

#include "hal/native/zygote/fail.h"

namespace odyssey::hal::native::zygote {

class SyscallFilter {
 public:
  // Compiles the policy to BPF (done in the zygote, ahead of every clone).
  static MaybeFailure Build(SyscallFilter* out);
  // Installs it on the calling thread; needs no_new_privs already set.
  MaybeFailure Install() const;

 private:
  std::vector<sock_filter> program_;
};

}  // namespace odyssey::hal::native::zygote
