#include "hal/native/cgroup.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "base/io.h"

namespace odyssey::hal::native {
namespace {

using Clock = std::chrono::steady_clock;

Status WriteFile(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  ssize_t n = ::write(fd.get(), value.data(), value.size());
  if (n != static_cast<ssize_t>(value.size())) return Error::Errno("write '" + value + "'", path);
  return OkStatus();
}

Result<std::string> ReadSmall(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::Errno("read", path);
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

uint64_t ReadNumber(const std::string& path) {
  auto text = ReadSmall(path);
  if (!text.ok()) return 0;
  return std::strtoull(text->c_str(), nullptr, 10);
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) out.push_back(item);
  return out;
}

struct V1Mount {
  std::string root;        // mount root inside the hierarchy
  std::string mountpoint;
  std::vector<std::string> controllers;
};

std::vector<V1Mount> ReadV1Mounts() {
  std::vector<V1Mount> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream pre(line.substr(0, dash)), post(line.substr(dash + 3));
    std::string id, parent, devno, root, mountpoint, fstype, source, options;
    pre >> id >> parent >> devno >> root >> mountpoint;
    post >> fstype >> source >> options;
    if (fstype != "cgroup") continue;
    V1Mount m{root, mountpoint, {}};
    for (auto& opt : Split(options, ',')) m.controllers.push_back(opt);
    out.push_back(std::move(m));
  }
  return out;
}

// controller -> our path in that hierarchy, from /proc/self/cgroup.
std::string OwnPath(const std::string& controller) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    auto first = line.find(':');
    auto second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    for (auto& c : Split(line.substr(first + 1, second - first - 1), ',')) {
      if (c == controller) return line.substr(second + 1);
    }
  }
  return "/";
}

std::string ParentFor(const std::vector<V1Mount>& mounts, const std::string& controller,
                      const std::string& parent) {
  for (const auto& m : mounts) {
    if (std::find(m.controllers.begin(), m.controllers.end(), controller) == m.controllers.end()) {
      continue;
    }
    std::string path = parent.empty() ? OwnPath(controller) : "/" + parent;
    if (parent.empty() && m.root != "/" && path.compare(0, m.root.size(), m.root) == 0) {
      path = path.substr(m.root.size());
    }
    while (!path.empty() && path.back() == '/') path.pop_back();
    return m.mountpoint + path;
  }
  return {};
}

}  // namespace

Result<CgroupTree> CgroupTree::Discover(const std::string& parent) {
  auto mounts = ReadV1Mounts();
  CgroupTree tree;
  tree.freezer_ = ParentFor(mounts, "freezer", parent);
  tree.memory_ = ParentFor(mounts, "memory", parent);
  tree.pids_ = ParentFor(mounts, "pids", parent);
  tree.cpu_ = ParentFor(mounts, "cpu", parent);
  tree.cpuacct_ = ParentFor(mounts, "cpuacct", parent);
  for (auto [name, dir] : {std::pair{"freezer", &tree.freezer_}, {"memory", &tree.memory_},
                           {"pids", &tree.pids_}, {"cpu", &tree.cpu_}}) {
    if (dir->empty()) {
      return Error{std::string("cgroup v1 controller '") + name +
                       "' is not mounted (the native backend needs freezer, memory, pids, cpu)",
                   ENOENT};
    }
    if (::mkdir(dir->c_str(), 0755) != 0 && errno != EEXIST) {
      return Error::Errno("mkdir cgroup parent", *dir);
    }
  }
  return tree;
}

std::vector<std::string> CgroupTree::ParentDirs() const {
  std::vector<std::string> out;
  for (const auto* d : {&freezer_, &memory_, &pids_, &cpu_, &cpuacct_}) {
    if (!d->empty() && std::find(out.begin(), out.end(), *d) == out.end()) out.push_back(*d);
  }
  return out;
}

std::vector<std::string> CgroupTree::LeafDirs(const std::string& leaf) const {
  std::vector<std::string> out;
  for (auto& p : ParentDirs()) out.push_back(p + "/" + leaf);
  return out;
}

