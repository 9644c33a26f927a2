#include "hal/libvirt/libvirt_hypervisor.h"

#include <fcntl.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "base/io.h"
#include "hal/libvirt/domain_xml.h"
#include "hal/libvirt/save_image.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"

namespace odyssey::hal::libvirt {

// The libvirt connection, shared by the hypervisor and its domains, plus the names of the
// domains that live objects own (everything else in the connection is a leftover).
struct Connection {
  virConnectPtr conn = nullptr;
  std::string uri;
  std::string embed_root;  // empty unless qemu:///embed
  bool reap = false;       // this process is QEMU's subreaper (Options::reap_qemu)
  std::mutex mu;
  std::set<std::string> owned;
  ~Connection() {
    if (conn) virConnectClose(conn);
  }
};

namespace {

constexpr uint32_t kMsgHello = 0x300;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// libvirt prints every error to stderr by default; we report them through Result instead.
void SilentErrorHandler(void*, virErrorPtr) {}

// Embedded drivers need an event loop; one thread runs libvirt's default one for the process.
void StartEventLoopOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    virInitialize();
    virSetErrorFunc(nullptr, SilentErrorHandler);
    virEventRegisterDefaultImpl();
    std::thread([] {
      for (;;) virEventRunDefaultImpl();
    }).detach();
  });
}

Error LibvirtError(const std::string& call, const std::string& object) {
  const char* msg = virGetLastErrorMessage();
  return Error{call + "(" + object + "): " + (msg ? msg : "unknown libvirt error"), EIO};
}

bool IsValidName(const std::string& name) {
  if (name.empty() || name.size() > 48 || name[0] == '.' || name[0] == '-') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error{"creating " + dir + ": " + ec.message(), ec.value()};
  return OkStatus();
}

void RemoveTree(const std::string& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
}

std::string EmbedRootOf(const std::string& uri) {
  const std::string prefix = "qemu:///embed?root=";
  if (uri.rfind(prefix, 0) != 0) return {};
  return uri.substr(prefix.size());
}

// The embedded driver's config: run QEMU as ourselves, no SELinux/AppArmor labelling, QEMU's
// output straight to files (no virtlogd), no cgroups and no mount namespace of its own
// (each costs libvirt work on every start and we use neither).
Status WriteEmbedQemuConf(const std::string& root) {
  ODYSSEY_TRY(MakeDirs(root + "/etc"));
  std::string conf =
      "# Written by Odyssey's libvirt backend for the embedded QEMU driver.\n"
      "user = \"+" + std::to_string(::getuid()) + "\"\n"
      "group = \"+" + std::to_string(::getgid()) + "\"\n"
      "security_driver = \"none\"\n"
      "stdio_handler = \"file\"\n"
      "dynamic_ownership = 0\n"
      "remember_owner = 0\n"
      "cgroup_controllers = [ ]\n"
      "namespaces = [ ]\n";
  return WriteFileAtomic(root + "/etc/qemu.conf", conf, 0644);
}

Result<int> ConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return Error{"socket path too long: " + path, ENAMETOOLONG};
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::Errno("socket", path);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    ::close(fd);
    return Error::Errno(err, "connect", path);
  }
  return fd;
}

// "qcow2" if the file starts with qcow2's magic, else "raw".
std::string DiskFormat(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  f.read(magic, 4);
  return std::memcmp(magic, "QFI\xfb", 4) == 0 ? "qcow2" : "raw";
}

// Creates a qcow2 overlay at overlay backed by base (which is never written).
Status CreateOverlay(const std::string& base, const std::string& overlay) {
  std::string cmd = "qemu-img create -q -f qcow2 -F " + DiskFormat(base) + " -b '" + base + "' '" + overlay +
                    "' >/dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0) return Error{"qemu-img create " + overlay + " on " + base + " failed", EIO};
  return OkStatus();
}

std::string Field(const snapshot::SnapshotInfo& info, const std::string& key) {
  auto it = info.fields.find(key);
  return it == info.fields.end() ? std::string() : it->second;
}

// A prepared template: the sealed save image and the facts needed to rewrite its XML.
class LibvirtSnapshot final : public hal::Snapshot {
 public:
  LibvirtSnapshot(std::string payload, snapshot::SnapshotInfo info, SaveImage image)
      : payload_(std::move(payload)), info_(std::move(info)), image_(std::move(image)) {}
  const std::string& template_name() const override { return info_.template_name; }
  const std::string& payload() const { return payload_; }
  const snapshot::SnapshotInfo& info() const { return info_; }
  const std::string& xml() const { return image_.xml; }
  uint64_t stream_offset() const { return image_.stream_offset; }

 private:
  std::string payload_;
  snapshot::SnapshotInfo info_;
  SaveImage image_;
};

// The outcome of an incoming migration, set from libvirt's event loop thread.
struct MigrationWait {
  std::mutex mu;
  std::condition_variable cv;
  std::string status;  // "completed", "failed", "cancelled" or "QEMU exited" once it ended
};

