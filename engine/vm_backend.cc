#include "engine/vm_backend.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <sstream>

#include <spdlog/spdlog.h>

#include "base/io.h"
#include "engine/hal_backend.h"
#include "hal/libvirt/guest_identity.h"
#include "hal/libvirt/libvirt_hypervisor.h"
#include "qrexec/host/agent_connection.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"

namespace odyssey::engine {
namespace {

namespace fs = std::filesystem;
using hal::libvirt::LibvirtHypervisor;

// Guest memory of VM templates (the snapshot is made with it; clones inherit it).
constexpr uint64_t kVmMemoryBytes = 256ull << 20;

class VmKind : public HalKind {
 public:
  explicit VmKind(const Config& config)
      : state_dir_(config.state_dir + "/vm"),
        uri_(config.vm_uri.empty() ? "qemu:///embed?root=" + config.state_dir + "/libvirt"
                                   : config.vm_uri),
        accel_(config.vm_accel) {}

  std::string name() const override { return "vm " + uri_; }

  Result<hal::Hypervisor*> Hypervisor(bool only_if_used) override {
    auto hv = Libvirt(only_if_used);
    if (!hv.ok()) return hv.error();
    return static_cast<hal::Hypervisor*>(*hv);
  }

  // Opened, verified, or (no snapshot yet) booted to HELLO and saved. A corrupted snapshot is
  // not quietly rebuilt: the template is refused, naming the file, until
  // `odyssey template build NAME --kind vm --rebuild` (a marker keeps that across restarts).
  Result<hal::SnapshotPtr> Snapshot(hal::Hypervisor& hv, const TemplateInfo& t) override {
    if (t.root_dir.empty()) return Error{"VM template " + t.name + " has no image directory", EINVAL};
    auto* lv = static_cast<LibvirtHypervisor*>(&hv);
    const std::string broken = BrokenMarker(t.name);
    if (auto why = ReadFileToString(broken, 64 * 1024); why.ok()) return Error{*why, EBADMSG};
    auto opened = lv->OpenSnapshot(Spec(t));
    if (!opened.ok()) {
      std::string why = "the snapshot of VM template " + t.name + " is corrupted (" +
                        opened.error().message + "); it was removed: make a fresh one with "
                        "`odyssey template build " + t.name + " --kind vm --rebuild`";
      (void)WriteFileAtomic(broken, why);
      return Error{why, EBADMSG};
    }
    if (*opened) return *opened;
    spdlog::info("VM template {}: booting {} to the agent's HELLO to save its snapshot", t.name,
                 t.root_dir);
    return lv->PrepareSnapshot(Spec(t));
  }

  Result<TemplateFacts> Check(const TemplateInfo& t, bool rebuild) override {
    if (t.kind != "vm")
      return Error{"the VM backend takes templates of kind vm, not '" + t.kind + "'", EINVAL};
    if (t.root_dir.empty() || t.root_dir[0] != '/')
      return Error{"VM template " + t.name + " needs an absolute image directory, not '" +
                       t.root_dir + "'", EINVAL};
    auto sum = VerifyGuestImage(t.root_dir);  // hashing needs no lock
    if (!sum.ok()) return sum.error().Wrap("VM template " + t.name);
    std::lock_guard serial(serial_);  // the accelerator probe may boot the template
    auto hv = Libvirt(false);
    if (!hv.ok()) return hv.error();
    const std::string snap_dir = (*hv)->options().snapshot_dir;
    const std::string image_file = snap_dir + "/" + t.name + ".image";
    auto recorded = ReadFileToString(image_file, 128);
    if (rebuild || !recorded.ok() || *recorded != *sum) {
      // The snapshot (if any) was made from another image, or a rebuild was asked for.
      auto catalog = snapshot::Catalog::Open(snap_dir);
      if (!catalog.ok()) return catalog.error();
      (void)snapshot::Remove(catalog->PayloadPath(t.name, hal::libvirt::kSnapshotBackend));
      ::unlink(BrokenMarker(t.name).c_str());
      if (rebuild) ::unlink((snap_dir + "/" + t.name + ".accel").c_str());
      ODYSSEY_TRY(WriteFileAtomic(image_file, *sum));
    }
    auto accel = (*hv)->Accelerator(Spec(t));
    if (!accel.ok()) return accel.error().Wrap("probing the accelerator of VM template " + t.name);
    return TemplateFacts{*accel, *sum};
  }

  void Tune(qrexec::AgentConnectionOptions* o) const override {
    o->connect_timeout = std::chrono::seconds(120);
    o->connect_data_ports = true;  // QEMU listens on every virtio-serial port's socket
  }