Result<Cgroup> Cgroup::Create(const CgroupTree& tree, const std::string& leaf,
                              const CgroupLimits& limits) {
  Cgroup cg(tree, leaf);
  auto fail = [&](const Error& e) {
    (void)cg.Remove(std::chrono::milliseconds(100));
    return e.Wrap("creating cgroup " + leaf);
  };
  for (auto& dir : tree.LeafDirs(leaf)) {
    if (::mkdir(dir.c_str(), 0755) != 0) return fail(Error::Errno("mkdir", dir));
  }
  if (limits.memory_bytes) {
    std::string v = std::to_string(limits.memory_bytes);
    if (auto s = WriteFile(cg.Dir(tree.memory()) + "/memory.limit_in_bytes", v); !s.ok()) {
      return fail(s.error());
    }
    // Without swap accounting a limit could be escaped by swapping; set it where it exists.
    std::string memsw = cg.Dir(tree.memory()) + "/memory.memsw.limit_in_bytes";
    if (::access(memsw.c_str(), F_OK) == 0) (void)WriteFile(memsw, v);
  }
  if (limits.pids) {
    if (auto s = WriteFile(cg.Dir(tree.pids()) + "/pids.max", std::to_string(limits.pids)); !s.ok()) {
      return fail(s.error());
    }
  }
  if (limits.cpu_weight) {
    uint64_t shares = std::max<uint64_t>(2, uint64_t{1024} * std::min<uint32_t>(limits.cpu_weight, 10000) / 100);
    if (auto s = WriteFile(cg.Dir(tree.cpu()) + "/cpu.shares", std::to_string(shares)); !s.ok()) {
      return fail(s.error());
    }
  }
  return cg;
}

Cgroup Cgroup::Attach(const CgroupTree& tree, const std::string& leaf) { return Cgroup(tree, leaf); }

Result<std::vector<UniqueFd>> Cgroup::OpenProcsFds() const {
  std::vector<UniqueFd> fds;
  for (auto& dir : tree_.LeafDirs(leaf_)) {
    std::string path = dir + "/cgroup.procs";
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return Error::Errno("open", path);
    fds.push_back(std::move(fd));
  }
  return fds;
}

Status Cgroup::AddPid(pid_t pid) const {
  for (auto& dir : tree_.LeafDirs(leaf_)) {
    ODYSSEY_TRY(WriteFile(dir + "/cgroup.procs", std::to_string(pid)));
  }
  return OkStatus();
}

Result<std::string> Cgroup::FreezerState() const {
  auto text = ReadSmall(Dir(tree_.freezer()) + "/freezer.state");
  if (!text.ok()) return text.error();
  std::string s = *text;
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Status Cgroup::Freeze(std::chrono::milliseconds timeout) const {
  ODYSSEY_TRY(RequestFreeze());
  auto deadline = Clock::now() + timeout;
  for (int spin = 0;; ++spin) {
    auto s = FreezerState();
    if (!s.ok()) return s.error();
    if (*s == "FROZEN") return OkStatus();
    if (Clock::now() > deadline) return Error{"freezing cgroup " + leaf_ + ": still " + *s, ETIMEDOUT};
    if (spin > 10) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

Status Cgroup::RequestFreeze() const {
  return WriteFile(Dir(tree_.freezer()) + "/freezer.state", "FROZEN");
}

Status Cgroup::Thaw() const { return WriteFile(Dir(tree_.freezer()) + "/freezer.state", "THAWED"); }

std::vector<pid_t> Cgroup::Pids() const {
  std::vector<pid_t> out;
  auto text = ReadSmall(Dir(tree_.freezer()) + "/cgroup.procs");
  if (!text.ok()) return out;
  for (auto& line : Split(*text, '\n')) {
    if (!line.empty()) out.push_back(static_cast<pid_t>(std::atoi(line.c_str())));
  }
  return out;
}

Status Cgroup::KillAll(std::chrono::milliseconds timeout) const {
  std::string freezer_dir = Dir(tree_.freezer());
  if (::access(freezer_dir.c_str(), F_OK) != 0) return OkStatus();
  auto deadline = Clock::now() + timeout;
  if (Pids().empty()) return OkStatus();
  for (;;) {
    // Frozen tasks can neither fork nor exit, so the pids read below stay theirs.
    (void)Freeze(std::chrono::milliseconds(500));
    auto pids = Pids();
    for (pid_t pid : pids) ::kill(pid, SIGKILL);
    ODYSSEY_TRY(Thaw());
    if (pids.empty()) return OkStatus();
    for (int i = 0; i < 200 && !Pids().empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(250));
    }
    if (Pids().empty()) return OkStatus();
    if (Clock::now() > deadline) {
      return Error{"killing cgroup " + leaf_ + ": tasks still present", EBUSY};
    }
  }
}

Status Cgroup::Remove(std::chrono::milliseconds timeout) const {
  auto deadline = Clock::now() + timeout;
  for (auto& dir : tree_.LeafDirs(leaf_)) {
    for (;;) {
      if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) break;
      if (errno != EBUSY || Clock::now() > deadline) return Error::Errno("rmdir", dir);
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
  }
  return OkStatus();
}

ResourceStats Cgroup::Stats() const {
  ResourceStats s;
  s.memory_bytes = ReadNumber(Dir(tree_.memory()) + "/memory.usage_in_bytes");
  s.pids = static_cast<uint32_t>(ReadNumber(Dir(tree_.pids()) + "/pids.current"));
  if (!tree_.cpuacct().empty()) s.cpu_time_ns = ReadNumber(Dir(tree_.cpuacct()) + "/cpuacct.usage");
  return s;
}

}  // namespace odyssey::hal::native
