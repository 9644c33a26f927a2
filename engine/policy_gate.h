// PolicyGate: asks the qrexec policy engine (qrexec/policy, library odyssey_qrexec_policy)
// whether a call odysseyd is about to make is allowed: source @adminvm (the host user) ->
// a new disposable, service+argument. The engine's templates are the policy's domain
// catalog (each one a disposable template, tagged `disposable-template`); the admin
// domain's default disposable template is the engine's default template. A rule that says
// `ask` denies (the engine has no one to ask). Every decision names the deciding rule's
// file:line, or why none could decide (no rule matched, a broken policy file).
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/result.h"

namespace odyssey::engine {

struct PolicyQuery {
  std::string source = "@adminvm";
  std::string target;     // e.g. "@dispvm" or "@dispvm:host"
  std::string service;    // e.g. "qubes.VMShell"
  std::string argument;   // without '+'
};

struct PolicyDecision {
  bool allow = false;
  std::string rule;    // "FILE:LINE" of the deciding rule, or why there is none
  std::string action;  // "allow" | "deny" | "ask"
  std::string reason;  // the policy engine's explanation, in words
};

class PolicyGate {
 public:
  virtual ~PolicyGate() = default;
  virtual Result<PolicyDecision> Decide(const PolicyQuery& q) = 0;
  virtual std::string engine_name() const = 0;
};

// What the gate needs to know about the engine's templates and named domains.
struct PolicyGateOptions {
  std::string policy_dir;         // a policy.d directory (files *.policy, C-locale order)
  std::string default_template;   // the admin domain's default disposable template
  // True when a template of this name exists. Called from the thread that calls Decide.
  // Null: only default_template exists.
  std::function<bool(const std::string&)> template_exists;
  // True when a named persistent domain (`odyssey vm start NAME`) of this name runs: the
  // policy sees it as an AppVM tagged `odyssey-vm`, a target like any Qubes domain. Called
  // from the thread that calls Decide. Null: there are none.
  std::function<bool(const std::string&)> named_domain_exists;
};

// Names of engine templates and named domains: exactly the names the qrexec policy accepts
// for a domain (its IsValidDomainName: a letter first, at most 31 bytes, the wire's domain
// name field) narrowed to [a-z0-9_-] (they are also file, cgroup and host names). So every
// template can be written as `@dispvm:NAME` and every named domain as a policy target.
bool IsValidEngineDomainName(const std::string& name);
inline constexpr const char* kEngineDomainNameRule =
    "1-31 characters of [a-z0-9_-] starting with a letter (the qrexec policy's domain names)";

std::unique_ptr<PolicyGate> MakePolicyGate(PolicyGateOptions options);

}  // namespace odyssey::engine
