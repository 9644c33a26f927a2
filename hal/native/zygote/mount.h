// Filesystem view of a native domain: the template root read-only, writable per-domain
// tmpfs/overlay layers, a minimal /dev, its own /proc, then pivot_root into it. Runs in the
// zygote (template part, ahead of time) and in each clone's fresh mount namespace (per-clone
// part). Never mounts anything in the host's mount namespace.
#pragma once

#include <cstdint>
#include <string>

#include "hal/native/zygote/fail.h"

namespace odyssey::hal::native::zygote {

// What every clone of one template shares, fixed when the zygote starts.
struct TemplateLayout {
  std::string template_dir;  // empty: the host template (host /usr, /etc … read-only)
  std::string agent_path;    // host path of the agent, bound at kAgentPathInside
  std::string staging;       // zygote-private directory where roots are assembled
  std::string services_dir;  // host folder(s) of qrexec services (colon list, lookup order), at kServicesDirInside
  std::string gui_agent_path;  // host path of gui-agent, bound at kGuiAgentPathInside (optional)
  uint32_t inner_uid = 1000;  // owner of /home/user inside
  uint32_t inner_gid = 1000;
};

// Where the agent appears inside every domain.
inline constexpr const char* kAgentPathInside = "/odyssey/qrexec-agent";
// Where TemplateLayout::services_dir appears inside (when set).
inline constexpr const char* kServicesDirInside = "/odyssey/qubes-rpc";
// Where TemplateLayout::gui_agent_path appears inside (when set).
inline constexpr const char* kGuiAgentPathInside = "/odyssey/gui-agent";
// Where the per-domain vchan socket directory appears inside.
inline constexpr const char* kVchanDirInside = "/run/vchan";

// Per-clone mount parameters.
struct CloneMounts {
  std::string vchan_dir;     // host directory, bound at kVchanDirInside
  int vchan_mount_fd = -1;   // or: a detached (idmapped) mount of it, moved there instead
  uint64_t tmpfs_bytes = 0;  // size of each writable layer
};

// Zygote start-up: private propagation, staging tmpfs, and (host template) the read-only
// root with its binds, /dev nodes and the agent, assembled once for all clones.
MaybeFailure PrepareTemplate(const TemplateLayout& layout);

// In a clone's fresh mount (and pid) namespace: the per-clone layers, /proc, devpts, the
// vchan directory, then pivot_root. On success "/" is the domain's root.
MaybeFailure MountCloneAndPivot(const TemplateLayout& layout, const CloneMounts& clone);

}  // namespace odyssey::hal::native::zygote
