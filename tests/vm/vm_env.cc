#include "tests/vm/vm_env.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/io.h"
#include "hal/libvirt/guest_identity.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"

#ifndef ODYSSEY_SOURCE_DIR
#error "ODYSSEY_SOURCE_DIR must name the source tree"
#endif
#ifndef ODYSSEY_GUEST_AGENT
#error "ODYSSEY_GUEST_AGENT must name the static guest agent"
#endif

namespace odyssey::testing_vm {
namespace {

namespace fs = std::filesystem;
constexpr char kTemplate[] = "odyssey-test";
constexpr char kLibvirtQemuDriver[] = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so";

std::string ImageCache() {
  const char* env = std::getenv("ODYSSEY_IMAGE_CACHE");
  return env && *env ? env : "/var/cache/odyssey/images";
}

// Runs a shell command, returning its stdout; stderr goes to err_file.
Result<std::string> RunCapture(const std::string& cmd, const std::string& err_file) {
  std::string full = cmd + " 2>'" + err_file + "'";
  FILE* p = ::popen(full.c_str(), "r");
  if (!p) return Error::Errno("popen", cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = ::pclose(p);
  if (rc != 0) {
    auto err = ReadFileToString(err_file, 1 << 20);
    return Error{cmd + " failed (status " + std::to_string(rc) + "): " + (err.ok() ? *err : ""), EIO};
  }
  return out;
}

// An exclusive lock on a file, held while the object lives.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644)) {
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_;
};

Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  const std::string tmp = to + ".tmp." + std::to_string(::getpid());
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (ec) return Error{"copying " + from + " to " + tmp + ": " + ec.message(), ec.value()};
  fs::rename(tmp, to, ec);
  if (ec) return Error{"renaming " + tmp + ": " + ec.message(), ec.value()};
  return OkStatus();
}

}  // namespace

namespace {
VmEnv* g_env = nullptr;  // lives for the process; the test program's TearDown cleans up
}  // namespace

VmEnv& VmEnv::Get() {
  static VmEnv* env = g_env = new VmEnv();
  return *env;
}

VmEnv* VmEnv::IfCreated() { return g_env; }

VmEnv::VmEnv() {
  if (::access("/usr/bin/qemu-system-x86_64", X_OK) != 0) {
    skip_reason_ = "qemu-system-x86_64 is not installed";
    return;
  }
  if (::access(kLibvirtQemuDriver, R_OK) != 0) {
    skip_reason_ = "libvirt's QEMU driver is not installed (libvirt-daemon-driver-qemu)";
    return;
  }
  if (::access("/bin/busybox", X_OK) != 0 && ::access("/usr/bin/busybox", X_OK) != 0) {
    skip_reason_ = "busybox is not installed";
    return;
  }
  char tmpl[] = "/tmp/ody-vm-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    setup_error_ = "mkdtemp failed";
    return;
  }
  state_dir_ = tmpl;
  if (Status st = BuildImage(); !st.ok()) {
    setup_error_ = "building the guest image: " + st.error().message;
    return;
  }
  tmpl_.name = kTemplate;
  tmpl_.kind = "vm";
  tmpl_.kernel = image_dir_ + "/vmlinuz";
  tmpl_.initrd = image_dir_ + "/initrd.img";
  tmpl_.memory_bytes = 256ull << 20;
  tmpl_.agent_path = ODYSSEY_GUEST_AGENT;
  // Save images are only good for the QEMU and libvirt that wrote them: key the shared
  // snapshot cache by the image and by both binaries.
  std::string binaries;
  for (const char* bin : {"/usr/bin/qemu-system-x86_64", kLibvirtQemuDriver}) {
    struct stat st;
    if (::stat(bin, &st) == 0) {
      binaries += "-" + std::to_string(st.st_size % 100000) + "." + std::to_string(st.st_mtime % 100000);
    }
  }
  // ... and by the kernel command line the template boots with.
  // $ODYSSEY_VM_CMDLINE replaces the default (A/B measurements of guest kernel options).
  const char* cmdline_env = std::getenv("ODYSSEY_VM_CMDLINE");
  const std::string cmdline = cmdline_env && *cmdline_env ? cmdline_env : hal::libvirt::Options().cmdline;
  binaries += "-c" + std::to_string(std::hash<std::string>()(cmdline) % 100000);
  // ... and by the generation of the domain XML the template is saved with (x2: the qemu
  // namespace extras of hal/libvirt/domain_xml.h), so an older snapshot is never reused.
  binaries += "-x2";
  shared_snapshot_dir_ = fs::path(ImageCache()).parent_path().string() + "/snapshots/" +
                         fs::path(image_dir_).filename().string() + binaries;
  // libvirt probes QEMU's capabilities into <root>/cache/qemu, seconds per fresh root under
  // TCG; every test process shares one cache (libvirt revalidates and rewrites it atomically).
  const std::string caps_cache = fs::path(ImageCache()).parent_path().string() + "/libvirt-qemu-caps";
  std::error_code ec;
  fs::create_directories(caps_cache, ec);
  fs::create_directories(state_dir_ + "/libvirt/cache", ec);
  if (!ec) fs::create_directory_symlink(caps_cache, state_dir_ + "/libvirt/cache/qemu", ec);
  hal::libvirt::Options opts;
  opts.state_dir = state_dir_;
  opts.snapshot_dir = state_dir_ + "/snapshots";
  opts.cmdline = cmdline;
  if (const char* accel = std::getenv("ODYSSEY_VM_ACCEL"); accel && *accel) opts.accel = accel;
  auto hv = hal::libvirt::LibvirtHypervisor::Create(opts);
  if (!hv.ok()) {
    setup_error_ = hv.error().message;
    return;
  }
  hv_ = std::move(*hv);
  // The accelerator probe (a KVM boot that may time out) is shared too.
  auto accel = ReadFileToString(shared_snapshot_dir_ + "/" + kTemplate + ".accel", 16);
  if (accel.ok() && (*accel == "kvm" || *accel == "tcg")) {
    (void)WriteFileAtomic(hv_->options().snapshot_dir + "/" + kTemplate + ".accel", *accel);
  }
}

