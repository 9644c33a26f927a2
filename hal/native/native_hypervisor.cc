#include "hal/native/native_hypervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>

#include "base/unique_fd.h"
#include "hal/native/cgroup.h"
#include "hal/native/protocol.h"

#ifndef ODYSSEY_NATIVE_ZYGOTE_PATH
#define ODYSSEY_NATIVE_ZYGOTE_PATH ""
#endif

namespace odyssey::hal::native {
namespace {

using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

constexpr int kAgentPort = 512;
constexpr const char* kZygoteLeafMark = "@zygote-";
constexpr const char* kPinLeafMark = "@pin-";

// An empty freezer group kept FROZEN while the backend is open. The kernel switches its
// freezer code paths on (a static key: code patching with IPIs to every CPU, 0.1-90 ms
// here) when the first group starts freezing and off when the last one thaws; with this
// group always frozen, pausing and resuming a domain never flips it.
class FreezerPin {
 public:
  FreezerPin() = default;
  FreezerPin(const FreezerPin&) = delete;
  FreezerPin& operator=(const FreezerPin&) = delete;
  ~FreezerPin() {
    if (!dir_.empty()) ::rmdir(dir_.c_str());
  }
  // Best effort: without it everything works, only freeze/thaw cost more.
  void Create(const std::string& freezer_parent, const std::string& leaf) {
    std::string dir = freezer_parent + "/" + leaf;
    if (::mkdir(dir.c_str(), 0755) != 0) return;
    UniqueFd fd(::open((dir + "/freezer.state").c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd || ::write(fd.get(), "FROZEN", 6) != 6) {
      ::rmdir(dir.c_str());
      return;
    }
    dir_ = std::move(dir);
    leaf_ = leaf;
  }
  const std::string& leaf() const { return leaf_; }

 private:
  std::string dir_, leaf_;
};

bool ValidName(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

Status MakeDir(const std::string& path, mode_t mode, bool must_be_new = false) {
  if (::mkdir(path.c_str(), mode) != 0) {
    if (errno != EEXIST || must_be_new) return Error::Errno("mkdir", path);
  }
  if (::chmod(path.c_str(), mode) != 0) return Error::Errno("chmod", path);
  return OkStatus();
}

// Removes a directory tree we made (never follows symlinks or crosses mounts).
Status RemoveTree(const std::string& path) {
  if (::access(path.c_str(), F_OK) != 0) return OkStatus();
  int rc = ::nftw(
      path.c_str(),
      [](const char* p, const struct stat*, int type, struct FTW*) -> int {
        int r = (type == FTW_DP) ? ::rmdir(p) : ::unlink(p);
        return (r == 0 || errno == ENOENT) ? 0 : -1;
      },
      16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
  if (rc != 0) return Error::Errno("remove", path);
  return OkStatus();
}

std::vector<std::string> ListDir(const std::string& path) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(path.c_str())) {
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

bool Readable(int fd) {
  struct pollfd p {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

// Live objects of one NativeHypervisor (shared with its snapshots and domains, which may
// outlive it): what ListLeftovers must not report.
struct Registry {
  std::mutex mu;
  std::set<std::string> domains;
  std::set<std::string> zygotes;
  std::atomic<int> next_domid{1};
  std::atomic<int> next_zygote{1};
};

// Everything a snapshot or domain needs from its hypervisor.
struct Context {
  std::string state_dir;  // <state_dir>/native
  std::string prefix;     // cgroup leaf prefix
  NativeOptions options;
  CgroupTree cgroups;
  std::shared_ptr<Registry> registry;
  // Idmap for the vchan directory (host root -> the agent's uid); invalid: plain bind.
  UniqueFd vchan_idmap;
  FreezerPin freezer_pin;
  std::string domains_dir() const { return state_dir + "/domains"; }
  std::string zygotes_dir() const { return state_dir + "/zygotes"; }
};

Status SendClone(int control, const proto::CloneRequest& req, const std::vector<int>& fds) {
  std::vector<char> buf(CMSG_SPACE(sizeof(int) * fds.size()));
  struct iovec iov {const_cast<proto::CloneRequest*>(&req), sizeof(req)};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = buf.data();
  msg.msg_controllen = buf.size();
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  if (::sendmsg(control, &msg, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof(req))) {
    return Error::Errno("send clone request", "zygote");
  }
  return OkStatus();
}

Result<UniqueFd> ReceiveReply(int control, proto::CloneReply* reply) {
  char buf[CMSG_SPACE(sizeof(int))];
  struct iovec iov {reply, sizeof(*reply)};
  struct msghdr msg {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = buf;
  msg.msg_controllen = sizeof(buf);
  ssize_t n;
  do {
    n = ::recvmsg(control, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Error::Errno("receive clone reply", "zygote");
  if (n == 0) return Error{"zygote exited", EPIPE};
  UniqueFd pidfd;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
      pidfd.reset(fd);
    }
  }
  if (n != sizeof(*reply) || reply->magic != proto::kMagic) return Error{"bad clone reply", EPROTO};
  reply->message[sizeof(reply->message) - 1] = '\0';
  if (reply->error) return Error{reply->message, reply->error};
  if (!pidfd) return Error{"clone reply without pidfd", EPROTO};
  return pidfd;
}

// Reads the clone's status pipe to EOF: empty means the agent was exec'd.
Result<std::string> ReadStatus(int fd, std::chrono::milliseconds timeout) {
  std::string text;
  auto deadline = Clock::now() + timeout;
  char buf[512];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    struct pollfd p {fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Error{"timed out waiting for set-up to finish", ETIMEDOUT};
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return text;
    if (text.size() < 4096) text.append(buf, static_cast<size_t>(n));
  }
}

// Waits until path exists, the process behind pidfd dies, or timeout.
Status WaitForSocket(const std::string& dir, const std::string& path, int pidfd,
                     std::chrono::milliseconds timeout) {
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) return Error::Errno("inotify_init1", dir);
  if (::inotify_add_watch(in.get(), dir.c_str(), IN_CREATE | IN_MOVED_TO) < 0) {
    return Error::Errno("inotify_add_watch", dir);
  }
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (::access(path.c_str(), F_OK) == 0) return OkStatus();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return Error{"agent did not listen on " + path + " in time", ETIMEDOUT};
    struct pollfd p[2] = {{in.get(), POLLIN, 0}, {pidfd, POLLIN, 0}};
    int r = ::poll(p, 2, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) return Error::Errno("poll", dir);
    if (p[1].revents) {
      if (::access(path.c_str(), F_OK) == 0) return OkStatus();
      return Error{"domain exited before its agent listened on " + path, ECHILD};
    }
    char drain[4096];
    while (::read(in.get(), drain, sizeof(drain)) > 0) {
    }
  }
}

class NativeSnapshot final : public Snapshot {
 public:
  NativeSnapshot(std::shared_ptr<const Context> ctx, std::string tmpl, int id, pid_t pid,
                 UniqueFd control, Cgroup cgroup)
      : ctx_(std::move(ctx)), template_name_(std::move(tmpl)), id_(id), pid_(pid),
        control_(std::move(control)), cgroup_(std::move(cgroup)) {}
  ~NativeSnapshot() override {
    control_.reset();  // the zygote exits on EOF; its clones keep running
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    (void)cgroup_.KillAll(std::chrono::seconds(2));
    (void)cgroup_.Remove();
    (void)RemoveTree(staging());
    std::lock_guard<std::mutex> lock(ctx_->registry->mu);
    ctx_->registry->zygotes.erase(std::to_string(id_));
  }
  const std::string& template_name() const override { return template_name_; }
  std::string staging() const { return ctx_->zygotes_dir() + "/" + std::to_string(id_); }

  // One request/reply with the zygote (serialized: the socket carries one at a time).
  Result<UniqueFd> Clone(const proto::CloneRequest& req, const std::vector<int>& fds,
                         pid_t* pid) {
    std::lock_guard<std::mutex> lock(mu_);
    ODYSSEY_TRY(SendClone(control_.get(), req, fds));
    proto::CloneReply reply{};
    auto pidfd = ReceiveReply(control_.get(), &reply);
    if (pidfd.ok()) *pid = reply.pid;
    return pidfd;
  }

 private:
  std::shared_ptr<const Context> ctx_;
  std::string template_name_;
  int id_;
  pid_t pid_;
  std::mutex mu_;
  UniqueFd control_;
  Cgroup cgroup_;
};

class NativeDomain final : public Domain {
 public:
  NativeDomain(std::shared_ptr<const Context> ctx, std::shared_ptr<NativeSnapshot> snap,
               std::string name, int domid, Cgroup cgroup)
      : ctx_(std::move(ctx)), snap_(std::move(snap)), name_(std::move(name)), domid_(domid),
        cgroup_(std::move(cgroup)) {}
  ~NativeDomain() override {
    std::lock_guard<std::mutex> lock(ctx_->registry->mu);
    ctx_->registry->domains.erase(name_);
  }

  const std::string& name() const override { return name_; }
  std::string dir() const { return ctx_->domains_dir() + "/" + name_; }
  std::string vchan_dir() const { return dir() + "/vchan"; }
  VchanEndpoint vchan() const override { return VchanEndpoint{domid_, vchan_dir()}; }
  void set_pidfd(UniqueFd fd) { pidfd_ = std::move(fd); }
  int pidfd() const { return pidfd_.get(); }

  DomainState state() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (destroyed_ || !pidfd_ || Readable(pidfd_.get())) return DomainState::kShutOff;
    auto s = cgroup_.FreezerState();
    if (!s.ok()) return DomainState::kCrashed;
    return *s == "THAWED" ? DomainState::kRunning : DomainState::kPaused;
  }

  Status Resume() override {
    std::lock_guard<std::mutex> lock(mu_);
    ODYSSEY_TRY(CheckAlive("resuming"));
    if (auto s = cgroup_.Thaw(); !s.ok()) return s.error().Wrap("resuming domain " + name_);
    return OkStatus();
  }

  Status Pause() override {
    std::lock_guard<std::mutex> lock(mu_);
    ODYSSEY_TRY(CheckAlive("pausing"));
    // No waiting for FROZEN: every task stops before it next runs user code, and a
    // Resume() right after (the engine's HELLO) cancels a freeze still in progress.
    if (auto s = cgroup_.RequestFreeze(); !s.ok()) return s.error().Wrap("pausing domain " + name_);
    return OkStatus();
  }

  Status Destroy() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (destroyed_) return OkStatus();
    if (pidfd_) {
      // Killing the pid namespace's init kills the whole domain; a frozen init only dies
      // once thawed. The pidfd turns readable after the namespace has been torn down.
      ::syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
      (void)cgroup_.Thaw();
      struct pollfd p {pidfd_.get(), POLLIN, 0};
      ::poll(&p, 1, 10000);
    }
    // Anything still in the group (a partial clone, a task that got out of the pid
    // namespace's reach): killed the slow way; returns at once when the group is empty.
    Status status = cgroup_.KillAll();
    if (status.ok()) status = cgroup_.Remove();
    if (status.ok()) status = RemoveTree(dir());
    if (!status.ok()) return status.error().Wrap("destroying domain " + name_);
    pidfd_.reset();
    destroyed_ = true;
    return OkStatus();
  }

  Result<ResourceStats> Stats() override {
    std::lock_guard<std::mutex> lock(mu_);
    ODYSSEY_TRY(CheckAlive("reading stats of"));
    return cgroup_.Stats();
  }

 private:
  Status CheckAlive(const char* what) const {
    if (destroyed_) return Error{std::string(what) + " domain " + name_ + ": destroyed", ESRCH};
    return OkStatus();
  }

  std::shared_ptr<const Context> ctx_;
  std::shared_ptr<NativeSnapshot> snap_;  // keeps the zygote (the clone's parent) alive
  std::string name_;
  int domid_;
  Cgroup cgroup_;
  std::mutex mu_;
  UniqueFd pidfd_;
  bool destroyed_ = false;
};

class NativeHypervisor final : public Hypervisor {
 public:
  explicit NativeHypervisor(std::shared_ptr<const Context> ctx) : ctx_(std::move(ctx)) {}

  std::string uri() const override { return "native:///"; }

  Result<SnapshotPtr> PrepareSnapshot(const TemplateSpec& tmpl) override {
    auto snap = StartZygote(tmpl);
    if (!snap.ok()) return snap.error().Wrap("preparing template " + tmpl.name);
    return SnapshotPtr(std::move(*snap));
  }

  Result<DomainPtr> CloneFromSnapshot(const SnapshotPtr& snap, const DomainSpec& spec) override {
    auto native = std::dynamic_pointer_cast<NativeSnapshot>(snap);
    if (!native) return Error{"cloning domain " + spec.name + ": not a native snapshot", EINVAL};
    auto domain = MakeClone(native, spec);
    if (!domain.ok()) {
      return domain.error().Wrap("cloning domain " + spec.name + " from template " +
                                 snap->template_name());
    }
    return DomainPtr(std::move(*domain));
  }

  Result<DomainPtr> StartPaused(const TemplateSpec& tmpl, const DomainSpec& spec) override {
    auto snap = PrepareSnapshot(tmpl);
    if (!snap.ok()) return snap.error();
    return CloneFromSnapshot(*snap, spec);
  }

  Result<std::vector<Leftover>> ListLeftovers() override {
    std::vector<Leftover> out;
    std::lock_guard<std::mutex> lock(ctx_->registry->mu);
    std::set<std::string> cgroups;
    for (auto& parent : ctx_->cgroups.ParentDirs()) {
      for (auto& leaf : ListDir(parent)) {
        if (leaf.compare(0, ctx_->prefix.size(), ctx_->prefix) != 0) continue;
        std::string rest = leaf.substr(ctx_->prefix.size());
        bool zygote = rest.compare(0, std::strlen(kZygoteLeafMark), kZygoteLeafMark) == 0;
        bool pin = rest.compare(0, std::strlen(kPinLeafMark), kPinLeafMark) == 0;
        bool live = zygote ? ctx_->registry->zygotes.count(rest.substr(std::strlen(kZygoteLeafMark)))
                    : pin  ? leaf == ctx_->freezer_pin.leaf()
                           : ctx_->registry->domains.count(rest);
        if (!live) cgroups.insert(leaf);
      }
    }
    for (auto& leaf : cgroups) out.push_back({"cgroup", leaf});
    for (auto& name : ListDir(ctx_->domains_dir())) {
      if (!ctx_->registry->domains.count(name)) out.push_back({"domain", name});
    }
    for (auto& id : ListDir(ctx_->zygotes_dir())) {
      if (!ctx_->registry->zygotes.count(id)) out.push_back({"disk", "zygotes/" + id});
    }
    return out;
  }

  Status DestroyLeftover(const Leftover& leftover) override {
    const std::string& id = leftover.id;
    auto refuse = [&](const char* why) {
      return Error{"destroying leftover " + leftover.kind + " '" + id + "': " + why, EINVAL};
    };
    if (id.empty() || id.find("..") != std::string::npos) return refuse("bad id");
    if (leftover.kind == "cgroup") {
      if (id.compare(0, ctx_->prefix.size(), ctx_->prefix) != 0 || id.find('/') != std::string::npos) {
        return refuse("not one of ours");
      }
      Cgroup cg = Cgroup::Attach(ctx_->cgroups, id);
      if (auto s = cg.KillAll(); !s.ok()) return s.error().Wrap("destroying leftover cgroup " + id);
      if (auto s = cg.Remove(); !s.ok()) return s.error().Wrap("destroying leftover cgroup " + id);
      return OkStatus();
    }
    if (leftover.kind == "domain") {
      if (!ValidName(id)) return refuse("bad domain name");
      return RemoveTree(ctx_->domains_dir() + "/" + id);
    }
    if (leftover.kind == "disk" && id.compare(0, 8, "zygotes/") == 0 &&
        id.find('/', 8) == std::string::npos) {
      return RemoveTree(ctx_->state_dir + "/" + id);
    }
    return refuse("unknown kind");
  }

 private:
  Result<std::shared_ptr<NativeSnapshot>> StartZygote(const TemplateSpec& tmpl) {
    if (tmpl.kind != "native") return Error{"template kind '" + tmpl.kind + "' is not native", EINVAL};
    char agent[PATH_MAX];
    if (tmpl.agent_path.empty() || !::realpath(tmpl.agent_path.c_str(), agent)) {
      return Error::Errno("agent", tmpl.agent_path.empty() ? "(agent_path not set)" : tmpl.agent_path);
    }
    std::string root;
    if (!tmpl.root_dir.empty()) {
      char buf[PATH_MAX];
      if (!::realpath(tmpl.root_dir.c_str(), buf)) return Error::Errno("template root", tmpl.root_dir);
      root = buf;
    }
    const int id = ctx_->registry->next_zygote++;
    const std::string ids = std::to_string(id);
    {
      std::lock_guard<std::mutex> lock(ctx_->registry->mu);
      ctx_->registry->zygotes.insert(ids);
    }
    auto unregister = [&] {
      std::lock_guard<std::mutex> lock(ctx_->registry->mu);
      ctx_->registry->zygotes.erase(ids);
    };
    const std::string staging = ctx_->zygotes_dir() + "/" + ids;
    auto cleanup_error = [&](const Error& e, const Cgroup* cg) -> Error {
      if (cg) {
        (void)cg->KillAll(std::chrono::seconds(2));
        (void)cg->Remove();
      }
      (void)RemoveTree(staging);
      unregister();
      return e;
    };
    if (auto s = MakeDir(staging, 0700, true); !s.ok()) return cleanup_error(s.error(), nullptr);
    if (::chown(staging.c_str(), ctx_->options.ids.host_base, ctx_->options.ids.host_base) != 0) {
      return cleanup_error(Error::Errno("chown", staging), nullptr);
    }
    auto cg = Cgroup::Create(ctx_->cgroups, ctx_->prefix + kZygoteLeafMark + ids, {});
    if (!cg.ok()) return cleanup_error(cg.error(), nullptr);

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return cleanup_error(Error::Errno("socketpair", "zygote control"), &*cg);
    }
    UniqueFd ours(sv[0]), theirs(sv[1]);
    UserNsChild child;
    child.path = ZygotePath();
    child.argv = {child.path, "--agent=" + std::string(agent), "--staging=" + staging,
                  "--uid=" + std::to_string(ctx_->options.inner_uid),
                  "--gid=" + std::to_string(ctx_->options.inner_gid)};
    if (!root.empty()) child.argv.push_back("--template-dir=" + root);
    if (!tmpl.services_dir.empty()) {
      std::string services;  // each folder of the colon list, resolved, in lookup order
      for (size_t at = 0; at <= tmpl.services_dir.size();) {
        size_t colon = std::min(tmpl.services_dir.find(':', at), tmpl.services_dir.size());
        const std::string dir = tmpl.services_dir.substr(at, colon - at);
        at = colon + 1;
        char resolved[PATH_MAX];
        if (dir.empty()) continue;
        if (!::realpath(dir.c_str(), resolved)) {
          return cleanup_error(Error::Errno("services dir", dir), &*cg);
        }
        services += (services.empty() ? "" : ":") + std::string(resolved);
      }
      child.argv.push_back("--services=" + services);
    }
    if (!tmpl.gui_agent_path.empty()) {
      char gui_agent[PATH_MAX];
      if (!::realpath(tmpl.gui_agent_path.c_str(), gui_agent)) {
        return cleanup_error(Error::Errno("gui agent", tmpl.gui_agent_path), &*cg);
      }
      child.argv.push_back("--gui-agent=" + std::string(gui_agent));
    }
    child.env = {"PATH=/usr/bin:/bin"};
    child.control_fd = theirs.get();
    child.ids = ctx_->options.ids;
    const Cgroup& zcg = *cg;
    child.before_exec = [&zcg](pid_t pid) { return zcg.AddPid(pid); };
    auto pid = SpawnInUserNamespace(child);
    if (!pid.ok()) return cleanup_error(pid.error(), &*cg);
    theirs.reset();
    auto fail_running = [&](const Error& e) {
      ::kill(*pid, SIGKILL);
      ::waitpid(*pid, nullptr, 0);
      return cleanup_error(e, &*cg);
    };
    proto::ReadyMsg ready{};
    struct pollfd p {ours.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(ctx_->options.agent_timeout.count())) != 1) {
      return fail_running(Error{"zygote did not report ready", ETIMEDOUT});
    }
    ssize_t n = ::recv(ours.get(), &ready, sizeof(ready), 0);
    if (n != sizeof(ready) || ready.magic != proto::kMagic) {
      return fail_running(Error{"zygote " + child.path + " exited during set-up (is it o+rx?)", EPROTO});
    }
    ready.message[sizeof(ready.message) - 1] = '\0';
    if (ready.error) return fail_running(Error{std::string("zygote: ") + ready.message, ready.error});
    return std::make_shared<NativeSnapshot>(ctx_, tmpl.name, id, *pid, std::move(ours), std::move(*cg));
  }

