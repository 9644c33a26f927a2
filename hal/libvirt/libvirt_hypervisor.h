// libvirt backend of the HAL: VMs through libvirt's C API. The default URI is the embedded
// QEMU driver, qemu:///embed?root=<state_dir>/libvirt (no libvirtd; this backend writes that
// root's etc/qemu.conf and runs libvirt's event loop in a thread of its own); any other URI
// (qemu:///system, xen:///system, qemu+ssh://host/system) is passed to libvirt as is.
// Guests talk to the host over virtio-serial ports backed by host Unix sockets named like
// the socket vchan (<socket_dir>/vchan.<domid>.0.<port>.sock, guest port
// org.odyssey.vchan.<port>), so the host side is the unchanged socket-vchan client.
// Templates are booted once, saved after the agent's HELLO (memory + device state, sealed by
// snapshot/), and clones restored PAUSED from that file with per-clone XML.
// It never trusts bytes from a guest: only the fixed-size HELLO is read here.
//
// Embedded libvirt allows one root per process: open one LibvirtHypervisor per process.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/hypervisor.h"

namespace odyssey::hal::libvirt {

struct Options {
  // Empty, "libvirt" or "qemu:///embed": qemu:///embed?root=<state_dir>/libvirt.
  std::string uri;
  // Sockets, clone files, accelerator cache; created if missing.
  std::string state_dir;
  // Sealed template snapshots (the catalog); empty: <state_dir>/snapshots. May be shared by
  // several processes (saves are written under a temporary name, then sealed).
  std::string snapshot_dir;
  // "kvm" or "tcg" forces the accelerator; empty probes KVM (short timeout) then TCG.
  std::string accel;
  // How long a booting template may take to say HELLO (TCG on a busy host is slow).
  std::chrono::milliseconds hello_timeout{std::chrono::minutes(5)};
  // How long the KVM probe waits for HELLO before falling back to TCG.
  std::chrono::milliseconds kvm_probe_timeout{std::chrono::seconds(20)};
  // Kernel command line for every guest. (init_on_free=1 shrinks the template's save image
  // from 97 to 60 MB, but its effect on restore and call time could not be measured on the
  // loaded test machine; see README.md, Figures.)
  std::string cmdline = "console=ttyS0 panic=-1 quiet";
  // Embedded URIs only: make this process the subreaper of the QEMUs it starts
  // (PR_SET_CHILD_SUBREAPER, process-wide) and reap each one as soon as it exits. libvirt
  // waits until a killed QEMU's pid is gone, checking every 200 ms; where init reaps orphans
  // late (this project's test machine: ~1 s) every destroy took 1.5-2 s. Only QEMU pids are
  // reaped here (waitid on a pidfd); other orphans reparented to this process are left to
  // the process's own reaping. QEMUs still outlive this process (they go to init).
  bool reap_qemu = true;
};

// The backend string recorded in sealed snapshots.
inline constexpr char kSnapshotBackend[] = "libvirt-qemu";

// Connects to a guest agent's control socket (retrying while QEMU has not created it) and
// reads its MSG_HELLO (8-byte header, type 0x300, 4-byte version). Returns the connected
// socket, positioned after HELLO. Fails with the path in the message on timeout, on EOF
// (QEMU gone) or on anything but a well-formed HELLO.
Result<UniqueFd> WaitForAgentHello(const std::string& socket_path, std::chrono::milliseconds timeout);

struct Connection;

class LibvirtHypervisor final : public hal::Hypervisor {
 public:
  static Result<std::unique_ptr<LibvirtHypervisor>> Create(Options opts);
  // Closes the connection; domains not Destroy()ed keep running (ListLeftovers finds them).
  ~LibvirtHypervisor() override;

  std::string uri() const override;
  Result<SnapshotPtr> PrepareSnapshot(const TemplateSpec& tmpl) override;
  Result<DomainPtr> CloneFromSnapshot(const SnapshotPtr& snap, const DomainSpec& spec) override;
  Result<DomainPtr> StartPaused(const TemplateSpec& tmpl, const DomainSpec& spec) override;
  Result<std::vector<Leftover>> ListLeftovers() override;
  Status DestroyLeftover(const Leftover& leftover) override;

  // The verified snapshot of tmpl in the snapshot dir (prepared by this or another process).
  // nullptr when there is none; an error naming the file when it is corrupted (it is then
  // removed, so PrepareSnapshot rebuilds it).
  Result<SnapshotPtr> OpenSnapshot(const TemplateSpec& tmpl);
  // OpenSnapshot, else PrepareSnapshot. A corrupted snapshot is rebuilt; *note (if given)
  // then receives the corruption message.
  Result<SnapshotPtr> OpenOrPrepareSnapshot(const TemplateSpec& tmpl, std::string* note = nullptr);
  // "kvm" or "tcg" for tmpl: forced, cached (memory, then <snapshot_dir>/<tmpl>.accel) or
  // probed by booting tmpl under KVM with a short timeout.
  Result<std::string> Accelerator(const TemplateSpec& tmpl);
  const Options& options() const { return opts_; }

 private:
  LibvirtHypervisor(Options opts, std::shared_ptr<Connection> conn);
  struct Boot;
  Result<Boot> BootDomain(const TemplateSpec& tmpl, const std::string& name, const std::string& accel,
                          unsigned flags);
  Result<std::string> ProbeAccelerator(const TemplateSpec& tmpl);
  int NextDomid();

  Options opts_;
  std::string socket_dir_, clones_dir_;
  std::shared_ptr<Connection> conn_;
  std::mutex mu_;
  int next_domid_ = 1;
  std::map<std::string, std::string> accel_cache_;
};

// A VM domain. Destroy() kills QEMU and removes the clone's sockets, console log and overlay.
class LibvirtDomain final : public hal::Domain {
 public:
  LibvirtDomain(std::shared_ptr<Connection> conn, void* dom, std::string name, int domid,
                std::string socket_dir, std::string clone_dir);
  ~LibvirtDomain() override;
  const std::string& name() const override { return name_; }
  DomainState state() override;
  Status Resume() override;
  Status Pause() override;
  Status Destroy() override;
  Result<ResourceStats> Stats() override;
  VchanEndpoint vchan() const override;

  // Host socket of the agent's control port (vchan port 512).
  std::string control_socket() const;
  // QEMU's process id (embedded driver only; -1 if unknown or not running).
  int qemu_pid() const;
  // Where the guest's serial console is written.
  std::string console_log() const { return clone_dir_ + "/console.log"; }

 private:
  std::shared_ptr<Connection> conn_;
  void* dom_;  // virDomainPtr; void* keeps libvirt's headers out of ours
  std::string name_;
  int domid_;
  std::string socket_dir_, clone_dir_;
  bool destroyed_ = false;
};

// Hypervisor::Open's entry for libvirt URIs ("", "libvirt" or "qemu:///embed" = embedded QEMU
// rooted at <state_dir>/libvirt).
Result<HypervisorPtr> OpenLibvirt(const std::string& uri, const std::string& state_dir);

}  // namespace odyssey::hal::libvirt