Status VmEnv::BuildImage() {
  const std::string cmd = "bash '" ODYSSEY_SOURCE_DIR "/guest/build-image.sh' --agent '" ODYSSEY_GUEST_AGENT
                          "' --services '" ODYSSEY_SOURCE_DIR "/handlers/services' --name odyssey-test --cache-dir '" + ImageCache() + "'";
  auto out = RunCapture(cmd, state_dir_ + "/build-image.log");
  if (!out.ok()) return out.error();
  std::string dir = *out;
  while (!dir.empty() && (dir.back() == '\n' || dir.back() == ' ')) dir.pop_back();
  dir = dir.substr(dir.rfind('\n') == std::string::npos ? 0 : dir.rfind('\n') + 1);
  if (::access((dir + "/vmlinuz").c_str(), R_OK) != 0) return Error{"no vmlinuz in '" + dir + "'", ENOENT};
  image_dir_ = dir;
  return OkStatus();
}

// Links this process's catalog to the shared, verified snapshot, if there is one.
Status VmEnv::LinkSharedSnapshot() {
  auto shared = snapshot::Catalog::Open(shared_snapshot_dir_);
  if (!shared.ok()) return shared.error();
  auto found = shared->Find(kTemplate, hal::libvirt::kSnapshotBackend);
  if (!found.ok() || !found->has_value()) return Error{"no shared snapshot", ENOENT};
  auto own = snapshot::Catalog::Open(hv_->options().snapshot_dir);
  if (!own.ok()) return own.error();
  const std::string from = shared->PayloadPath(kTemplate, hal::libvirt::kSnapshotBackend);
  const std::string to = own->PayloadPath(kTemplate, hal::libvirt::kSnapshotBackend);
  for (const auto& [f, t] : {std::pair{from, to}, std::pair{snapshot::HeaderPath(from), snapshot::HeaderPath(to)}}) {
    ::unlink(t.c_str());
    if (::symlink(f.c_str(), t.c_str()) != 0) return Error::Errno("symlink", t);
  }
  return OkStatus();
}

// Copies this process's freshly prepared snapshot into the shared cache.
Status VmEnv::PublishSnapshot() {
  auto own = snapshot::Catalog::Open(hv_->options().snapshot_dir);
  auto shared = snapshot::Catalog::Open(shared_snapshot_dir_);
  if (!own.ok() || !shared.ok()) return Error{"opening catalogs", EIO};
  const std::string from = own->PayloadPath(kTemplate, hal::libvirt::kSnapshotBackend);
  const std::string to = shared->PayloadPath(kTemplate, hal::libvirt::kSnapshotBackend);
  ODYSSEY_TRY(CopyFile(from, to));
  return CopyFile(snapshot::HeaderPath(from), snapshot::HeaderPath(to));
}

Result<hal::SnapshotPtr> VmEnv::Snapshot() {
  if (snapshot_) return snapshot_;
  std::error_code ec;
  fs::create_directories(shared_snapshot_dir_, ec);
  FileLock lock(shared_snapshot_dir_ + "/.lock");
  bool linked = LinkSharedSnapshot().ok();
  auto snap = hv_->OpenOrPrepareSnapshot(tmpl_);
  if (!snap.ok()) return snap.error();
  if (!linked) (void)PublishSnapshot();
  snapshot_ = *snap;
  return snapshot_;
}

std::string VmEnv::UniqueName(const std::string& prefix) {
  return prefix + std::to_string(::getpid()) + "x" + std::to_string(++counter_);
}