  std::string ZygotePath() const {
    if (!ctx_->options.zygote_path.empty()) return ctx_->options.zygote_path;
    if (const char* env = std::getenv("ODYSSEY_NATIVE_ZYGOTE"); env && *env) return env;
    return ODYSSEY_NATIVE_ZYGOTE_PATH;
  }

  Result<std::unique_ptr<NativeDomain>> MakeClone(const std::shared_ptr<NativeSnapshot>& snap,
                                                  const DomainSpec& spec) {
    if (!ValidName(spec.name)) {
      return Error{"bad domain name (want [A-Za-z0-9][A-Za-z0-9_.-]{0,62})", EINVAL};
    }
    if (spec.network) return Error{"network access is not supported by the native backend yet", ENOTSUP};
    {
      std::lock_guard<std::mutex> lock(ctx_->registry->mu);
      if (!ctx_->registry->domains.insert(spec.name).second) return Error{"domain exists", EEXIST};
    }
    const int domid = ctx_->registry->next_domid++;
    if (::access((ctx_->domains_dir() + "/" + spec.name).c_str(), F_OK) == 0) {
      std::lock_guard<std::mutex> lock(ctx_->registry->mu);
      ctx_->registry->domains.erase(spec.name);
      return Error{"a leftover of an earlier domain with this name exists (ListLeftovers)", EEXIST};
    }
    auto cg = Cgroup::Create(ctx_->cgroups, ctx_->prefix + spec.name,
                             {spec.memory_limit_bytes, spec.pids_limit, spec.cpu_weight});
    if (!cg.ok()) {
      std::lock_guard<std::mutex> lock(ctx_->registry->mu);
      ctx_->registry->domains.erase(spec.name);
      return cg.error();
    }
    // From here on the domain object owns the resources; Destroy() undoes a partial clone.
    auto domain = std::make_unique<NativeDomain>(ctx_, snap, spec.name, domid, *cg);
    auto fail = [&](const Error& e) -> Error {
      (void)domain->Destroy();
      return e;
    };
    if (auto s = MakeDir(domain->dir(), 0711, true); !s.ok()) return fail(s.error());
    if (auto s = MakeDir(domain->vchan_dir(), 0700); !s.ok()) return fail(s.error());
    // Both ends create sockets in the vchan directory. With an idmapped mount the agent
    // sees the root-owned directory (and the host's sockets) as its own; without one, the
    // directory belongs to the agent's host uid and host-made sockets need mode o+w.
    UniqueFd vchan_mount;
    if (ctx_->vchan_idmap) {
      auto m = IdmappedBindMount(domain->vchan_dir(), ctx_->vchan_idmap.get());
      if (!m.ok()) return fail(m.error());
      vchan_mount = std::move(*m);
    } else {
      const uint32_t base = ctx_->options.ids.host_base;
      if (::chown(domain->vchan_dir().c_str(), base + ctx_->options.inner_uid,
                  base + ctx_->options.inner_gid) != 0) {
        return fail(Error::Errno("chown", domain->vchan_dir()));
      }
    }
    auto procs = cg->OpenProcsFds();
    if (!procs.ok()) return fail(procs.error());
    int status_pipe[2];
    if (::pipe2(status_pipe, O_CLOEXEC) != 0) return fail(Error::Errno("pipe2", "status"));
    UniqueFd status_read(status_pipe[0]), status_write(status_pipe[1]);

    proto::CloneRequest req{};
    req.magic = proto::kMagic;
    req.version = proto::kVersion;
    std::snprintf(req.name, sizeof(req.name), "%s", spec.name.c_str());
    if (domain->vchan_dir().size() >= sizeof(req.vchan_dir)) {
      return fail(Error{"state dir path too long", ENAMETOOLONG});
    }
    std::snprintf(req.vchan_dir, sizeof(req.vchan_dir), "%s", domain->vchan_dir().c_str());
    req.domid = domid;
    req.cgroup_fd_count = static_cast<uint32_t>(procs->size());
    req.tmpfs_bytes = spec.memory_limit_bytes;
    req.flags = kSanitized ? proto::kFlagNoLeakCheck : 0;
    std::vector<int> fds = {status_write.get()};
    for (auto& fd : *procs) fds.push_back(fd.get());
    if (vchan_mount) {
      req.flags |= proto::kFlagVchanMountFd;
      fds.push_back(vchan_mount.get());
    }

    pid_t pid = -1;
    auto pidfd = snap->Clone(req, fds, &pid);
    status_write.reset();
    procs->clear();
    vchan_mount.reset();
    if (!pidfd.ok()) return fail(pidfd.error());
    domain->set_pidfd(std::move(*pidfd));
    auto status = ReadStatus(status_read.get(), ctx_->options.agent_timeout);
    if (!status.ok()) return fail(status.error());
    if (!status->empty()) return fail(Error{*status, EIO});
    if (Readable(domain->pidfd())) return fail(Error{"domain init exited during set-up", ECHILD});
    if (ctx_->options.wait_for_agent) {
      auto ep = domain->vchan();
      std::string sock = ep.socket_dir + "/vchan." + std::to_string(domid) + ".0." +
                         std::to_string(kAgentPort) + ".sock";
      if (auto s = WaitForSocket(ep.socket_dir, sock, domain->pidfd(), ctx_->options.agent_timeout);
          !s.ok()) {
        return fail(s.error());
      }
    }
    if (auto s = domain->Pause(); !s.ok()) return fail(s.error());
    return domain;
  }