void SetMigrationStatus(void* opaque, const std::string& status) {
  auto& wait = *static_cast<std::shared_ptr<MigrationWait>*>(opaque);
  std::lock_guard<std::mutex> lock(wait->mu);
  if (wait->status.empty()) wait->status = status;
  wait->cv.notify_all();
}

void FreeMigrationWait(void* opaque) { delete static_cast<std::shared_ptr<MigrationWait>*>(opaque); }

// QEMU 7.2 exits when an incoming migration fails; libvirt reports that as the domain stopping.
int OnLifecycleEvent(virConnectPtr, virDomainPtr, int event, int, void* opaque) {
  if (event == VIR_DOMAIN_EVENT_STOPPED || event == VIR_DOMAIN_EVENT_CRASHED) SetMigrationStatus(opaque, "QEMU exited");
  return 0;
}

void OnMigrationEvent(virConnectPtr, virDomainPtr, const char*, long long, unsigned int, const char* details,
                      void* opaque) {
  auto data = nlohmann::json::parse(details ? details : "", nullptr, false);
  if (!data.is_object() || !data.contains("status") || !data["status"].is_string()) return;
  std::string status = data["status"].get<std::string>();
  if (status == "completed" || status == "failed" || status == "cancelled") SetMigrationStatus(opaque, status);
}

// Runs one QMP command on dom's monitor through libvirt (with fd passed along, if >= 0);
// a QMP error reply is an error naming the command.
Status QmpCommand(virDomainPtr dom, const std::string& cmd, int fd, std::string* reply = nullptr) {
  char* result = nullptr;
  int rc;
  if (fd >= 0) {
    int fds[1] = {fd};
    rc = virDomainQemuMonitorCommandWithFiles(dom, cmd.c_str(), 1, fds, nullptr, nullptr, &result, 0);
  } else {
    rc = virDomainQemuMonitorCommand(dom, cmd.c_str(), &result, 0);
  }
  if (rc != 0) return LibvirtError("virDomainQemuMonitorCommand", cmd);
  std::string text = result ? result : "";
  free(result);
  auto parsed = nlohmann::json::parse(text, nullptr, false);
  if (!parsed.is_object() || parsed.contains("error")) return Error{"QMP " + cmd + " failed: " + text, EIO};
  if (reply) *reply = std::move(text);
  return OkStatus();
}

// Loads a migration stream (read from fd, positioned at its start) into dom's QEMU, which
// was started paused with -incoming defer, and waits until QEMU has loaded all of it. The
// QEMU stays paused (it was started with -S). Events (MIGRATION) tell the end, no polling.
Status LoadMigrationStream(virDomainPtr dom, int fd, const std::string& source, std::chrono::milliseconds timeout) {
  auto wait = std::make_shared<MigrationWait>();
  virConnectPtr conn = virDomainGetConnect(dom);
  int cb = virConnectDomainQemuMonitorEventRegister(conn, dom, "MIGRATION", OnMigrationEvent,
                                                    new std::shared_ptr<MigrationWait>(wait), FreeMigrationWait, 0);
  if (cb < 0) return LibvirtError("virConnectDomainQemuMonitorEventRegister", virDomainGetName(dom));
  int life = virConnectDomainEventRegisterAny(conn, dom, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                              VIR_DOMAIN_EVENT_CALLBACK(OnLifecycleEvent),
                                              new std::shared_ptr<MigrationWait>(wait), FreeMigrationWait);
  if (life < 0) {
    Error err = LibvirtError("virConnectDomainEventRegisterAny", virDomainGetName(dom));
    virConnectDomainQemuMonitorEventDeregister(conn, cb);
    return err;
  }
  Status st = QmpCommand(dom,
                         R"({"execute":"migrate-set-capabilities","arguments":{"capabilities":[)"
                         R"({"capability":"events","state":true}]}})",
                         -1);
  if (st.ok()) st = QmpCommand(dom, R"({"execute":"getfd","arguments":{"fdname":"odyssey-incoming"}})", fd);
  if (st.ok()) st = QmpCommand(dom, R"({"execute":"migrate-incoming","arguments":{"uri":"fd:odyssey-incoming"}})", -1);
  std::string status;
  if (st.ok()) {
    // The MIGRATION event normally ends the wait. Once a stall was seen where it never came
    // (a refill held the engine's libvirt lock for the whole timeout), so after each quiet
    // second QEMU is asked directly (query-migrate): a lost event costs a second, not minutes.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(wait->mu);
        wait->cv.wait_for(lock, std::chrono::seconds(1), [&] { return !wait->status.empty(); });
        status = wait->status;
      }
      if (!status.empty() || std::chrono::steady_clock::now() >= deadline) break;
      std::string reply;
      if (virDomainIsActive(dom) != 1) {
        status = "QEMU exited";
        break;
      }
      if (QmpCommand(dom, R"({"execute":"query-migrate"})", -1, &reply).ok()) {
        auto r = nlohmann::json::parse(reply, nullptr, false);
        if (r.is_object() && r.contains("return") && r["return"].is_object() &&
            r["return"].contains("status") && r["return"]["status"].is_string()) {
          std::string now = r["return"]["status"].get<std::string>();
          if (now == "completed" || now == "failed" || now == "cancelled") {
            status = now;
            break;
          }
        }
      }
    }
  }
  virConnectDomainQemuMonitorEventDeregister(conn, cb);
  virConnectDomainEventDeregisterAny(conn, life);
  if (!st.ok()) return st;
  if (status == "completed") return OkStatus();
  if (status.empty()) {
    return Error{"QEMU did not load the migration stream of " + source + " within " +
                     std::to_string(timeout.count()) + " ms",
                 ETIMEDOUT};
  }
  std::string reply;
  if (virDomainIsActive(dom) == 1) (void)QmpCommand(dom, R"({"execute":"query-migrate"})", -1, &reply);
  return Error{"QEMU could not load the migration stream of " + source + " (" + status + ")" +
                   (reply.empty() ? std::string() : ": " + reply),
               EIO};
}

}  // namespace

