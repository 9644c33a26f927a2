// HalBackend: disposables from the HAL, over any hal::Hypervisor (hal/native sandboxes for
// native templates, libvirt VMs for templates of kind "vm"), with calls made over qrexec
// (qrexec::AgentConnection). A pool member is a clone of the template's snapshot (native:
// a paused zygote; vm: a memory snapshot restored PAUSED) whose agent already said HELLO
// and which was paused again; a call resumes it and runs "DEFAULT:COMMAND" or
// "DEFAULT:QUBESRPC …". What differs between the kinds is a small HalKind: where the
// snapshot comes from, how the agent is reached, the clone's identity, and whether the
// hypervisor's calls must be serialised. VMs' HalKind is in engine/vm_backend.h.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"
#include "hal/hypervisor.h"
#include "qrexec/host/agent_connection.h"

namespace odyssey::engine {

// The kind-specific pieces of a HalBackend.
class HalKind {
 public:
  virtual ~HalKind() = default;
  // The backend's name, e.g. "hal native:///".
  virtual std::string name() const = 0;
  // The hypervisor, opened on first use if need be. only_if_used: nullptr rather than
  // opening one that no run of this state dir has used (reaping leftovers at startup).
  virtual Result<hal::Hypervisor*> Hypervisor(bool only_if_used) = 0;
  // The template's snapshot, opened from an earlier run or made now (a VM boots). Called
  // once per template until the template is checked again or a clone of it fails.
  virtual Result<hal::SnapshotPtr> Snapshot(hal::Hypervisor& hv, const TemplateInfo& tmpl) = 0;
  // Backend::CheckTemplate for this kind; holds serial() only around what needs it.
  virtual Result<TemplateFacts> Check(const TemplateInfo& tmpl, bool rebuild) = 0;
  // Adjusts how a member's agent is reached (VMs: QEMU listens on the data ports).
  virtual void Tune(qrexec::AgentConnectionOptions* options) const { (void)options; }
  // Runs on a new member whose agent said HELLO, before it is paused (VMs: a fresh identity).
  virtual Status Personalize(qrexec::AgentConnection& conn, const std::string& member) {
    (void)conn;
    (void)member;
    return OkStatus();
  }
  // When not null, held around every hypervisor call that creates or destroys a domain or
  // snapshot (libvirt's embedded driver forks QEMU inside odysseyd); resume and pause of a
  // pooled member never wait for it.
  virtual std::mutex* serial() { return nullptr; }
};

// A backend over kind's hypervisor; members get memory_limit_bytes where the HAL enforces it.
BackendPtr MakeHalBackend(std::unique_ptr<HalKind> kind, uint64_t memory_limit_bytes);

// The hal/native backend (uri "native:///" or another HAL URI for native templates).
Result<BackendPtr> MakeHalBackend(const Config& config, const std::string& uri);

// Quotes argv for /bin/sh -c (what a non-root qrexec agent runs a command line with).
std::string ShellQuote(const std::vector<std::string>& argv);

// hal/native's sandboxes (mapped ids, never host root) must traverse every ancestor of
// the state dir: returns the first ancestor that others cannot search, or "" when fine.
// private_dir: a folder odysseyd will make 0700 later (the admin socket's), counted as
// unsearchable even if it does not exist yet.
std::string UnsearchableAncestor(const std::string& state_dir, const std::string& private_dir = "");

// The qrexec-agent run in HAL domains: $ODYSSEY_QREXEC_AGENT, else the one built with this tree.
std::string DefaultAgentPath();

}  // namespace odyssey::engine
