// The native backend: domains are Linux namespace sandboxes (user, pid, mount, ipc, uts,
// net, cgroup namespaces; seccomp; no capabilities; cgroup v1 limits and freezer).
// A snapshot is a paused-ready zygote per template; clones fork from it, join their own
// cgroups and overlay/tmpfs layers, start the agent and wait frozen. Host-side code only:
// everything that runs inside the sandbox is in zygote/ (a separate, unsanitized binary).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "base/result.h"
#include "hal/hypervisor.h"
#include "hal/native/user.h"

namespace odyssey::hal::native {

struct NativeOptions {
  // The odyssey-native-zygote binary; empty: $ODYSSEY_NATIVE_ZYGOTE, else the one built
  // with this library.
  std::string zygote_path;
  // Host ids of the domains' user namespace (uid 0 inside = ids.host_base).
  IdRange ids;
  // Who the agent runs as inside (no capabilities whatever the uid).
  uint32_t inner_uid = 1000;
  uint32_t inner_gid = 1000;
  // Clone: wait for the agent's vchan socket (port 512) before freezing.
  bool wait_for_agent = true;
  std::chrono::milliseconds agent_timeout{10000};
  // cgroup parent relative to each v1 controller root; empty: this process's own cgroup.
  std::string cgroup_parent;
};

// Opens the native backend with its state under state_dir (created if missing; made
// traversable, mode 0711, because the sandboxes' mapped root must reach its subfolders).
Result<HypervisorPtr> OpenNative(const std::string& state_dir, const NativeOptions& options = {});

// The prefix of every cgroup this backend makes for state_dir (leftover detection).
std::string CgroupPrefix(const std::string& state_dir);

}  // namespace odyssey::hal::native