Result<UniqueFd> WaitForAgentHello(const std::string& socket_path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto remaining_ms = [&] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  UniqueFd fd;
  for (;;) {
    auto c = ConnectUnix(socket_path);
    if (c.ok()) {
      fd.reset(*c);
      break;
    }
    if (c.error().code != ENOENT && c.error().code != ECONNREFUSED) return c.error();
    if (remaining_ms() == 0) return c.error().Wrap("waiting for the agent's socket");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  unsigned char untrusted_hello[12];
  size_t got = 0;
  while (got < sizeof untrusted_hello) {
    pollfd p{fd.get(), POLLIN, 0};
    int n = ::poll(&p, 1, remaining_ms());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::Errno("poll", socket_path);
    if (n == 0) {
      return Error{"no HELLO from the agent on " + socket_path + " within " +
                       std::to_string(timeout.count()) + " ms",
                   ETIMEDOUT};
    }
    ssize_t r = ::read(fd.get(), untrusted_hello + got, sizeof untrusted_hello - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::Errno("read", socket_path);
    if (r == 0) {
      return Error{"agent socket " + socket_path + " closed before HELLO (QEMU exited?)", EPIPE};
    }
    got += static_cast<size_t>(r);
  }
  uint32_t type, len;
  std::memcpy(&type, untrusted_hello, 4);
  std::memcpy(&len, untrusted_hello + 4, 4);
  if (type != kMsgHello || len != 4) {
    return Error{"agent on " + socket_path + " sent message type " + std::to_string(type) +
                     " length " + std::to_string(len) + " instead of HELLO",
                 EPROTO};
  }
  return fd;
}

// ---------------------------------------------------------------------------------------
// LibvirtDomain

namespace {
// SIGKILLs QEMU process pid if it is still the QEMU of guest `name` and waits (up to 5 s)
// until it is gone. libvirt's virDomainDestroy sends SIGTERM first and checks every 200 ms
// whether QEMU has exited (measured: ~2 s per destroy); a QEMU that is already gone costs
// it one kill() that fails with ESRCH. A disposable's state is thrown away anyway.
void KillQemu(int pid, const std::string& name) {
  if (pid <= 0) return;
  // The pidfd pins the process: the checks below and the signal all refer to the same one.
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return;
  auto cmdline = ReadFileToString("/proc/" + std::to_string(pid) + "/cmdline", 1 << 16);
  if (!cmdline.ok() || cmdline->find("guest=" + name + ",") == std::string::npos) return;
  if (::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0) != 0) return;
  // Our child when this process is its subreaper (Options::reap_qemu): reap it now.
  siginfo_t info{};
  int rc;
  while ((rc = ::waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED)) != 0 && errno == EINTR) {
  }
  if (rc == 0) return;
  // Someone else's child (or reaped already): wait for the exit, then give its parent
  // a moment to reap it. Until then kill(pid, 0) succeeds and libvirt polls every 200 ms.
  pollfd p{pidfd.get(), POLLIN, 0};
  while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
  }
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::microseconds(500));
}

// Reaps QEMU `pid` (our child: this process is its subreaper) as soon as it exits, from
// libvirt's event loop, whatever ends it (destroy, crash, guest poweroff). waitid on a pidfd
// reaps exactly that process, never another child whose pid was reused.
void WatchQemuExit(int pid) {
  if (pid <= 0) return;
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return;
  int watch = virEventAddHandle(
      pidfd, VIR_EVENT_HANDLE_READABLE,
      [](int watch_id, int fd, int, void*) {
        siginfo_t info{};
        (void)::waitid(P_PIDFD, static_cast<id_t>(fd), &info, WEXITED | WNOHANG);
        virEventRemoveHandle(watch_id);
      },
      reinterpret_cast<void*>(static_cast<intptr_t>(pidfd)),
      [](void* opaque) { ::close(static_cast<int>(reinterpret_cast<intptr_t>(opaque))); });
  if (watch < 0) ::close(pidfd);
}
}  // namespace

