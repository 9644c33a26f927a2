// Shared environment of the VM tests and benchmarks: one guest image (built by
// guest/build-image.sh with the static qrexec-agent, odyssey-guest-agent, cached in $ODYSSEY_IMAGE_CACHE or
// /var/cache/odyssey/images) and one template snapshot shared by every test process through
// a cache next to the images (snapshots/<image>/), verified before use. Each process gets its
// own mkdtemp state dir and embedded libvirt root; its catalog links to the shared snapshot
// so a test may corrupt or rebuild its own copy without touching the others.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/libvirt/libvirt_hypervisor.h"
#include "qrexec/host/agent_connection.h"

namespace odyssey::testing_vm {

class VmEnv {
 public:
  // The process-wide environment, set up on first use. Never null; check skip_reason().
  static VmEnv& Get();
  // The environment if Get() was called in this process, else nullptr.
  static VmEnv* IfCreated();
  // Non-empty when this machine cannot run VMs (qemu, libvirt's QEMU driver or busybox
  // missing); tests GTEST_SKIP() with it.
  const std::string& skip_reason() const { return skip_reason_; }
  // Non-empty when something that should work failed (image build, libvirt connection).
  const std::string& setup_error() const { return setup_error_; }

  hal::libvirt::LibvirtHypervisor& hv() { return *hv_; }
  const hal::TemplateSpec& tmpl() const { return tmpl_; }
  const std::string& image_dir() const { return image_dir_; }
  const std::string& state_dir() const { return state_dir_; }
  // The template snapshot (shared cache or prepared now); an error if that failed.
  Result<hal::SnapshotPtr> Snapshot();
  // A unique domain name for this process ("<prefix><pid>x<n>").
  std::string UniqueName(const std::string& prefix);
  // Destroys whatever domains and clone files this process left behind; removes state_dir.
  void Cleanup();

 private:
  VmEnv();
  Status BuildImage();
  Status LinkSharedSnapshot();
  Status PublishSnapshot();

  std::string skip_reason_, setup_error_;
  std::string image_dir_, state_dir_, shared_snapshot_dir_;
  hal::TemplateSpec tmpl_;
  std::unique_ptr<hal::libvirt::LibvirtHypervisor> hv_;
  hal::SnapshotPtr snapshot_;
  int counter_ = 0;
};

// Connects to the guest's qrexec-agent (HELLO exchanged) over the domain's virtio-serial
// sockets, the way the engine does. Blocks until the agent says HELLO.
Result<qrexec::AgentConnectionPtr> ConnectAgent(const hal::Domain& dom);

// Runs `command` (sh -c in the guest, as DEFAULT:) through the agent with stdin_data as its
// whole stdin and returns its stdout (capped at 1 MiB); a non-zero exit code is an error
// carrying stderr.
Result<std::string> CallAgent(qrexec::AgentConnection& conn, const std::string& command,
                              const std::string& stdin_data = "");

// Gives a restored clone its own identity (hal/libvirt/guest_identity.h: fresh RNG seed,
// hostname) through its agent.
Status RefreshIdentity(qrexec::AgentConnection& conn, const std::string& hostname);

// A restored clone made ready the way the engine's pool makes one: resumed, agent connected
// (HELLO exchanged), identity refreshed, paused again. A pool hit is then Resume() + a call.
struct ReadyClone {
  std::unique_ptr<hal::libvirt::LibvirtDomain> dom;
  qrexec::AgentConnectionPtr conn;
};
Result<ReadyClone> PrepareReadyClone(VmEnv& env, const std::string& name_prefix);

// Whether any process's command line names the QEMU guest `name` (guest=<name>,).
bool QemuRunning(const std::string& name);

}  // namespace odyssey::testing_vm
