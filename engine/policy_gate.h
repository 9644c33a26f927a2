// PolicyGate: asks the policy engine whether a call the engine is about to make is allowed
// (source @adminvm/dom0 -> a disposable, service+argument). With the qrexec policy module
// built (target odyssey_qrexec_policy) that module decides; without it a minimal reader of
// the same policy.d format does (first match wins, no match = deny), so a denial can
// always name the rule's file:line.
#pragma once

#include <memory>
#include <string>

#include "base/result.h"

namespace odyssey::engine {

struct PolicyQuery {
  std::string source = "@adminvm";
  std::string target;     // e.g. "@dispvm:host"
  std::string service;    // e.g. "qubes.VMShell"
  std::string argument;   // without '+'
};

struct PolicyDecision {
  bool allow = false;
  std::string rule;    // "FILE:LINE" of the deciding rule, or "(no rule matched)"
  std::string action;  // "allow" | "deny" | "ask"
};

class PolicyGate {
 public:
  virtual ~PolicyGate() = default;
  virtual Result<PolicyDecision> Decide(const PolicyQuery& q) = 0;
  virtual std::string engine_name() const = 0;
};

// policy_dir: a policy.d directory (files *.policy, sorted).
std::unique_ptr<PolicyGate> MakePolicyGate(const std::string& policy_dir);

}  // namespace odyssey::engine
