#include "engine/pool.h"

#include <unistd.h>

#include <chrono>
#include <random>

namespace odyssey::engine {

PoolManager::PoolManager(Backend* backend, uint32_t max_members, Observer observer)
    : backend_(backend), max_members_(max_members), observer_(std::move(observer)) {
  // Names must not repeat across daemon restarts (the state store keys on them).
  std::random_device rd;
  counter_ = (static_cast<uint64_t>(rd()) % 9000 + 1000) * 1000;
}

PoolManager::~PoolManager() { Shutdown(); }

std::string PoolManager::NextName() { return "disp" + std::to_string(++counter_); }

uint32_t PoolManager::TotalLocked() const {
  uint32_t total = static_cast<uint32_t>(in_use_.load());
  for (auto& [_, p] : pools_) total += static_cast<uint32_t>(p.ready.size()) + p.preparing;
  return total;
}

void PoolManager::Configure(const TemplateInfo& tmpl, uint32_t target) {
  std::lock_guard lock(mu_);
  Pool& p = pools_[tmpl.name];
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

void PoolManager::RefillLocked(Pool& pool) {
  // Stop hammering a template that cannot be prepared; SetTarget() or a Take() retries.
  if (shutdown_ || pool.consecutive_failures >= 3) return;
  while (pool.ready.size() + pool.preparing < pool.target && TotalLocked() < max_members_) {
    pool.preparing++;
    inflight_++;
    TemplateInfo tmpl = pool.tmpl;
    std::string name = NextName();
    tasks_.run([this, tmpl, name] {
      auto member = backend_->Prepare(tmpl, name);
      if (member.ok() && observer_) observer_(**member, "ready");
      MemberPtr doomed;
      {
        std::lock_guard lock(mu_);
        auto it = pools_.find(tmpl.name);
        if (it != pools_.end()) {
          Pool& p = it->second;
          p.preparing--;
          if (!member.ok()) {
            p.failures++;
            p.consecutive_failures++;
            p.last_error = member.error().message;
          } else {
            p.prepared++;
            p.consecutive_failures = 0;
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
  {
    std::lock_guard lock(mu_);
    auto it = pools_.find(template_name);
    if (it == pools_.end())
      return Error{"template " + template_name +
                       " does not exist (see `odyssey template ls`, add it with "
                       "`odyssey template add`)", ENOENT};
    Pool& p = it->second;
    p.consecutive_failures = 0;
    if (!p.ready.empty()) {
      MemberPtr m = std::move(p.ready.front());
      p.ready.pop_front();
      p.hits++;
      in_use_++;
      RefillLocked(p);
      *hit = true;
      return m;
    }
    if (TotalLocked() >= max_members_)
      return Error{"too many disposables (max_domains = " + std::to_string(max_members_) +
                       "); wait for some to finish or raise max_domains in odysseyd.conf", EBUSY};
    p.misses++;
    in_use_++;
    tmpl = p.tmpl;
    RefillLocked(p);
  }
  *hit = false;
  auto m = backend_->Prepare(tmpl, NextName());
  if (!m.ok()) in_use_--;
  return m;
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
  tasks_.wait();
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
