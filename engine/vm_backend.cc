#include "engine/vm_backend.h"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <thread>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <sstream>

#include <spdlog/spdlog.h>

#include "base/io.h"
#include "engine/hal_backend.h"
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
// A restored clone's agent answers within a second on an idle host; TCG under heavy load
// has been seen to take tens of seconds.
constexpr std::chrono::seconds kHelloTimeout{120};

// One restored, paused VM clone with its agent connection (HELLO done).
class VmMember : public Member {
 public:
  VmMember(std::string name, std::string tmpl, hal::DomainPtr domain,
           qrexec::AgentConnectionPtr conn, std::atomic<int>* live)
      : name_(std::move(name)), template_(std::move(tmpl)), domain_(std::move(domain)),
        conn_(std::move(conn)), live_(live), domid_(domain_->vchan().domid) {
    ++*live_;
  }
  ~VmMember() override { (void)Destroy(); }
  const std::string& name() const override { return name_; }
  const std::string& template_name() const override { return template_; }
  int64_t handle() const override { return domid_; }

  Result<int> Call(CallSpec spec) override {
    qrexec::CallRequest req;
    if (!spec.service.empty())
      req.cmdline = "DEFAULT:QUBESRPC " + spec.service + "+" + spec.service_arg + " " + spec.source;
    else if (!spec.argv.empty())
      req.cmdline = "DEFAULT:" + ShellQuote(spec.argv);
    else
      return Error{"empty call", EINVAL};
    req.stdin_fd = spec.stdin_fd.get();
    req.stdout_fd = spec.stdout_fd.get();
    req.stderr_fd = spec.stderr_fd.get();
    qrexec::AgentConnection* conn = nullptr;
    {
      std::lock_guard lock(mu_);
      if (killed_ || destroyed_) return 128 + SIGKILL;
      if (auto s = domain_->Resume(); !s.ok()) return s.error().Wrap("resuming VM " + name_);
      conn = conn_.get();
    }
    auto code = conn->Call(req);
    if (killed_) return 128 + SIGKILL;
    if (!code.ok()) {
      // A QEMU that died mid-call shows as a closed channel; say so plainly.
      hal::DomainState st = domain_->state();
      if (st == hal::DomainState::kCrashed || st == hal::DomainState::kShutOff)
        return code.error().Wrap("VM " + name_ + " died during the call");
      return code.error().Wrap("calling VM " + name_);
    }
    return *code;
  }

  void Kill() override {
    killed_ = true;
    std::lock_guard lock(mu_);
    conn_->Close();
    (void)domain_->Destroy();
  }

  Status Destroy() override {
    std::lock_guard lock(mu_);
    if (destroyed_) return OkStatus();
    conn_->Close();
    Status s = domain_->Destroy();
    destroyed_ = true;
    --*live_;
    return s;
  }

  MemberUsage Usage() override {
    MemberUsage u;
    std::lock_guard lock(mu_);
    if (destroyed_) return u;
    auto s = domain_->Stats();
    if (s.ok()) {
      u.memory_bytes = s->memory_bytes;
      u.memory_pss_bytes = s->memory_pss_bytes ? s->memory_pss_bytes : s->memory_bytes;
      u.processes = s->pids;
    }
    return u;
  }

 private:
  std::string name_, template_;
  std::mutex mu_;
  hal::DomainPtr domain_;
  qrexec::AgentConnectionPtr conn_;
  std::atomic<int>* live_;
  int64_t domid_;
  std::atomic<bool> killed_{false};
  bool destroyed_ = false;
};

// AgentConnection::Connect waits for HELLO without a deadline; a guest that never says it
// is destroyed after kHelloTimeout, which ends the wait with an error.
Result<qrexec::AgentConnectionPtr> ConnectWithDeadline(const qrexec::AgentConnectionOptions& o,
                                                       hal::Domain& domain) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, expired = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, kHelloTimeout, [&] { return done; })) {
      expired = true;
      (void)domain.Destroy();
    }
  });
  auto conn = qrexec::AgentConnection::Connect(o);
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  if (expired && !conn.ok())
    return Error{"the agent of " + o.domain_name + " did not say HELLO within " +
                     std::to_string(kHelloTimeout.count()) + " s", ETIMEDOUT};
  return conn;
}

