// qrexec policy engine: reads Qubes `policy.d` files, decides allow / deny / ask for one
// call (source, intended target, service+argument), explains every decision by the rule's
// file:line, asks the user when a rule says `ask`, and appends every decision to an audit
// log. It never runs a service and never talks to a domain: it only decides.
//
// Trust: everything in a Request comes from a domain (through qrexec-daemon) and is
// validated here before use; policy files are trusted configuration but parsed strictly
// (any syntax error anywhere makes the whole policy deny).
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace odyssey::qrexec::policy {

// What a rule (and so a decision) says.
enum class Action { kAllow, kDeny, kAsk };
// "allow", "deny" or "ask".
std::string_view ActionName(Action action);

// A place in a policy file. line and column are 1-based; 0 means "not applicable".
struct Location {
  std::string file;
  int line = 0;
  int column = 0;
  // "file:line" (or "file:line:column" when with_column), "none" when file is empty.
  std::string ToString(bool with_column = false) const;
};

// The domain names a policy accepts (Qubes' rule: a letter first, then letters, digits and
// "_.-", at most 31 bytes, the qrexec wire's name field). Whoever names domains (the engine's
// templates and named domains) checks with this, so every name can be written in a policy.
bool IsValidDomainName(std::string_view name);

// Facts about one domain, as the policy needs them.
struct DomainInfo {
  std::string name;                 // unique, e.g. "work"; the admin domain is "dom0"
  std::string uuid;                 // lowercase 8-4-4-4-12, may be empty
  std::string type;                 // AdminVM, AppVM, TemplateVM, StandaloneVM, DispVM, ...
  std::vector<std::string> tags;    // sorted, unique
  std::string default_dispvm;       // template used for this domain's `@dispvm` calls, or ""
  bool template_for_dispvms = false;  // may disposables be made from this domain?
  std::string dispvm_template;      // for a disposable (type DispVM): its template, or ""

  bool is_admin() const { return type == "AdminVM"; }
  bool has_tag(std::string_view tag) const;
};

// Where domain facts come from. The engine provides its own implementation; until then
// a JSON file (LoadJsonCatalog). Implementations must be safe to call from many threads.
class DomainCatalog {
 public:
  virtual ~DomainCatalog() = default;
  // The domain called `name`, or nullopt when there is none.
  virtual std::optional<DomainInfo> FindByName(std::string_view name) const = 0;
  // The domain with this uuid (without the "uuid:" prefix, any case), or nullopt.
  virtual std::optional<DomainInfo> FindByUuid(std::string_view uuid) const = 0;
  // The admin domain (type AdminVM). Every catalog has exactly one.
  virtual DomainInfo AdminDomain() const = 0;
};
using DomainCatalogPtr = std::shared_ptr<const DomainCatalog>;

// Parses a catalog in the Qubes system-info shape:
//   {"domains": {"NAME": {"type": "AppVM", "uuid": "…", "tags": ["…"],
//                         "default_dispvm": "NAME", "template_for_dispvms": false,
//                         "dispvm_template": "NAME"}, …}}
// Unknown keys are refused; a missing admin domain gets "dom0" (type AdminVM) added.
// `origin` names the text in error messages.
Result<DomainCatalogPtr> ParseJsonCatalog(std::string_view json, std::string_view origin);
// Reads and parses a JSON catalog file.
Result<DomainCatalogPtr> LoadJsonCatalog(const std::string& path);
// A catalog holding only the admin domain "dom0" (every other name is unknown).
DomainCatalogPtr AdminOnlyCatalog();

// One call to decide. All three strings are untrusted (they come from a domain).
struct Request {
  std::string source;           // domain name or uuid:U
  std::string intended_target;  // name, uuid:U, @adminvm, @default (or ""), @dispvm, @dispvm:NAME
  std::string service_and_arg;  // "SERVICE+ARG"; "SERVICE" alone means the empty argument
};

// The answer for one call.
struct Decision {
  Action action = Action::kDeny;
  std::string service;           // validated service name (no '+'), "" if invalid
  std::string argument;          // "+ARG" ("+" for the empty argument)
  std::string requested_target;  // the intended target, normalized (name, @adminvm, @default, @dispvm…)
  std::string target;            // allow/ask: where the call goes: NAME, @adminvm or @dispvm:TEMPLATE
  std::string target_uuid;       // uuid of `target` when it is a named domain and has one
  std::string default_target;    // ask: target preselected in the prompt, or ""
  std::string user;              // allow/ask: user= option, "" for the default user
  bool autostart = true;         // allow/ask: autostart= option
  bool notify = false;           // notify= option
  Location rule;                 // the rule that matched; file "" when none did
  std::string reason;            // why, in words; always set (notices for the user go here)
};

class PolicyImpl;

// A loaded, immutable policy. Safe to evaluate from many threads at once.
class Policy {
 public:
  // Loads DIR/*.policy (C-locale name order, names starting with '.' or not ending in
  // ".policy" ignored) and everything they include. Never fails: a policy with any error
  // is returned with ok() false, and every evaluation of it denies.
  static std::shared_ptr<const Policy> LoadDirectory(const std::string& dir);
  // Parses one policy text as if it were file `file_name` inside `base_dir` (relative
  // include paths are resolved against base_dir).
  static std::shared_ptr<const Policy> FromString(std::string_view text, const std::string& file_name,
                                                  const std::string& base_dir);
  ~Policy();

  // False when any file had an error; error() then says "file:line:column: what 'token'".
  bool ok() const;
  const std::string& error() const;
  // Number of rules after expanding includes.
  size_t rule_count() const;
  // True when a file or directory this policy was read from changed (or appeared, or
  // vanished) since it was loaded.
  bool Changed() const;

  // Decides one request: first matching rule wins, no match is deny. An `ask` result is
  // returned as is (see PolicyService for prompting).
  Decision Evaluate(const Request& request, const DomainCatalog& catalog) const;

  explicit Policy(std::unique_ptr<PolicyImpl> impl);  // use LoadDirectory / FromString

 private:
  std::unique_ptr<PolicyImpl> impl_;
};
using PolicyPtr = std::shared_ptr<const Policy>;

// What a prompt shows and what the user answered.
struct PromptRequest {
  std::string source;
  std::string service_and_arg;
  std::string target;          // proposed target; "@default" when the caller named none
  std::string default_target;  // preselected choice, or ""
};
struct PromptAnswer {
  bool allowed = false;
  std::string target;  // the target the user chose ("" = the proposed one)
};

// Asks a user. Ask() returns an error when no prompt can be shown at all.
class Prompter {
 public:
  virtual ~Prompter() = default;
  virtual Result<PromptAnswer> Ask(const PromptRequest& request) = 0;
};

// Runs a prompt program. With `program` set it is run as
//   PROGRAM SOURCE SERVICE+ARG TARGET DEFAULT_TARGET
// and allows when it exits 0; the first line of its stdout, if any, is the chosen target.
// Without `program`: when `display` is non-empty, zenity or else xmessage found in
// `search_path` is used; otherwise Ask() fails ("no prompt can be shown").
struct ProgramPrompterOptions {
  std::string program;
  std::string display;      // value of $DISPLAY ("" = no display)
  std::string search_path;  // value of $PATH used to find zenity / xmessage
};
std::unique_ptr<Prompter> MakeProgramPrompter(ProgramPrompterOptions options);
// Options from the environment ($DISPLAY, $PATH) plus an optional program.
ProgramPrompterOptions PrompterOptionsFromEnv(const std::string& program);

// One decision as recorded in the audit log.
struct AuditRecord {
  std::string source;
  std::string intended_target;
  std::string target;           // resolved target ("" when denied before resolution)
  std::string service_and_arg;
  Location rule;
  Action result = Action::kDeny;
  std::string reason;
};

// Append-only sqlite3 log of decisions (table `decisions`, WAL mode). Thread-safe.
class AuditLog {
 public:
  // Opens (creating if needed) the database at path.
  static Result<std::unique_ptr<AuditLog>> Open(const std::string& path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  // Appends one row: time (UTC, ISO 8601 with ms), source, intended_target, target,
  // service_and_arg, rule_file, rule_line, result, reason.
  Status Append(const AuditRecord& record);

 private:
  explicit AuditLog(void* db);
  std::mutex mu_;
  void* db_;  // sqlite3*
};

// Per-call switches from the policy socket protocol.
struct DecideFlags {
  bool just_evaluate = false;       // do not prompt: an `ask` stays ask
  bool assume_yes_for_ask = false;  // treat `ask` as allow (no prompt)
};

struct ServiceOptions {
  std::string policy_dir;
  DomainCatalogPtr catalog;             // required
  std::shared_ptr<Prompter> prompter;   // null: every `ask` that needs a prompt denies
  std::shared_ptr<AuditLog> audit;      // null: auditing explicitly disabled
};

// The whole decision path: policy (reloaded when its files change) + catalog + prompt +
// audit. Fails closed: a broken policy, an unshowable prompt or an unwritable audit log
// all end in deny. Thread-safe.
class PolicyService {
 public:
  explicit PolicyService(ServiceOptions options);
  // Decides, prompting for `ask` unless flags say otherwise, and audits the result.
  Decision Decide(const Request& request, DecideFlags flags = {});
  // The policy currently in force (reloaded first if its files changed).
  PolicyPtr CurrentPolicy();

 private:
  Decision ResolveAsk(const Request& request, const PolicyPtr& policy, Decision asked, DecideFlags flags);

  ServiceOptions options_;
  std::mutex mu_;
  PolicyPtr policy_;
};

}  // namespace odyssey::qrexec::policy
