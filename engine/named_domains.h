// NamedDomains: the engine's named, persistent domains (`odyssey vm start NAME [--template T]`,
// the target of a routing rule's `vm:NAME`). Each is one member prepared from a template under
// its own name (its hostname inside) and kept running across calls: a call into it does not
// destroy it; `odyssey vm stop NAME` (or `odyssey kill NAME`, or odysseyd stopping) does.
// They do not outlive odysseyd: a restart reaps them like any leftover domain.
//
// Only backends whose members serve many calls can hold one (the HAL: the qrexec agent keeps
// running between calls); the process backend's members run one command and exit, so the
// daemon refuses named domains there. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/backend.h"

namespace odyssey::engine {

class NamedDomains {
 public:
  // One named domain. The member is shared with the calls running in it.
  struct Entry {
    std::string name, template_name;
    int64_t started_ms = 0;
    std::shared_ptr<Member> member;  // null while starting
    std::atomic<int> calls{0};       // calls running in it now
  };
  using EntryPtr = std::shared_ptr<Entry>;

  // Names a named domain may not take (besides the engine's name rule, checked by the
  // daemon): the pool's own "dispN" names, which would collide in the backend.
  static bool ReservedName(const std::string& name);

  // Reserves name (an error when it is taken or starting), prepares a member of tmpl on
  // backend under that name, and registers it. Blocking (a prepare: clone + agent HELLO).
  Result<EntryPtr> Start(Backend* backend, const TemplateInfo& tmpl, const std::string& name,
                         int64_t now_ms);
  // Destroys the domain (calls running in it end with an error) and forgets it. False when
  // no domain of that name runs.
  bool Stop(const std::string& name);
  // The running domain called name, or null (also while it is still starting).
  EntryPtr Find(const std::string& name);
  // True when name is running or starting.
  bool Exists(const std::string& name);
  size_t Count();
  std::vector<EntryPtr> List();  // running ones, by name
  // Destroys every named domain (daemon shutdown).
  void StopAll();

 private:
  std::mutex mu_;
  std::map<std::string, EntryPtr> domains_;  // an entry without member is starting
};

// The error for a call into a named domain that does not run, saying how to start it.
std::string NamedDomainNotRunning(const std::string& name);

}  // namespace odyssey::engine