// VM templates through hal/libvirt.
class VmBackend {
 public:
  explicit VmBackend(const Config& config)
      : state_dir_(config.state_dir + "/vm"),
        uri_(config.vm_uri.empty() ? "qemu:///embed?root=" + config.state_dir + "/libvirt"
                                   : config.vm_uri),
        accel_(config.vm_accel) {}

  // Whether an earlier run used VMs (so leftovers may exist).
  bool WasUsed() const {
    std::error_code ec;
    return fs::exists(state_dir_, ec);
  }

  Result<LibvirtHypervisor*> Hypervisor() {
    std::lock_guard lock(mu_);
    if (hv_) return hv_.get();
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

  static hal::TemplateSpec Spec(const TemplateInfo& t) {
    hal::TemplateSpec s;
    s.name = t.name;
    s.kind = "vm";
    s.kernel = t.root_dir + "/vmlinuz";
    s.initrd = t.root_dir + "/initrd.img";
    s.memory_bytes = kVmMemoryBytes;
    return s;
  }

  // The template's snapshot for this image: cached, verified from the catalog, or made now
  // (boot to HELLO, save).
  Result<hal::SnapshotPtr> Snapshot(const TemplateInfo& t) {
    auto hv = Hypervisor();
    if (!hv.ok()) return hv.error();
    std::lock_guard lock(snap_mu_);
    auto it = snaps_.find(t.name);
    if (it != snaps_.end() && it->second.first == t.root_dir) return it->second.second;
    std::string note;
    auto s = (*hv)->OpenOrPrepareSnapshot(Spec(t), &note);
    if (!note.empty()) spdlog::warn("template {}: {}; rebuilt the snapshot", t.name, note);
    if (!s.ok()) return s.error().Wrap("preparing the snapshot of VM template " + t.name);
    snaps_[t.name] = {t.root_dir, *s};
    return *s;
  }

  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) {
    if (tmpl.root_dir.empty()) return Error{"VM template " + tmpl.name + " has no image directory", EINVAL};
    auto snap = Snapshot(tmpl);
    if (!snap.ok()) return snap.error();
    auto hv = Hypervisor();
    if (!hv.ok()) return hv.error();
    hal::DomainSpec spec;
    spec.name = name;
    spec.template_name = tmpl.name;
    auto dom = (*hv)->CloneFromSnapshot(*snap, spec);
    if (!dom.ok()) return dom.error().Wrap("cloning VM template " + tmpl.name);
    hal::DomainPtr domain = std::move(*dom);
    auto fail = [&](const Error& e) -> Result<MemberPtr> {
      (void)domain->Destroy();
      return e.Wrap("preparing " + name);
    };
    // HELLO needs a running guest: resume, connect, pause again.
    if (auto s = domain->Resume(); !s.ok()) return fail(s.error());
    qrexec::AgentConnectionOptions o;
    hal::VchanEndpoint ep = domain->vchan();
    o.domid = ep.domid;
    o.domain_name = name;
    o.socket_dir = ep.socket_dir;
    o.connect_timeout = kHelloTimeout;
    o.connect_data_ports = true;  // QEMU listens on every virtio-serial port's socket
    auto conn = ConnectWithDeadline(o, *domain);
    if (!conn.ok()) return fail(conn.error());
    if (auto s = domain->Pause(); !s.ok()) {
      (*conn)->Close();
      return fail(s.error());
    }
    return MemberPtr(new VmMember(name, tmpl.name, std::move(domain), std::move(*conn), &live_));
  }

