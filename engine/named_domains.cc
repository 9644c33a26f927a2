#include "engine/named_domains.h"

#include <cerrno>

namespace odyssey::engine {

bool NamedDomains::ReservedName(const std::string& name) {
  if (name.size() <= 4 || name.compare(0, 4, "disp") != 0) return false;
  return name.find_first_not_of("0123456789", 4) == std::string::npos;
}

Result<NamedDomains::EntryPtr> NamedDomains::Start(Backend* backend, const TemplateInfo& tmpl,
                                                   const std::string& name, int64_t now_ms) {
  auto entry = std::make_shared<Entry>();
  entry->name = name;
  entry->template_name = tmpl.name;
  entry->started_ms = now_ms;
  {
    std::lock_guard lock(mu_);
    auto it = domains_.find(name);
    if (it != domains_.end())
      return Error{"a domain named '" + name + "' is already " +
                       (it->second->member ? "running (see `odyssey ls`; stop it with `odyssey vm stop " +
                                                 name + "`)"
                                           : std::string("starting")),
                   EEXIST};
    domains_[name] = entry;  // reserved: a second start of the same name is refused
  }
  auto member = backend->Prepare(tmpl, name);
  std::lock_guard lock(mu_);
  if (!member.ok()) {
    domains_.erase(name);
    return member.error().Wrap("starting domain " + name + " from template " + tmpl.name);
  }
  entry->member = std::shared_ptr<Member>(std::move(*member));
  return entry;
}

bool NamedDomains::Stop(const std::string& name) {
  EntryPtr e;
  {
    std::lock_guard lock(mu_);
    auto it = domains_.find(name);
    if (it == domains_.end() || !it->second->member) return false;
    e = it->second;
    domains_.erase(it);
  }
  // Kill() makes calls in flight return; Destroy() frees the domain. Calls still holding
  // the member keep the object alive until they return.
  e->member->Kill();
  (void)e->member->Destroy();
  return true;
}

NamedDomains::EntryPtr NamedDomains::Find(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = domains_.find(name);
  if (it == domains_.end() || !it->second->member) return nullptr;
  return it->second;
}

bool NamedDomains::Exists(const std::string& name) {
  std::lock_guard lock(mu_);
  return domains_.count(name) > 0;
}

size_t NamedDomains::Count() {
  std::lock_guard lock(mu_);
  return domains_.size();
}

std::vector<NamedDomains::EntryPtr> NamedDomains::List() {
  std::vector<EntryPtr> out;
  std::lock_guard lock(mu_);
  for (auto& [_, e] : domains_)
    if (e->member) out.push_back(e);
  return out;
}

void NamedDomains::StopAll() {
  std::vector<std::string> names;
  {
    std::lock_guard lock(mu_);
    for (auto& [name, e] : domains_)
      if (e->member) names.push_back(name);
  }
  for (auto& n : names) Stop(n);
}

std::string NamedDomainNotRunning(const std::string& name) {
  return "no domain named '" + name + "' is running; start it with `odyssey vm start " + name +
         " [--template TEMPLATE]` (see `odyssey ls`)";
}

}  // namespace odyssey::engine
