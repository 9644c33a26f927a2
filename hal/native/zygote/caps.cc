#include "hal/native/zygote/caps.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>

namespace odyssey::hal::native::zygote {
namespace {

int LastCap() {
  int last = CAP_LAST_CAP;
  if (FILE* f = std::fopen("/proc/sys/kernel/cap_last_cap", "re")) {
    if (std::fscanf(f, "%d", &last) != 1) last = CAP_LAST_CAP;
    std::fclose(f);
  }
  return last;
}

}  // namespace

MaybeFailure DropPrivileges(uid_t uid, gid_t gid) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Errno("prctl(NO_NEW_PRIVS)");
  // Bounding set first: dropping it needs CAP_SETPCAP, which the uid change below clears.
  for (int cap = 0, last = LastCap(); cap <= last; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) {
      return Errno("prctl(CAPBSET_DROP)", std::to_string(cap));
    }
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
    return Errno("prctl(CAP_AMBIENT_CLEAR_ALL)");
  }
  if (::setgroups(0, nullptr) != 0) return Errno("setgroups");
  if (::setresgid(gid, gid, gid) != 0) return Errno("setresgid", std::to_string(gid));
  if (::setresuid(uid, uid, uid) != 0) return Errno("setresuid", std::to_string(uid));
  // A uid 0 -> non-0 change already cleared permitted/effective; clear all three sets
  // explicitly so the result does not depend on securebits.
  struct __user_cap_header_struct header {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return Errno("capset");
  return std::nullopt;
}

}  // namespace odyssey::hal::native::zygote