  Result<int> ReapLeftovers() {
    if (!hv_ && !WasUsed()) return 0;
    auto hv = Hypervisor();
    if (!hv.ok()) return hv.error();
    auto l = (*hv)->ListLeftovers();
    if (!l.ok()) return l.error();
    int n = 0;
    for (auto& x : *l) {
      n += x.kind == "domain";
      if (auto s = (*hv)->DestroyLeftover(x); !s.ok())
        spdlog::warn("destroying leftover VM {} {}: {}", x.kind, x.id, s.error().message);
    }
    return n;
  }

  Status Check(TemplateRecord* t, bool rebuild) {
    if (t->root_dir.empty() || t->root_dir[0] != '/')
      return Error{"VM template " + t->name + " needs an absolute image directory, not '" +
                       t->root_dir + "'", EINVAL};
    auto sum = VerifyGuestImage(t->root_dir);
    if (!sum.ok()) return sum.error().Wrap("VM template " + t->name);
    auto hv = Hypervisor();
    if (!hv.ok()) return hv.error();
    const std::string snap_dir = (*hv)->options().snapshot_dir;
    const std::string image_file = snap_dir + "/" + t->name + ".image";
    auto recorded = ReadFileToString(image_file, 128);
    if (rebuild || !recorded.ok() || *recorded != *sum) {
      // The snapshot (if any) was made from another image: never clone it.
      auto catalog = snapshot::Catalog::Open(snap_dir);
      if (!catalog.ok()) return catalog.error();
      (void)snapshot::Remove(catalog->PayloadPath(t->name, hal::libvirt::kSnapshotBackend));
      if (rebuild) ::unlink((snap_dir + "/" + t->name + ".accel").c_str());
      {
        std::lock_guard lock(snap_mu_);
        snaps_.erase(t->name);
      }
      ODYSSEY_TRY(WriteFileAtomic(image_file, *sum));
    }
    TemplateInfo info{t->name, "vm", t->root_dir};
    auto accel = (*hv)->Accelerator(Spec(info));
    if (!accel.ok()) return accel.error().Wrap("probing the accelerator of VM template " + t->name);
    t->accel = *accel;
    t->image_sha256 = *sum;
    return OkStatus();
  }

  int CountLive() { return live_.load(); }

 private:
  const std::string state_dir_, uri_, accel_;
  std::mutex mu_, snap_mu_;
  std::unique_ptr<LibvirtHypervisor> hv_;
  std::map<std::string, std::pair<std::string, hal::SnapshotPtr>> snaps_;  // name -> (image, snap)
  std::atomic<int> live_{0};
};

// Routes by template kind: "vm" to VMs, everything else to the engine's own backend.
class KindRouter : public Backend {
 public:
  KindRouter(const Config& config, BackendPtr native) : native_(std::move(native)), vm_(config) {}
  std::string name() const override { return native_->name(); }

  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) override {
    if (tmpl.kind == "vm") return vm_.Prepare(tmpl, name);
    return native_->Prepare(tmpl, name);
  }

  Result<int> ReapLeftovers() override {
    auto n = native_->ReapLeftovers();
    if (!n.ok()) return n;
    auto v = vm_.ReapLeftovers();
    if (!v.ok()) {
      spdlog::warn("reconciling VM leftovers: {}", v.error().message);
      return n;
    }
    return *n + *v;
  }

  int CountLive() override { return native_->CountLive() + vm_.CountLive(); }

  VmBackend& vm() { return vm_; }

 private:
  BackendPtr native_;
  VmBackend vm_;
};

}  // namespace

BackendPtr WithVmTemplates(const Config& config, BackendPtr native) {
  return BackendPtr(new KindRouter(config, std::move(native)));
}

Status CheckVmTemplate(Backend& backend, TemplateRecord* t, bool rebuild) {
  auto* router = dynamic_cast<KindRouter*>(&backend);
  if (!router) return Error{"this odysseyd has no VM backend (built without libvirt)", ENOTSUP};
  return router->vm().Check(t, rebuild);
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