  // Every clone resumes with the template's hostname and kernel RNG state: the guest image's
  // odyssey-identity tool (hal/libvirt/guest_identity.h) credits 64 bytes of host randomness
  // to the kernel, forces its CRNG to reseed and names the guest after the member. Runs while
  // the member is prepared (before it is paused and pooled), so no call ever runs on a clone
  // whose RNG matches its siblings', and the hit does not pay for it; being the clone's first
  // call it also warms the restored QEMU (TCG's translation cache, the agent's fork/exec path).
  Status Personalize(qrexec::AgentConnection& conn, const std::string& member) override {
    auto refresh = hal::libvirt::MakeIdentityRefresh(member);
    if (!refresh.ok()) return refresh.error().Wrap("giving " + member + " its identity");
    int in[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return Error::Errno("pipe2", member);
    UniqueFd in_r(in[0]), in_w(in[1]);
    // The seed fits in the pipe: the tool's whole stdin, written before the call.
    if (Status s = WriteAll(in_w.get(), refresh->seed.data(), refresh->seed.size()); !s.ok())
      return s.error().Wrap("seed of " + member);
    in_w.reset();
    // The tool's stderr, for the error message; never blocks the call (a flood fails it).
    if (::pipe2(err, O_CLOEXEC | O_NONBLOCK) != 0) return Error::Errno("pipe2", member);
    UniqueFd err_r(err[0]), err_w(err[1]);
    qrexec::CallRequest req;
    req.cmdline = "root:" + refresh->command;
    req.stdin_fd = in_r.get();
    req.stderr_fd = err_w.get();
    auto code = conn.Call(req);
    err_w.reset();
    if (!code.ok()) return code.error().Wrap("giving " + member + " its identity");
    if (*code != 0) {
      char buf[512];
      ssize_t n = ::read(err_r.get(), buf, sizeof buf);
      std::string why(buf, n > 0 ? static_cast<size_t>(n) : 0);
      while (!why.empty() && why.back() == '\n') why.pop_back();
      return Error{"giving " + member + " its identity: " + hal::libvirt::kGuestIdentityTool +
                       " exited with " + std::to_string(*code) + (why.empty() ? "" : ": " + why),
                   EIO};
    }
    return OkStatus();
  }

  std::mutex* serial() override { return &serial_; }

 private:
  Result<LibvirtHypervisor*> Libvirt(bool only_if_used) {
    std::lock_guard lock(open_mu_);
    if (hv_) return hv_.get();
    std::error_code ec;
    if (only_if_used && !fs::exists(state_dir_, ec)) return static_cast<LibvirtHypervisor*>(nullptr);
    hal::libvirt::Options o;
    o.uri = uri_;
    o.state_dir = state_dir_;
    o.snapshot_dir = state_dir_ + "/snapshots";
    o.accel = accel_;
    o.hello_timeout = std::chrono::minutes(5);
    auto hv = LibvirtHypervisor::Create(o);
    if (!hv.ok()) return hv.error().Wrap("opening the VM backend " + uri_);
    hv_ = std::move(*hv);
    spdlog::info("VM backend {} (state {})", hv_->uri(), state_dir_);
    return hv_.get();
  }

  std::string BrokenMarker(const std::string& tmpl) const {
    return state_dir_ + "/snapshots/" + tmpl + ".broken";
  }

  static hal::TemplateSpec Spec(const TemplateInfo& t) {
    hal::TemplateSpec s;
    s.name = t.name;
    s.kind = "vm";
    s.kernel = t.root_dir + "/vmlinuz";
    s.initrd = t.root_dir + "/initrd.img";
    s.memory_bytes = kVmMemoryBytes;
    return s;
  }

  const std::string state_dir_, uri_, accel_;
  std::mutex open_mu_, serial_;
  std::unique_ptr<LibvirtHypervisor> hv_;
};

}  // namespace

BackendPtr MakeVmBackend(const Config& config) {
  return MakeHalBackend(std::make_unique<VmKind>(config), config.memory_limit_bytes);
}

Result<std::string> VerifyGuestImage(const std::string& image_dir) {
  const std::string sums_path = image_dir + "/SHA256SUMS";
  auto sums = ReadFileToString(sums_path, 64 * 1024);
  if (!sums.ok()) return sums.error().Wrap("guest image " + image_dir);
  std::istringstream in(*sums);
  std::string line;
  bool kernel = false, initrd = false;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    // "<64 hex>  <file name>", file names without slashes.
    size_t sp = line.find("  ");
    std::string want = line.substr(0, sp == std::string::npos ? 0 : sp);
    std::string file = sp == std::string::npos ? "" : line.substr(sp + 2);
    if (want.size() != 64 || file.empty() || file.find('/') != std::string::npos || file[0] == '.')
      return Error{"guest image " + image_dir + ": malformed line in SHA256SUMS: '" + line + "'", EINVAL};
    auto got = snapshot::Sha256File(image_dir + "/" + file, 1ull << 30);
    if (!got.ok()) return got.error().Wrap("guest image " + image_dir);
    if (*got != want)
      return Error{"guest image " + image_dir + ": " + file + " does not match SHA256SUMS (sha256 " +
                       *got + ", expected " + want + "); rebuild it with --rebuild", EINVAL};
    kernel |= file == "vmlinuz";
    initrd |= file == "initrd.img";
  }
  if (!kernel || !initrd)
    return Error{"guest image " + image_dir + ": SHA256SUMS lists no vmlinuz or no initrd.img", EINVAL};
  return snapshot::Sha256File(sums_path, 64 * 1024);
}

}  // namespace odyssey::engine
