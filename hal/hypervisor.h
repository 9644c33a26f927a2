// Hypervisor: the HAL entry point. Picks a backend by URI ("native:///" is the default;
// "qemu:///embed?root=DIR", "qemu:///system", "xen:///system", "qemu+ssh://…" via libvirt)
// and creates domains from templates, fresh or as clones of a prepared snapshot.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "hal/domain.h"

namespace odyssey::hal {

// What a template is made of. Native: a root tree ("host" = the host's /usr, /etc …
// read-only). VM: kernel + initramfs (+ optional disk).
struct TemplateSpec {
  std::string name;
  std::string kind = "native";   // "native" | "vm"
  std::string root_dir;          // native: root tree; empty = host template
  std::string kernel, initrd, disk;  // vm
  uint64_t memory_bytes = 256ull << 20;
  std::string agent_path;        // qrexec-agent binary run as the domain's init/agent
  // Native: host directories of qrexec services, a colon list in lookup order, shown
  // read-only inside as one folder (/odyssey/qubes-rpc, searched by the agent before
  // /usr/local/etc/qubes-rpc and /etc/qubes-rpc) where a name resolves to the first folder
  // that has it; empty: none.
  std::string services_dir;
  // Native: the gui-agent binary bound read-only at /odyssey/gui-agent (GUI disposables run
  // their program under it); empty: none.
  std::string gui_agent_path;
};

// A prepared, ready-to-clone state of a template (native: a paused zygote; VM: memory +
// device snapshot). Opaque above hal/.
class Snapshot {
 public:
  virtual ~Snapshot() = default;
  virtual const std::string& template_name() const = 0;
};
using SnapshotPtr = std::shared_ptr<Snapshot>;

// A resource left behind by a killed run, found by ListLeftovers().
struct Leftover {
  std::string kind;   // "process", "mount", "cgroup", "socket", "domain", "disk"
  std::string id;     // what DestroyLeftover needs
};

class Hypervisor {
 public:
  virtual ~Hypervisor() = default;
  // Opens the backend named by uri; state_dir holds sockets, overlays, snapshots.
  static Result<std::unique_ptr<Hypervisor>> Open(const std::string& uri, const std::string& state_dir);

  virtual std::string uri() const = 0;
  // Boots the template once and brings it to the point where clones can be made
  // (agent up, HELLO exchanged), then freezes that state.
  virtual Result<SnapshotPtr> PrepareSnapshot(const TemplateSpec& tmpl) = 0;
  // Makes a new domain from the snapshot, left PAUSED with its agent ready.
  virtual Result<DomainPtr> CloneFromSnapshot(const SnapshotPtr& snap, const DomainSpec& spec) = 0;
  // Boots a domain from scratch without a snapshot (cold path; benchmarks compare to it).
  virtual Result<DomainPtr> StartPaused(const TemplateSpec& tmpl, const DomainSpec& spec) = 0;
  // Resources under state_dir that no live object owns (a killed previous run).
  virtual Result<std::vector<Leftover>> ListLeftovers() = 0;
  virtual Status DestroyLeftover(const Leftover& leftover) = 0;
};

using HypervisorPtr = std::unique_ptr<Hypervisor>;

}  // namespace odyssey::hal
