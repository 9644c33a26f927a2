// Pools of prepared disposables, one per template: Take() hands out a ready member (a hit)
// or prepares one on the spot (a miss), and every Take() schedules a background refill back
// to the template's target size. Preparation runs on oneTBB tasks so several members are
// set up in parallel, off the request path. Thread-safe.
#pragma once

#include <tbb/task_arena.h>

#include <atomic>
#include <chrono>
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
  std::string backend;          // the backend this template's members come from now
  std::string fallback_reason;  // why it was switched to the fallback ("" = not switched)
};

class PoolManager {
 public:
  // Called (from any thread) when a member is prepared or destroyed, for the state store.
  using Observer = std::function<void(const Member&, const std::string& state)>;
  // fallback (may be null): where a template goes once backend failed to prepare
  // fallback_after members in a row (e.g. hal/native cannot reach its state dir); a miss
  // whose preparation fails on backend is retried on fallback at once.
  PoolManager(Backend* backend, uint32_t max_members, Observer observer,
              Backend* fallback = nullptr, uint32_t fallback_after = 3);
  ~PoolManager();  // Shutdown()

  // Declares a template (target size). Starts filling.
  void Configure(const TemplateInfo& tmpl, uint32_t target);
  // Forgets a template: destroys its ready members.
  void Remove(const std::string& template_name);
  bool Has(const std::string& template_name);
  Status SetTarget(const std::string& template_name, uint32_t target);
  // A ready member (hit), else (VM templates) the member whose preparation is in flight
  // (waited for, a miss), else a freshly prepared one (miss). Schedules a refill at once on a
  // miss or (except VMs) when the pool ran empty; otherwise when the member is retired (so
  // preparing its successor does not compete with the call for the CPU). A VM pool that ran
  // empty starts its refill when the member is retired, a call waits for it, or
  // kRefillGrace after the take, whichever comes first.
  Result<MemberPtr> Take(const std::string& template_name, bool* hit);
  // Ends a member that Take() handed out: refills its pool, destroys the member on the
  // pool's tasks (off the caller's thread; WaitIdle() waits for it; it stays counted against
  // max_members until gone), then runs done(destroy_ms).
  void Retire(MemberPtr member, std::function<void(double destroy_ms)> done);
  std::vector<PoolStats> Stats();
  // Blocks until no preparation is in flight (tests, shutdown).
  void WaitIdle();
  // Stops refilling and destroys every ready member.
  void Shutdown();
  // The backend a template's members come from now, and why it fell back ("" if not).
  std::pair<std::string, std::string> BackendOf(const std::string& template_name);
  // Names of ready members (for `odyssey ls`).
  std::vector<std::pair<std::string, std::string>> ReadyMembers();
  // Destroys a ready member by name; false if there is none.
  bool KillReady(const std::string& name);
  // Members out of the pool and not yet destroyed (running calls); the daemon reports.
  std::atomic<int>& in_use() { return in_use_; }

 private:
  struct Pool {
    TemplateInfo tmpl;
    Backend* backend = nullptr;  // backend_ until it fell back to fallback_
    uint32_t primary_failures = 0;  // consecutive failed prepares on backend_
    std::string fallback_reason;
    uint32_t target = 0;
    std::deque<MemberPtr> ready;
    uint32_t preparing = 0;
    uint32_t waiters = 0;  // Take()s waiting for a member in preparation
    // A hit that emptied the pool: its member's name, and when its refill starts at the
    // latest (it starts earlier when that member is retired or a call waits for it).
    std::string defer_for;
    std::chrono::steady_clock::time_point refill_after;
    uint64_t hits = 0, misses = 0, prepared = 0, failures = 0;
    uint32_t consecutive_failures = 0;
    bool removed = false;  // template removed: erase once nothing is in flight
    std::string last_error;
  };
  std::string NextName();
  void RefillLocked(Pool& pool);  // mu_ held
  // Counts a failed prepare on b; switches the pool to fallback_ at the threshold. mu_ held.
  void PrepareFailedLocked(Pool& pool, Backend* b, const std::string& error);
  uint32_t TotalLocked() const;
  // How long Take() waits for a slot held by members still being destroyed.
  static constexpr std::chrono::seconds kSlotWait{60};
  // How long a hit that emptied its pool holds back the refill while its call runs.
  static constexpr std::chrono::seconds kRefillGrace{2};

  Backend* backend_;
  Backend* fallback_;
  uint32_t fallback_after_;
  uint32_t max_members_;
  Observer observer_;
  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, Pool> pools_;
  uint32_t inflight_ = 0;
  uint32_t retiring_ = 0;  // members handed to Retire() and not yet destroyed
  bool shutdown_ = false;
  std::atomic<uint64_t> counter_{0};
  std::atomic<int> in_use_{0};
  // Preparing a member mostly waits for its processes (clone, agent start, HELLO), so more
  // of them overlap than there are cores: an arena of kPrepareConcurrency (see pool.cc).
  tbb::task_arena arena_;
  std::mutex tasks_mu_;
  std::condition_variable tasks_cv_;
  uint32_t pending_tasks_ = 0;  // enqueued in arena_, not finished
  void RunTask(std::function<void()> fn);  // never blocks (called with mu_ held)
};

}  // namespace odyssey::engine