LibvirtDomain::LibvirtDomain(std::shared_ptr<Connection> conn, void* dom, std::string name, int domid,
                             std::string socket_dir, std::string clone_dir)
    : conn_(std::move(conn)),
      dom_(dom),
      name_(std::move(name)),
      domid_(domid),
      socket_dir_(std::move(socket_dir)),
      clone_dir_(std::move(clone_dir)) {
  if (conn_->reap) WatchQemuExit(qemu_pid());
  std::lock_guard<std::mutex> lock(conn_->mu);
  conn_->owned.insert(name_);
}

LibvirtDomain::~LibvirtDomain() {
  if (dom_) virDomainFree(static_cast<virDomainPtr>(dom_));
  std::lock_guard<std::mutex> lock(conn_->mu);
  conn_->owned.erase(name_);
}

namespace {
// True when /proc/PID/stat shows a process that is dead or on its way out: a zombie or
// dead state letter, or PF_EXITING (0x4) in its flags. A QEMU killed with SIGKILL keeps
// its state letter for a while as it tears down guest memory, but PF_EXITING is set at once.
bool ProcessIsExiting(const std::string& stat) {
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return true;
  std::istringstream fields(stat.substr(paren + 2));
  std::string state;
  fields >> state;
  if (state == "Z" || state == "X" || state == "x") return true;
  // Fields after the state: ppid pgrp session tty_nr tpgid flags.
  std::string skip;
  for (int i = 0; i < 5; ++i) fields >> skip;
  unsigned long flags = 0;
  if (!(fields >> flags)) return false;
  return (flags & 0x4UL) != 0;
}
}  // namespace

DomainState LibvirtDomain::state() {
  if (destroyed_ || !dom_) return DomainState::kShutOff;
  int st = 0, reason = 0;
  if (virDomainGetState(static_cast<virDomainPtr>(dom_), &st, &reason, 0) != 0) return DomainState::kShutOff;
  if (st == VIR_DOMAIN_RUNNING || st == VIR_DOMAIN_PAUSED) {
    // libvirt learns of a QEMU that died only when its event loop gets to the monitor's
    // EOF; look at the process itself so a caller sees the crash at once.
    int pid = qemu_pid();
    if (pid > 0) {
      auto stat = ReadFileToString("/proc/" + std::to_string(pid) + "/stat", 4096);
      if (!stat.ok() || ProcessIsExiting(*stat)) return DomainState::kCrashed;
    }
  }
  switch (st) {
    case VIR_DOMAIN_RUNNING:
      return DomainState::kRunning;
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
      return DomainState::kPaused;
    case VIR_DOMAIN_CRASHED:
      return DomainState::kCrashed;
    default:
      return DomainState::kShutOff;
  }
}

Status LibvirtDomain::Resume() {
  if (destroyed_) return Error{"resuming domain " + name_ + ": already destroyed", ESRCH};
  if (virDomainResume(static_cast<virDomainPtr>(dom_)) != 0) return LibvirtError("virDomainResume", name_);
  return OkStatus();
}

Status LibvirtDomain::Pause() {
  if (destroyed_) return Error{"pausing domain " + name_ + ": already destroyed", ESRCH};
  if (virDomainSuspend(static_cast<virDomainPtr>(dom_)) != 0) return LibvirtError("virDomainSuspend", name_);
  return OkStatus();
}

Status LibvirtDomain::Destroy() {
  if (destroyed_) return OkStatus();
  auto* dom = static_cast<virDomainPtr>(dom_);
  if (virDomainIsActive(dom) == 1) {
    KillQemu(qemu_pid(), name_);
    if (virDomainDestroy(dom) != 0 && virDomainIsActive(dom) == 1) return LibvirtError("virDomainDestroy", name_);
  }
  virDomainFree(dom);
  dom_ = nullptr;
  destroyed_ = true;
  for (int port : DomainPorts()) ::unlink(HostSocketPath(socket_dir_, domid_, port).c_str());
  RemoveTree(clone_dir_);
  return OkStatus();
}

int LibvirtDomain::qemu_pid() const {
  if (conn_->embed_root.empty() || destroyed_) return -1;
  auto text = ReadFileToString(conn_->embed_root + "/run/qemu/" + name_ + ".pid", 64);
  if (!text.ok()) return -1;
  return std::atoi(text->c_str());
}