void VmEnv::Cleanup() {
  if (hv_) {
    auto accel = ReadFileToString(hv_->options().snapshot_dir + "/" + kTemplate + ".accel", 16);
    const std::string shared_accel = shared_snapshot_dir_ + "/" + kTemplate + ".accel";
    std::error_code ec;
    if (accel.ok() && fs::is_directory(shared_snapshot_dir_, ec) && !fs::exists(shared_accel, ec)) {
      (void)WriteFileAtomic(shared_accel, *accel);
    }
    auto leftovers = hv_->ListLeftovers();
    if (leftovers.ok()) {
      for (const auto& l : *leftovers) (void)hv_->DestroyLeftover(l);
    }
  }
}

Result<qrexec::AgentConnectionPtr> ConnectAgent(const hal::Domain& dom) {
  qrexec::AgentConnectionOptions o;
  hal::VchanEndpoint ep = dom.vchan();
  o.domid = ep.domid;
  o.socket_dir = ep.socket_dir;
  o.domain_name = dom.name();
  o.connect_data_ports = true;  // QEMU listens on the virtio-serial ports' sockets
  return qrexec::AgentConnection::Connect(o);
}

Result<std::string> CallAgent(qrexec::AgentConnection& conn, const std::string& command,
                              const std::string& stdin_data) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return Error::Errno("pipe2", "agent call");
  UniqueFd in_r(in[0]), in_w(in[1]);
  // Small inputs only (seeds, short texts): they fit in the pipe, so write them up front.
  if (stdin_data.size() > 4096) return Error{"CallAgent: stdin of " + command + " too large", EINVAL};
  ODYSSEY_TRY(WriteAll(in_w.get(), stdin_data.data(), stdin_data.size()));
  in_w.reset();
  if (::pipe2(out, O_CLOEXEC) != 0) return Error::Errno("pipe2", "agent call");
  UniqueFd out_r(out[0]), out_w(out[1]);
  if (::pipe2(err, O_CLOEXEC) != 0) return Error::Errno("pipe2", "agent call");
  UniqueFd err_r(err[0]), err_w(err[1]);
  std::string stdout_text, stderr_text;
  auto drain = [](int fd, std::string* text) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
      if (n > 0 && text->size() < (1u << 20)) text->append(buf, static_cast<size_t>(n));
    }
  };
  std::thread t_out(drain, out_r.get(), &stdout_text), t_err(drain, err_r.get(), &stderr_text);
  qrexec::CallRequest req;
  req.cmdline = "DEFAULT:" + command;
  req.stdin_fd = in_r.get();
  req.stdout_fd = out_w.get();
  req.stderr_fd = err_w.get();
  auto code = conn.Call(req);
  out_w.reset();
  err_w.reset();
  t_out.join();
  t_err.join();
  if (!code.ok()) return code.error();
  if (*code != 0)
    return Error{"'" + command + "' exited with " + std::to_string(*code) + ": " + stderr_text, EIO};
  return stdout_text;
}

Status RefreshIdentity(qrexec::AgentConnection& conn, const std::string& hostname) {
  auto call = hal::libvirt::MakeIdentityRefresh(hostname);
  if (!call.ok()) return call.error();
  auto out = CallAgent(conn, call->command, call->seed);
  if (!out.ok()) return out.error().Wrap("refreshing the identity of " + hostname);
  return OkStatus();
}

Result<ReadyClone> PrepareReadyClone(VmEnv& env, const std::string& name_prefix) {
  auto snap = env.Snapshot();
  if (!snap.ok()) return snap.error();
  hal::DomainSpec spec;
  spec.name = env.UniqueName(name_prefix);
  spec.template_name = env.tmpl().name;
  auto dom = env.hv().CloneFromSnapshot(*snap, spec);
  if (!dom.ok()) return dom.error();
  ReadyClone c;
  c.dom.reset(static_cast<hal::libvirt::LibvirtDomain*>(dom->release()));
  auto fail = [&](const Error& e) -> Result<ReadyClone> {
    if (c.conn) c.conn->Close();
    (void)c.dom->Destroy();
    return e.Wrap("preparing clone " + spec.name);
  };
  if (Status st = c.dom->Resume(); !st.ok()) return fail(st.error());
  auto conn = ConnectAgent(*c.dom);
  if (!conn.ok()) return fail(conn.error());
  c.conn = std::move(*conn);
  if (Status st = RefreshIdentity(*c.conn, spec.name); !st.ok()) return fail(st.error());
  if (Status st = c.dom->Pause(); !st.ok()) return fail(st.error());
  return c;
}

bool QemuRunning(const std::string& name) {
  const std::string needle = "guest=" + name + ",";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = ReadFileToString(entry.path().string() + "/cmdline", 1 << 20);
    if (!cmdline.ok()) continue;
    std::string text = *cmdline;
    for (char& c : text) {
      if (c == '\0') c = ' ';
    }
    // A zombie has an empty cmdline and is gone as far as resources go.
    if (text.find(needle) != std::string::npos) return true;
  }
  return false;
}

}  // namespace odyssey::testing_vm
