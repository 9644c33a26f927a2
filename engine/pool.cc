#include "engine/pool.h"

#include <unistd.h>

#include <chrono>
#include <random>

#include <spdlog/spdlog.h>
#include <tbb/global_control.h>

namespace odyssey::engine {
namespace {

// Members prepared (or destroyed) at once. Each mostly waits on its domain's processes;
// measured with engine_bench BM_Sustained_DisposablesPerSecond (bench/README.md).
constexpr int kPrepareConcurrency = 8;

int PrepareConcurrency() {
  // oneTBB caps every arena at the process's allowed parallelism (the core count by default).
  static tbb::global_control allow(tbb::global_control::max_allowed_parallelism,
                                   std::max<size_t>(kPrepareConcurrency,
                                                    tbb::global_control::active_value(
                                                        tbb::global_control::max_allowed_parallelism)));
  return kPrepareConcurrency;
}

}  // namespace

PoolManager::PoolManager(Backend* backend, uint32_t max_members, Observer observer,
                         Backend* fallback, uint32_t fallback_after)
    : backend_(backend), fallback_(fallback == backend ? nullptr : fallback),
      fallback_after_(fallback_after ? fallback_after : 1), max_members_(max_members),
      observer_(std::move(observer)), arena_(PrepareConcurrency()) {
  // Names must not repeat across daemon restarts (the state store keys on them).
  std::random_device rd;
  counter_ = (static_cast<uint64_t>(rd()) % 9000 + 1000) * 1000;
}

PoolManager::~PoolManager() { Shutdown(); }

void PoolManager::RunTask(std::function<void()> fn) {
  {
    std::lock_guard lock(tasks_mu_);
    ++pending_tasks_;
  }
  arena_.enqueue([this, fn = std::move(fn)] {
    fn();
    std::lock_guard lock(tasks_mu_);  // notified under the lock: Shutdown() may return at once
    --pending_tasks_;
    tasks_cv_.notify_all();
  });
}

std::string PoolManager::NextName() { return "disp" + std::to_string(++counter_); }

uint32_t PoolManager::TotalLocked() const {
  uint32_t total = static_cast<uint32_t>(in_use_.load());
  for (auto& [_, p] : pools_) total += static_cast<uint32_t>(p.ready.size()) + p.preparing;
  return total;
}

void PoolManager::Configure(const TemplateInfo& tmpl, uint32_t target) {
  std::lock_guard lock(mu_);
  Pool& p = pools_[tmpl.name];
  if (!p.backend) p.backend = backend_;
  p.tmpl = tmpl;
  p.target = target;
  RefillLocked(p);
}

void PoolManager::Remove(const std::string& template_name) {
  std::deque<MemberPtr> doomed;
  {
    std::lock_guard lock(mu_);
    auto it = pools_.find(template_name);
    if (it == pools_.end()) return;
    it->second.target = 0;
    it->second.removed = true;
    doomed.swap(it->second.ready);
    if (it->second.preparing == 0) pools_.erase(it);
  }
  for (auto& m : doomed) {
    (void)m->Destroy();
    if (observer_) observer_(*m, "destroyed");
  }
}

bool PoolManager::Has(const std::string& template_name) {
  std::lock_guard lock(mu_);
  return pools_.count(template_name) != 0;
}

Status PoolManager::SetTarget(const std::string& template_name, uint32_t target) {
  std::deque<MemberPtr> doomed;
  {
    std::lock_guard lock(mu_);
    auto it = pools_.find(template_name);
    if (it == pools_.end())
      return Error{"template " + template_name + " does not exist (see `odyssey template ls`)",
                   ENOENT};
    Pool& p = it->second;
    p.target = target;
    p.consecutive_failures = 0;
    while (p.ready.size() > target) {
      doomed.push_back(std::move(p.ready.back()));
      p.ready.pop_back();
    }
    RefillLocked(p);
  }
  for (auto& m : doomed) {
    (void)m->Destroy();
    if (observer_) observer_(*m, "destroyed");
  }
  return OkStatus();
}

void PoolManager::PrepareFailedLocked(Pool& pool, Backend* b, const std::string& error) {
  pool.failures++;
  pool.consecutive_failures++;
  pool.last_error = error;
  if (!fallback_ || b != backend_ || pool.backend != backend_) return;
  if (pool.tmpl.kind == "vm") return;  // a VM template never runs outside a VM
  if (++pool.primary_failures < fallback_after_) return;
  pool.backend = fallback_;
  pool.consecutive_failures = 0;
  pool.fallback_reason = backend_->name() + " failed to prepare " +
                         std::to_string(pool.primary_failures) + " member(s) in a row: " + error;
  spdlog::warn("template {}: the {} backend failed to prepare {} disposable(s) in a row (last "
               "error: {}); switching template {} to the {} backend",
               pool.tmpl.name, backend_->name(), pool.primary_failures, error, pool.tmpl.name,
               fallback_->name());
}

std::pair<std::string, std::string> PoolManager::BackendOf(const std::string& template_name) {
  std::lock_guard lock(mu_);
  auto it = pools_.find(template_name);
  if (it == pools_.end() || !it->second.backend) return {backend_->name(), ""};
  return {it->second.backend->name(), it->second.fallback_reason};
}

void PoolManager::RefillLocked(Pool& pool) {
  // Stop hammering a template that cannot be prepared; SetTarget() or a Take() retries.
  if (shutdown_ || pool.consecutive_failures >= 3) return;
  while (pool.ready.size() + pool.preparing < pool.target && TotalLocked() < max_members_) {
    pool.preparing++;
    inflight_++;
    TemplateInfo tmpl = pool.tmpl;
    std::string name = NextName();
    Backend* b = pool.backend;
    RunTask([this, tmpl, name, b] {
      {
        // VMs: the member of a hit that emptied the pool is still in its call: start preparing
        // its successor when the call ends (Retire), when another call waits for it, or
        // after kRefillGrace, so the preparation (a VM restore) does not compete with the
        // call for the CPU.
        std::unique_lock lock(mu_);
        for (;;) {
          auto it = pools_.find(tmpl.name);
          if (it == pools_.end() || shutdown_ || it->second.defer_for.empty() ||
              std::chrono::steady_clock::now() >= it->second.refill_after)
            break;
          idle_cv_.wait_until(lock, it->second.refill_after);
        }
      }
      auto member = b->Prepare(tmpl, name);
      if (member.ok() && observer_) observer_(**member, "ready");
      MemberPtr doomed;
      {
        std::lock_guard lock(mu_);
        auto it = pools_.find(tmpl.name);
        if (it != pools_.end()) {
          Pool& p = it->second;
          p.preparing--;
          if (!member.ok()) {
            Backend* before = p.backend;
            PrepareFailedLocked(p, b, member.error().message);
            if (p.backend != before) RefillLocked(p);  // refill from the fallback now
          } else {
            p.prepared++;
            p.consecutive_failures = 0;
            if (b == backend_) p.primary_failures = 0;
            if (!shutdown_ && p.ready.size() < p.target) {
              p.ready.push_back(std::move(*member));
            } else {
              doomed = std::move(*member);
            }
          }
          // A pool resized to 0 stays (calls are then all misses); a removed one goes.
          if (p.removed && p.preparing == 0) pools_.erase(it);
        } else if (member.ok()) {
          doomed = std::move(*member);
        }
        inflight_--;
      }
      if (doomed) {
        (void)doomed->Destroy();
        if (observer_) observer_(*doomed, "destroyed");
      }
      idle_cv_.notify_all();
    });
  }
}

Result<MemberPtr> PoolManager::Take(const std::string& template_name, bool* hit) {
  TemplateInfo tmpl;
  Backend* b = nullptr;
  bool waited = false;  // for a member whose preparation was in flight
  {
    std::unique_lock lock(mu_);
    // At max_domains while earlier disposables are still being destroyed (a VM's teardown
    // takes seconds), a call waits for their slots instead of failing: sequential
    // `odyssey run`s must not outpace teardown into "too many disposables".
    const auto deadline = std::chrono::steady_clock::now() + kSlotWait;
    for (;;) {
      auto it = pools_.find(template_name);
      if (it == pools_.end())
        return Error{"template " + template_name +
                         " does not exist (see `odyssey template ls`, add it with "
                         "`odyssey template add`)", ENOENT};
      Pool& p = it->second;
      p.consecutive_failures = 0;
      if (!p.backend) p.backend = backend_;
      if (!p.ready.empty()) {
        MemberPtr m = std::move(p.ready.front());
        p.ready.pop_front();
        if (waited) p.misses++;
        else p.hits++;
        in_use_++;
        if (p.ready.empty()) {  // else when the member is retired
          if (p.tmpl.kind == "vm") p.defer_for = m->name();
          p.refill_after = std::chrono::steady_clock::now() + kRefillGrace;
          RefillLocked(p);
        }
        *hit = !waited;
        return m;
      }
      // VMs: its refill is in flight (a restore takes seconds; preparing another one would
      // take as long and queue behind it): wait for that member rather than prepare our own,
      // one waiter per member in flight. Counted as a miss (nothing was ready). Other kinds
      // prepare their own at once (cheap, in parallel, not queued behind the pool's tasks).
      if (p.tmpl.kind == "vm" && p.preparing > p.waiters && !shutdown_) {
        if (!p.defer_for.empty()) {  // needed now: no more deferring
          p.defer_for.clear();
          idle_cv_.notify_all();
        }
        p.waiters++;
        waited = true;
        idle_cv_.wait(lock);
        if (auto w = pools_.find(template_name); w != pools_.end()) w->second.waiters--;
        continue;
      }
      if (TotalLocked() < max_members_) {
        p.misses++;
        in_use_++;
        tmpl = p.tmpl;
        b = p.backend;
        RefillLocked(p);
        break;
      }
      if (retiring_ == 0 || shutdown_ || std::chrono::steady_clock::now() >= deadline)
        return Error{"too many disposables (max_domains = " + std::to_string(max_members_) +
                         "); wait for some to finish or raise max_domains in odysseyd.conf", EBUSY};
      idle_cv_.wait_until(lock, deadline);
    }
  }
  *hit = false;
  auto m = b->Prepare(tmpl, NextName());
  if (!m.ok() && fallback_ && b == backend_ && tmpl.kind != "vm") {
    {
      std::lock_guard lock(mu_);
      auto it = pools_.find(template_name);
      if (it != pools_.end()) {
        Backend* before = it->second.backend;
        PrepareFailedLocked(it->second, b, m.error().message);
        if (it->second.backend != before) RefillLocked(it->second);
      }
    }
    // This call is not failed for the primary's trouble: it runs on the fallback.
    spdlog::info("template {}: {} could not prepare a disposable ({}); this call uses the {} "
                 "backend", template_name, backend_->name(), m.error().message, fallback_->name());
    m = fallback_->Prepare(tmpl, NextName());
  }
  if (!m.ok()) in_use_--;
  return m;
}

void PoolManager::Retire(MemberPtr member, std::function<void(double)> done) {
  std::shared_ptr<Member> m(member.release());
  std::lock_guard lock(mu_);
  inflight_++;
  retiring_++;
  auto it = pools_.find(m->template_name());
  if (it != pools_.end()) {
    if (it->second.defer_for == m->name()) {  // its call is over: prepare the successor now
      it->second.defer_for.clear();
      idle_cv_.notify_all();
    }
    RefillLocked(it->second);
  }
  RunTask([this, m, done = std::move(done)] {
    auto t0 = std::chrono::steady_clock::now();
    (void)m->Destroy();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    in_use_--;
    if (done) done(ms);
    {
      std::lock_guard l(mu_);
      // A refill that max_members held back while this member still counted.
      auto p = pools_.find(m->template_name());
      if (p != pools_.end()) RefillLocked(p->second);
      inflight_--;
      retiring_--;
    }
    idle_cv_.notify_all();
  });
}

std::vector<PoolStats> PoolManager::Stats() {
  std::vector<PoolStats> out;
  std::lock_guard lock(mu_);
  for (auto& [name, p] : pools_) {
    PoolStats s;
    s.template_name = name;
    s.target = p.target;
    s.ready = static_cast<uint32_t>(p.ready.size());
    s.preparing = p.preparing;
    s.hits = p.hits;
    s.misses = p.misses;
    s.prepared = p.prepared;
    s.failures = p.failures;
    s.last_error = p.last_error;
    s.backend = (p.backend ? p.backend : backend_)->name();
    s.fallback_reason = p.fallback_reason;
    for (auto& m : p.ready) {
      MemberUsage u = m->Usage();
      s.memory_bytes += u.memory_bytes;
      s.memory_pss_bytes += u.memory_pss_bytes;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> PoolManager::ReadyMembers() {
  std::vector<std::pair<std::string, std::string>> out;
  std::lock_guard lock(mu_);
  for (auto& [name, p] : pools_)
    for (auto& m : p.ready) out.emplace_back(m->name(), name);
  return out;
}

bool PoolManager::KillReady(const std::string& name) {
  MemberPtr doomed;
  {
    std::lock_guard lock(mu_);
    for (auto& [_, p] : pools_) {
      for (auto it = p.ready.begin(); it != p.ready.end(); ++it) {
        if ((*it)->name() == name) {
          doomed = std::move(*it);
          p.ready.erase(it);
          RefillLocked(p);
          break;
        }
      }
      if (doomed) break;
    }
  }
  if (!doomed) return false;
  (void)doomed->Destroy();
  if (observer_) observer_(*doomed, "destroyed");
  return true;
}

void PoolManager::WaitIdle() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return inflight_ == 0; });
}

void PoolManager::Shutdown() {
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
  }
  idle_cv_.notify_all();  // deferred refills give up
  {
    std::unique_lock lock(tasks_mu_);
    tasks_cv_.wait(lock, [this] { return pending_tasks_ == 0; });
  }
  std::map<std::string, Pool> pools;
  {
    std::lock_guard lock(mu_);
    pools.swap(pools_);
  }
  for (auto& [_, p] : pools) {
    for (auto& m : p.ready) {
      (void)m->Destroy();
      if (observer_) observer_(*m, "destroyed");
    }
  }
}

}  // namespace odyssey::engine