Result<ResourceStats> LibvirtDomain::Stats() {
  if (destroyed_) return Error{"stats of domain " + name_ + ": already destroyed", ESRCH};
  virDomainInfo info;
  if (virDomainGetInfo(static_cast<virDomainPtr>(dom_), &info) != 0) return LibvirtError("virDomainGetInfo", name_);
  ResourceStats stats;
  stats.cpu_time_ns = info.cpuTime;
  stats.memory_bytes = static_cast<uint64_t>(info.memory) << 10;
  int pid = qemu_pid();
  if (pid > 0) {
    std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string key;
    uint64_t kib;
    while (rollup >> key) {
      if (key == "Rss:" && rollup >> kib) stats.memory_bytes = kib << 10;
      if (key == "Pss:" && rollup >> kib) stats.memory_pss_bytes = kib << 10;
    }
    stats.pids = 1;
  }
  return stats;
}

VchanEndpoint LibvirtDomain::vchan() const {
  VchanEndpoint ep;
  ep.domid = domid_;
  ep.socket_dir = socket_dir_;
  return ep;
}

std::string LibvirtDomain::control_socket() const { return HostSocketPath(socket_dir_, domid_, kControlPort); }

// ---------------------------------------------------------------------------------------
// LibvirtHypervisor

struct LibvirtHypervisor::Boot {
  virDomainPtr dom = nullptr;
  int domid = 0;
  std::string clone_dir;
  DomainXmlParams params;
};

LibvirtHypervisor::LibvirtHypervisor(Options opts, std::shared_ptr<Connection> conn)
    : opts_(std::move(opts)),
      socket_dir_(opts_.state_dir + "/sockets"),
      clones_dir_(opts_.state_dir + "/domains"),
      conn_(std::move(conn)) {}

LibvirtHypervisor::~LibvirtHypervisor() = default;

Result<std::unique_ptr<LibvirtHypervisor>> LibvirtHypervisor::Create(Options opts) {
  if (opts.state_dir.empty()) return Error{"libvirt backend: state_dir is required", EINVAL};
  if (opts.snapshot_dir.empty()) opts.snapshot_dir = opts.state_dir + "/snapshots";
  if (opts.uri.empty() || opts.uri == "libvirt" || opts.uri == "qemu:///embed") {
    opts.uri = "qemu:///embed?root=" + opts.state_dir + "/libvirt";
  }
  if (!opts.accel.empty() && opts.accel != "kvm" && opts.accel != "tcg") {
    return Error{"libvirt backend: accelerator '" + opts.accel + "' is neither kvm nor tcg", EINVAL};
  }
  for (const std::string& d : {opts.state_dir, opts.state_dir + "/sockets", opts.state_dir + "/domains",
                               opts.snapshot_dir}) {
    ODYSSEY_TRY(MakeDirs(d));
  }
  auto conn = std::make_shared<Connection>();
  conn->uri = opts.uri;
  conn->embed_root = EmbedRootOf(opts.uri);
  if (!conn->embed_root.empty()) {
    Status st = WriteEmbedQemuConf(conn->embed_root);
    if (!st.ok()) return st.error().Wrap("configuring embedded libvirt at " + conn->embed_root);
    // QEMU is started daemonised; as its subreaper this process reaps it the moment it exits
    // (an init that reaps late would hold up every libvirt destroy, see Options::reap_qemu).
    if (opts.reap_qemu && ::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0) conn->reap = true;
  }
  StartEventLoopOnce();
  conn->conn = virConnectOpen(opts.uri.c_str());
  if (!conn->conn) return LibvirtError("virConnectOpen", opts.uri);
  return std::unique_ptr<LibvirtHypervisor>(new LibvirtHypervisor(std::move(opts), std::move(conn)));
}

std::string LibvirtHypervisor::uri() const { return opts_.uri; }

int LibvirtHypervisor::NextDomid() {
  std::lock_guard<std::mutex> lock(mu_);
  for (;;) {
    int id = next_domid_++;
    struct stat st;
    if (::stat(HostSocketPath(socket_dir_, id, kControlPort).c_str(), &st) != 0) return id;
  }
}

Result<LibvirtHypervisor::Boot> LibvirtHypervisor::BootDomain(const TemplateSpec& tmpl, const std::string& name,
                                                               const std::string& accel, unsigned flags) {
  if (tmpl.kernel.empty() || tmpl.initrd.empty()) {
    return Error{"template " + tmpl.name + ": a VM template needs kernel and initrd", EINVAL};
  }
  Boot boot;
  boot.domid = NextDomid();
  boot.clone_dir = clones_dir_ + "/" + name;
  RemoveTree(boot.clone_dir);
  ODYSSEY_TRY(MakeDirs(boot.clone_dir));
  DomainXmlParams& p = boot.params;
  p.name = name;
  p.uuid = RandomUuid();
  p.virt_type = accel == "kvm" ? "kvm" : "qemu";
  p.memory_bytes = tmpl.memory_bytes;
  p.kernel = fs::absolute(tmpl.kernel).string();
  p.initrd = fs::absolute(tmpl.initrd).string();
  p.cmdline = opts_.cmdline;
  p.console_log = boot.clone_dir + "/console.log";
  p.socket_dir = socket_dir_;
  p.domid = boot.domid;
  if (!tmpl.disk.empty()) {
    // Clones write to their own overlay; the template's disk is never modified.
    p.disk = boot.clone_dir + "/disk.qcow2";
    if (Status st = CreateOverlay(fs::absolute(tmpl.disk).string(), p.disk); !st.ok()) {
      RemoveTree(boot.clone_dir);
      return st.error();
    }
  }
  std::string xml = BuildDomainXml(p);
  boot.dom = virDomainCreateXML(conn_->conn, xml.c_str(), flags);
  if (!boot.dom) {
    Error err = LibvirtError("virDomainCreateXML", name);
    RemoveTree(boot.clone_dir);
    return err;
  }
  return boot;
}

