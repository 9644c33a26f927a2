// Pools of prepared disposables, one per template: Take() hands out a ready member (a hit)
// or prepares one on the spot (a miss), and every Take() schedules a background refill back
// to the template's target size. Preparation runs on oneTBB tasks so several members are
// set up in parallel, off the request path. Thread-safe.
#pragma once

#include <tbb/task_group.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/backend.h"

namespace odyssey::engine {

struct PoolStats {
  std::string template_name;
  uint32_t target = 0;
  uint32_t ready = 0;
  uint32_t preparing = 0;
  uint64_t hits = 0, misses = 0, prepared = 0, failures = 0;
  uint64_t memory_bytes = 0, memory_pss_bytes = 0;  // ready members only
  std::string last_error;
};

class PoolManager {
 public:
  // Called (from any thread) when a member is prepared or destroyed, for the state store.
  using Observer = std::function<void(const Member&, const std::string& state)>;
  PoolManager(Backend* backend, uint32_t max_members, Observer observer);
  ~PoolManager();  // Shutdown()

  // Declares a template (target size). Starts filling.
  void Configure(const TemplateInfo& tmpl, uint32_t target);
  // Forgets a template: destroys its ready members.
  void Remove(const std::string& template_name);
  bool Has(const std::string& template_name);
  Status SetTarget(const std::string& template_name, uint32_t target);
  // A ready member (hit) or a freshly prepared one (miss). Schedules a refill either way.
  Result<MemberPtr> Take(const std::string& template_name, bool* hit);
  std::vector<PoolStats> Stats();
  // Blocks until no preparation is in flight (tests, shutdown).
  void WaitIdle();
  // Stops refilling and destroys every ready member.
  void Shutdown();
  // Names of ready members (for `odyssey ls`).
  std::vector<std::pair<std::string, std::string>> ReadyMembers();
  // Destroys a ready member by name; false if there is none.
  bool KillReady(const std::string& name);
  // Members out of the pool and not yet destroyed (running calls); the daemon reports.
  std::atomic<int>& in_use() { return in_use_; }

 private:
  struct Pool {
    TemplateInfo tmpl;
    uint32_t target = 0;
    std::deque<MemberPtr> ready;
    uint32_t preparing = 0;
    uint64_t hits = 0, misses = 0, prepared = 0, failures = 0;
    uint32_t consecutive_failures = 0;
    bool removed = false;  // template removed: erase once nothing is in flight
    std::string last_error;
  };
  std::string NextName();
  void RefillLocked(Pool& pool);  // mu_ held
  uint32_t TotalLocked() const;

  Backend* backend_;
  uint32_t max_members_;
  Observer observer_;
  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, Pool> pools_;
  uint32_t inflight_ = 0;
  bool shutdown_ = false;
  std::atomic<uint64_t> counter_{0};
  std::atomic<int> in_use_{0};
  tbb::task_group tasks_;
};

}  // namespace odyssey::engine