  std::shared_ptr<const Context> ctx_;
};

}  // namespace

std::string CgroupPrefix(const std::string& state_dir) {
  char buf[PATH_MAX];
  std::string path = ::realpath(state_dir.c_str(), buf) ? buf : state_dir;
  // FNV-1a: stable across runs, which std::hash does not promise.
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : path) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return std::string("odyssey-") + std::string(hex, 10) + "-";
}

Result<HypervisorPtr> OpenNative(const std::string& state_dir, const NativeOptions& options) {
  auto wrap = [&](const Error& e) { return e.Wrap("opening native backend in " + state_dir); };
  if (state_dir.empty()) return wrap(Error{"state_dir is empty", EINVAL});
  if (::geteuid() != 0) return wrap(Error{"the native backend needs root (user namespaces with a mapped range, cgroups)", EPERM});
  if (auto s = MakeDir(state_dir, 0711); !s.ok()) return wrap(s.error());
  auto ctx = std::make_shared<Context>();
  char buf[PATH_MAX];
  if (!::realpath(state_dir.c_str(), buf)) return wrap(Error::Errno("realpath", state_dir));
  ctx->state_dir = std::string(buf) + "/native";
  ctx->prefix = CgroupPrefix(state_dir);
  ctx->options = options;
  ctx->registry = std::make_shared<Registry>();
  for (auto dir : {ctx->state_dir, ctx->domains_dir(), ctx->zygotes_dir()}) {
    if (auto s = MakeDir(dir, 0711); !s.ok()) return wrap(s.error());
  }
  auto tree = CgroupTree::Discover(options.cgroup_parent);
  if (!tree.ok()) return wrap(tree.error());
  ctx->cgroups = *tree;
  static std::atomic<int> pins{0};
  ctx->freezer_pin.Create(ctx->cgroups.freezer(), ctx->prefix + kPinLeafMark + std::to_string(::getpid()) +
                                                      "-" + std::to_string(pins++));
  // Without idmapped mounts (old kernel, filesystem without support) clones fall back to
  // a plain bind of a directory owned by the agent's host uid.
  auto idmap = MakeIdmapUserNamespace(options.ids.host_base + options.inner_uid,
                                      options.ids.host_base + options.inner_gid);
  if (idmap.ok()) {
    auto probe = IdmappedBindMount(ctx->domains_dir(), idmap->get());
    if (probe.ok()) ctx->vchan_idmap = std::move(*idmap);
  }
  return HypervisorPtr(std::make_unique<NativeHypervisor>(std::move(ctx)));
}

}  // namespace odyssey::hal::native