Result<std::string> LibvirtHypervisor::ProbeAccelerator(const TemplateSpec& tmpl) {
  if (::access("/dev/kvm", R_OK | W_OK) != 0) return std::string("tcg");
  const std::string name = "odyssey-probe-" + tmpl.name;
  auto boot = BootDomain(tmpl, name, "kvm", 0);
  if (!boot.ok()) return std::string("tcg");
  LibvirtDomain dom(conn_, boot->dom, name, boot->domid, socket_dir_, boot->clone_dir);
  auto hello = WaitForAgentHello(dom.control_socket(), opts_.kvm_probe_timeout);
  (void)dom.Destroy();
  return std::string(hello.ok() ? "kvm" : "tcg");
}

Result<std::string> LibvirtHypervisor::Accelerator(const TemplateSpec& tmpl) {
  if (!opts_.accel.empty()) return opts_.accel;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = accel_cache_.find(tmpl.name);
    if (it != accel_cache_.end()) return it->second;
  }
  const std::string cache_file = opts_.snapshot_dir + "/" + tmpl.name + ".accel";
  std::string accel;
  if (auto cached = ReadFileToString(cache_file, 16); cached.ok() && (*cached == "kvm" || *cached == "tcg")) {
    accel = *cached;
  } else {
    auto probed = ProbeAccelerator(tmpl);
    if (!probed.ok()) return probed.error();
    accel = *probed;
    (void)WriteFileAtomic(cache_file, accel);
  }
  std::lock_guard<std::mutex> lock(mu_);
  accel_cache_[tmpl.name] = accel;
  return accel;
}

Result<DomainPtr> LibvirtHypervisor::StartPaused(const TemplateSpec& tmpl, const DomainSpec& spec) {
  if (!IsValidName(spec.name)) return Error{"invalid domain name '" + spec.name + "'", EINVAL};
  auto accel = Accelerator(tmpl);
  if (!accel.ok()) return accel.error().Wrap("starting domain " + spec.name);
  auto boot = BootDomain(tmpl, spec.name, *accel, VIR_DOMAIN_START_PAUSED);
  if (!boot.ok()) return boot.error().Wrap("starting domain " + spec.name);
  return DomainPtr(new LibvirtDomain(conn_, boot->dom, spec.name, boot->domid, socket_dir_, boot->clone_dir));
}

