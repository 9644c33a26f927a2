// User namespace of a native domain: uid/gid 0..count-1 inside map to an unprivileged host
// range starting at base, so nothing inside is host root. The host library (root) writes
// the maps for a child it created with CLONE_NEWUSER, then lets it exec.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace odyssey::hal::native {

struct IdRange {
  uint32_t host_base = 0x70000000;  // host uid/gid of uid/gid 0 inside
  uint32_t count = 65536;
};

struct UserNsChild {
  std::string path;                // executable to run (must be o+rx for the mapped root)
  std::vector<std::string> argv;   // argv[0] included
  std::vector<std::string> env;
  int control_fd = -1;             // becomes fd 3 in the child; every other fd >= 3 closes
  IdRange ids;
  // Runs after the maps are written and before the child may exec (e.g. joins cgroups).
  std::function<Status(pid_t)> before_exec;
};

// Starts child.path in a fresh user namespace as uid/gid 0 there. The caller reaps it.
// Safe in a multi-threaded (and sanitized) process: the child only makes raw syscalls
// between clone and execve.
Result<pid_t> SpawnInUserNamespace(const UserNsChild& child);

// A user namespace (kept only as an fd) mapping id 0 to host uid/gid: the idmap that makes
// host-root-owned files look owned by that uid through an idmapped mount.
Result<UniqueFd> MakeIdmapUserNamespace(uint32_t host_uid, uint32_t host_gid);

// A detached recursive bind of dir, idmapped through userns_fd and nosuid,nodev,noexec,
// ready for move_mount() in another mount namespace.
Result<UniqueFd> IdmappedBindMount(const std::string& dir, int userns_fd);

}  // namespace odyssey::hal::native
