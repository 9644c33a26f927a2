// cgroup v1 groups of native domains (memory, pids, cpu, cpuacct, freezer), host side.
// The machine has cgroups v1 with an empty v2 hierarchy, so limits and the freezer use
// v1 controllers. Groups are created under the caller's own cgroup of each controller
// (or an explicit parent), named by a per-state-dir prefix so leftovers can be found.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "hal/domain.h"

namespace odyssey::hal::native {

// Where each controller's groups go, discovered from /proc/self/{mountinfo,cgroup}.
class CgroupTree {
 public:
  // parent: path relative to each controller's root; empty = our own cgroup there.
  static Result<CgroupTree> Discover(const std::string& parent = {});
  // Directory of leaf under every controller we use (deduplicated: cpu,cpuacct may share).
  std::vector<std::string> LeafDirs(const std::string& leaf) const;
  // Directories in which leaves are created, one per controller.
  std::vector<std::string> ParentDirs() const;
  const std::string& freezer() const { return freezer_; }
  const std::string& memory() const { return memory_; }
  const std::string& pids() const { return pids_; }
  const std::string& cpu() const { return cpu_; }
  const std::string& cpuacct() const { return cpuacct_; }  // may be empty

 private:
  std::string freezer_, memory_, pids_, cpu_, cpuacct_;  // parent dirs
};

struct CgroupLimits {
  uint64_t memory_bytes = 0;  // 0: no limit
  uint32_t pids = 0;          // 0: no limit
  uint32_t cpu_weight = 0;    // 1..10000, 100 = default share; 0: untouched
};

// One group (same leaf name in every controller). Does not remove itself on destruction.
class Cgroup {
 public:
  // Creates the leaf everywhere and applies limits; on failure removes what it made.
  static Result<Cgroup> Create(const CgroupTree& tree, const std::string& leaf,
                               const CgroupLimits& limits);
  // Refers to an existing leaf (for leftovers); does not check it exists.
  static Cgroup Attach(const CgroupTree& tree, const std::string& leaf);

  const std::string& leaf() const { return leaf_; }
  // cgroup.procs of every controller opened for writing: a process that writes "0" to
  // each joins the group, even without permission of its own (the opener's creds count).
  Result<std::vector<UniqueFd>> OpenProcsFds() const;
  Status AddPid(pid_t pid) const;
  // Freezes every task and waits until the freezer reports FROZEN.
  Status Freeze(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Starts freezing and returns: the state is FREEZING until every task has stopped (each
  // stops at its next return towards user space, so none runs user code after that).
  Status RequestFreeze() const;
  Status Thaw() const;
  // "FROZEN", "FREEZING", "THAWED", or an error if the group is gone.
  Result<std::string> FreezerState() const;
  std::vector<pid_t> Pids() const;
  // SIGKILLs every task (frozen first so none can fork or exit under us) and waits until
  // the group is empty.
  Status KillAll(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // Removes the leaf from every controller (must be empty). Missing leaves are fine.
  Status Remove(std::chrono::milliseconds timeout = std::chrono::seconds(5)) const;
  ResourceStats Stats() const;

 private:
  Cgroup(const CgroupTree& tree, std::string leaf) : tree_(tree), leaf_(std::move(leaf)) {}
  std::string Dir(const std::string& parent) const { return parent + "/" + leaf_; }
  CgroupTree tree_;
  std::string leaf_;
};

}  // namespace odyssey::hal::native