Result<SnapshotPtr> LibvirtHypervisor::PrepareSnapshot(const TemplateSpec& tmpl) {
  if (!snapshot::IsValidTemplateName(tmpl.name)) return Error{"invalid template name '" + tmpl.name + "'", EINVAL};
  auto catalog = snapshot::Catalog::Open(opts_.snapshot_dir);
  if (!catalog.ok()) return catalog.error();
  auto accel = Accelerator(tmpl);
  if (!accel.ok()) return accel.error().Wrap("preparing template " + tmpl.name);
  const std::string name = "odyssey-tmpl-" + tmpl.name;
  auto boot = BootDomain(tmpl, name, *accel, 0);
  if (!boot.ok()) return boot.error().Wrap("preparing template " + tmpl.name);
  LibvirtDomain dom(conn_, boot->dom, name, boot->domid, socket_dir_, boot->clone_dir);
  boot->dom = nullptr;  // owned by dom now
  auto fail = [&](const Error& e) {
    (void)dom.Destroy();
    return e.Wrap("preparing template " + tmpl.name);
  };
  {
    auto hello = WaitForAgentHello(dom.control_socket(), opts_.hello_timeout);
    if (!hello.ok()) return fail(hello.error());
    // Closing here makes the agent wait for the next host and greet it: every restored
    // clone then says HELLO to its own host. Give the guest a moment to see the close.
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  const std::string payload = catalog->PayloadPath(tmpl.name, kSnapshotBackend);
  const std::string tmp = payload + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());
  auto* vdom = virDomainLookupByName(conn_->conn, name.c_str());
  if (!vdom) return fail(LibvirtError("virDomainLookupByName", name));
  int rc = virDomainSaveFlags(vdom, tmp.c_str(), nullptr, VIR_DOMAIN_SAVE_PAUSED);
  Error save_err = rc != 0 ? LibvirtError("virDomainSaveFlags", name + " -> " + tmp) : Error{};
  virDomainFree(vdom);
  if (rc != 0) {
    ::unlink(tmp.c_str());
    return fail(save_err);
  }
  // The saved memory matches the template's overlay as it was at the save, so that overlay
  // (not the base disk) backs every clone's overlay; it moves into the catalog.
  std::string template_disk;
  if (!tmpl.disk.empty()) {
    template_disk = opts_.snapshot_dir + "/" + tmpl.name + ".disk.qcow2";
    if (::rename((boot->clone_dir + "/disk.qcow2").c_str(), template_disk.c_str()) != 0) {
      Error e = Error::Errno("rename", boot->clone_dir + "/disk.qcow2");
      ::unlink(tmp.c_str());
      return fail(e);
    }
  }
  (void)dom.Destroy();  // the save stopped QEMU; this removes the template's sockets and files
  if (::rename(tmp.c_str(), payload.c_str()) != 0) {
    Error e = Error::Errno("rename", tmp);
    ::unlink(tmp.c_str());
    return e.Wrap("preparing template " + tmpl.name);
  }
  snapshot::SnapshotInfo info;
  info.template_name = tmpl.name;
  info.backend = kSnapshotBackend;
  info.fields["domain_name"] = name;
  info.fields["uuid"] = boot->params.uuid;
  info.fields["socket_prefix"] = socket_dir_ + "/vchan." + std::to_string(boot->domid) + ".0.";
  info.fields["console_log"] = boot->params.console_log;
  info.fields["accel"] = *accel;
  info.fields["memory_bytes"] = std::to_string(tmpl.memory_bytes);
  info.fields["disk"] = template_disk;
  auto sealed = snapshot::Seal(payload, info);
  if (!sealed.ok()) return sealed.error().Wrap("preparing template " + tmpl.name);
  auto image = ReadSaveImage(payload);
  if (!image.ok()) return image.error().Wrap("preparing template " + tmpl.name);
  return SnapshotPtr(std::make_shared<LibvirtSnapshot>(payload, std::move(*sealed), std::move(*image)));
}

Result<SnapshotPtr> LibvirtHypervisor::OpenSnapshot(const TemplateSpec& tmpl) {
  auto catalog = snapshot::Catalog::Open(opts_.snapshot_dir);
  if (!catalog.ok()) return catalog.error();
  auto found = catalog->Find(tmpl.name, kSnapshotBackend);
  if (!found.ok()) return found.error().Wrap("opening snapshot of template " + tmpl.name);
  if (!found->has_value()) return SnapshotPtr();
  const std::string payload = catalog->PayloadPath(tmpl.name, kSnapshotBackend);
  auto image = ReadSaveImage(payload);
  if (!image.ok()) {
    (void)snapshot::Remove(payload);
    return image.error().Wrap("snapshot of template " + tmpl.name + " is unreadable; removed it, prepare it again");
  }
  return SnapshotPtr(std::make_shared<LibvirtSnapshot>(payload, std::move(**found), std::move(*image)));
}

Result<SnapshotPtr> LibvirtHypervisor::OpenOrPrepareSnapshot(const TemplateSpec& tmpl, std::string* note) {
  auto opened = OpenSnapshot(tmpl);
  if (opened.ok() && *opened) return opened;
  if (!opened.ok() && note) *note = opened.error().message;
  return PrepareSnapshot(tmpl);
}

