// Privileges of a native domain's processes: no_new_privs, every capability set empty
// (bounding, ambient, permitted, effective, inheritable), and a non-root uid/gid inside the
// user namespace. After DropPrivileges nothing in the domain can regain a capability.
#pragma once

#include <sys/types.h>

#include "hal/native/zygote/fail.h"

namespace odyssey::hal::native::zygote {

MaybeFailure DropPrivileges(uid_t uid, gid_t gid);

}  // namespace odyssey::hal::native::zygote
