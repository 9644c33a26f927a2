// StateStore: odysseyd's persistent memory in sqlite3 (WAL): templates, domains (pool
// members and running disposables), calls and policy decisions. It exists so that a
// restarted daemon knows what a killed run left behind; it never decides anything itself.
// Thread-safe: one connection behind a mutex.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace odyssey::engine {

struct TemplateRecord {
  std::string name;
  std::string kind = "native";  // "native" | "vm"
  std::string root_dir;         // empty: the host's tree; vm: the guest image directory
  int64_t pool_size = -1;       // -1: the config's pool_size
  std::string accel;            // vm: "kvm" | "tcg" (probed when the template is added)
  std::string image_sha256;     // vm: SHA-256 of the image's SHA256SUMS (its identity)
};

struct DomainRecord {
  std::string name;
  std::string template_name;
  std::string state;   // "preparing" | "ready" | "running" | "destroyed"
  int64_t pid = 0;     // backend handle (process backend: stub pid)
  int64_t created_ms = 0;
};

struct CallRecord {
  int64_t id = 0;
  std::string domain;
  std::string kind;      // "run" | "call"
  std::string what;      // command line or service+arg
  int64_t uid = -1;      // caller
  int64_t started_ms = 0;
  std::optional<int64_t> ended_ms;
  std::optional<int> exit_code;
  bool pool_hit = false;
  std::string outcome;   // "" while running; "exited" | "killed" | "timeout" | "interrupted"
};

struct PolicyDecisionRecord {
  std::string source, target, service, argument, result, rule;
};

class StateStore {
 public:
  // Opens (creating) DIR/state.sqlite3 in WAL mode.
  static Result<std::unique_ptr<StateStore>> Open(const std::string& path);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  Status PutTemplate(const TemplateRecord& t);
  Status DeleteTemplate(const std::string& name);
  Result<std::vector<TemplateRecord>> Templates();

  Status PutDomain(const DomainRecord& d);
  Status SetDomainState(const std::string& name, const std::string& state);
  // Domains not in state "destroyed".
  Result<std::vector<DomainRecord>> LiveDomains();

  Result<int64_t> BeginCall(const CallRecord& c);
  Status EndCall(int64_t id, std::optional<int> exit_code, const std::string& outcome);
  Result<std::vector<CallRecord>> RecentCalls(int limit);

  Status RecordDecision(const PolicyDecisionRecord& d);
  Result<int64_t> DecisionCount();

  // After a crash: every live domain becomes "destroyed", every open call "interrupted".
  // Returns how many domains and calls were closed.
  Result<std::pair<int, int>> MarkAllInterrupted();

  static int64_t NowMs();

 private:
  explicit StateStore(sqlite3* db) : db_(db) {}
  Status Exec(const std::string& sql);
  Status AddTemplateImageColumns();
  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace odyssey::engine