Result<DomainPtr> LibvirtHypervisor::CloneFromSnapshot(const SnapshotPtr& snap, const DomainSpec& spec) {
  auto* s = dynamic_cast<const LibvirtSnapshot*>(snap.get());
  if (!s) return Error{"cloning " + spec.name + ": snapshot is not a libvirt snapshot", EINVAL};
  if (!IsValidName(spec.name)) return Error{"invalid domain name '" + spec.name + "'", EINVAL};
  const auto& info = s->info();
  const int domid = NextDomid();
  const std::string clone_dir = clones_dir_ + "/" + spec.name;
  RemoveTree(clone_dir);
  ODYSSEY_TRY(MakeDirs(clone_dir));

  // Per-clone XML: the saved XML with the template's identity and paths replaced. Everything
  // else must stay as saved (libvirt checks the ABI against the image).
  std::string xml = s->xml();
  bool ok = ReplaceAll(&xml, "<name>" + XmlEscape(Field(info, "domain_name")) + "</name>",
                       "<name>" + XmlEscape(spec.name) + "</name>") == 1;
  ok = ok && ReplaceAll(&xml, "<uuid>" + Field(info, "uuid") + "</uuid>", "<uuid>" + RandomUuid() + "</uuid>") == 1;
  ok = ok && ReplaceAll(&xml, XmlEscape(Field(info, "socket_prefix")),
                        XmlEscape(socket_dir_ + "/vchan." + std::to_string(domid) + ".0.")) ==
                 DomainPorts().size();
  ReplaceAll(&xml, XmlEscape(Field(info, "console_log")), XmlEscape(clone_dir + "/console.log"));
  if (!ok) {
    RemoveTree(clone_dir);
    return Error{"cloning " + spec.name + ": snapshot XML of template " + s->template_name() +
                     " does not have the recorded name, uuid or sockets",
                 EINVAL};
  }
  if (const std::string disk = Field(info, "disk"); !disk.empty()) {
    const std::string overlay = clone_dir + "/disk.qcow2";
    if (Status st = CreateOverlay(disk, overlay); !st.ok()) {
      RemoveTree(clone_dir);
      return st.error().Wrap("cloning " + spec.name);
    }
    // The saved XML names the template domain's overlay; point it at the clone's.
    const std::string tmpl_overlay = fs::path(Field(info, "console_log")).parent_path().string() + "/disk.qcow2";
    ReplaceAll(&xml, XmlEscape(tmpl_overlay), XmlEscape(overlay));
  }
  // libvirt's restore API keeps the UUID the image was saved with, and two domains cannot
  // share one. So the clone is started from the saved XML (its own name, UUID, paths),
  // paused, with QEMU waiting for a migration stream (-incoming defer), and QEMU then reads
  // the template's stream straight from the sealed file: no per-clone copy.
  UniqueFd stream(::open(s->payload().c_str(), O_RDONLY | O_CLOEXEC));
  if (!stream) {
    RemoveTree(clone_dir);
    return Error::Errno("open", s->payload()).Wrap("cloning " + spec.name);
  }
  if (::lseek(stream.get(), static_cast<off_t>(s->stream_offset()), SEEK_SET) < 0) {
    RemoveTree(clone_dir);
    return Error::Errno("lseek", s->payload()).Wrap("cloning " + spec.name);
  }
  xml = WithQemuExtras(std::move(xml), /*incoming_defer=*/true);
  virDomainPtr dom = virDomainCreateXML(conn_->conn, xml.c_str(), VIR_DOMAIN_START_PAUSED);
  if (!dom) {
    Error err = LibvirtError("virDomainCreateXML", spec.name);
    for (int port : DomainPorts()) ::unlink(HostSocketPath(socket_dir_, domid, port).c_str());
    RemoveTree(clone_dir);
    return err.Wrap("cloning " + spec.name + " from template " + s->template_name());
  }
  auto clone = std::make_unique<LibvirtDomain>(conn_, dom, spec.name, domid, socket_dir_, clone_dir);
  if (Status st = LoadMigrationStream(dom, stream.get(), s->payload(), opts_.hello_timeout); !st.ok()) {
    (void)clone->Destroy();
    return st.error().Wrap("cloning " + spec.name + " from template " + s->template_name());
  }
  return DomainPtr(std::move(clone));
}

Result<std::vector<Leftover>> LibvirtHypervisor::ListLeftovers() {
  std::vector<Leftover> out;
  std::set<std::string> owned;
  {
    std::lock_guard<std::mutex> lock(conn_->mu);
    owned = conn_->owned;
  }
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(conn_->conn, &doms, 0);
  if (n < 0) return LibvirtError("virConnectListAllDomains", opts_.uri);
  std::set<std::string> live;
  for (int i = 0; i < n; ++i) {
    std::string name = virDomainGetName(doms[i]);
    live.insert(name);
    if (!owned.count(name)) out.push_back(Leftover{"domain", name});
    virDomainFree(doms[i]);
  }
  free(doms);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(clones_dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (!owned.count(name) && !live.count(name)) out.push_back(Leftover{"disk", entry.path().string()});
  }
  return out;
}

Status LibvirtHypervisor::DestroyLeftover(const Leftover& leftover) {
  if (leftover.kind == "domain") {
    virDomainPtr dom = virDomainLookupByName(conn_->conn, leftover.id.c_str());
    if (!dom) return OkStatus();
    int rc = virDomainDestroy(dom);
    Error err = rc != 0 ? LibvirtError("virDomainDestroy", leftover.id) : Error{};
    virDomainFree(dom);
    RemoveTree(clones_dir_ + "/" + leftover.id);
    if (rc != 0) return err;
    return OkStatus();
  }
  if (leftover.kind == "disk") {
    if (fs::path(leftover.id).parent_path() != fs::path(clones_dir_)) {
      return Error{"leftover " + leftover.id + " is not under " + clones_dir_, EINVAL};
    }
    RemoveTree(leftover.id);
    return OkStatus();
  }
  return Error{"unknown leftover kind " + leftover.kind, EINVAL};
}

Result<HypervisorPtr> OpenLibvirt(const std::string& uri, const std::string& state_dir) {
  Options opts;
  opts.uri = uri;
  opts.state_dir = state_dir;
  auto hv = LibvirtHypervisor::Create(std::move(opts));
  if (!hv.ok()) return hv.error();
  return HypervisorPtr(std::move(*hv));
}

}  // namespace odyssey::hal::libvirt
