// PolicyService: the whole decision path (reload, evaluate, prompt, audit), fail-closed.
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {
namespace {

Decision MakeDeny(Decision d, std::string reason) {
  d.action = Action::kDeny;
  d.target.clear();
  d.target_uuid.clear();
  d.default_target.clear();
  d.user.clear();
  d.reason = std::move(reason);
  return d;
}

}  // namespace

PolicyService::PolicyService(ServiceOptions options) : options_(std::move(options)) {
  ODYSSEY_CHECK(options_.catalog != nullptr);
}

PolicyPtr PolicyService::CurrentPolicy() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!policy_ || policy_->Changed()) policy_ = Policy::LoadDirectory(options_.policy_dir);
  return policy_;
}

Decision PolicyService::ResolveAsk(const Request& request, const PolicyPtr& policy, Decision asked,
                                   DecideFlags flags) {
  std::string proposed = asked.target == "@default" ? asked.default_target : asked.target;
  if (flags.assume_yes_for_ask) {
    if (proposed.empty()) return MakeDeny(asked, "ask assumed yes, but the caller named no target and the rule has no default_target");
    asked.action = Action::kAllow;
    if (proposed != asked.target) asked.target_uuid.clear();
    asked.target = proposed;
    asked.reason = "ask at " + asked.rule.ToString() + " assumed yes";
    return asked;
  }
  if (flags.just_evaluate) return asked;
  if (!options_.prompter) return MakeDeny(asked, "ask denied: no prompt can be shown (no prompt program configured)");
  auto answer = options_.prompter->Ask({request.source, request.service_and_arg, asked.target, asked.default_target});
  if (!answer.ok()) return MakeDeny(asked, "ask denied: " + answer.error().message);
  if (!answer->allowed) return MakeDeny(asked, "ask at " + asked.rule.ToString() + ": the user refused");
  std::string chosen = answer->target.empty() ? proposed : answer->target;
  if (chosen.empty() || chosen == "@default") return MakeDeny(asked, "ask: the user chose no target");
  if (chosen == asked.target || chosen == asked.default_target) {
    // The rule itself named this target (as target= or default_target=).
    if (chosen != asked.target) {
      auto domain = options_.catalog->FindByName(chosen);
      asked.target_uuid = domain ? domain->uuid : "";
      asked.target = chosen;
    }
    asked.action = Action::kAllow;
    asked.reason = "ask at " + asked.rule.ToString() + ": the user allowed target " + asked.target;
    return asked;
  }
  // Any other choice must itself be allowed or askable for this call.
  Request again = request;
  again.intended_target = chosen;
  Decision second = policy->Evaluate(again, *options_.catalog);
  if (second.action == Action::kDeny) {
    return MakeDeny(asked, "ask: the chosen target '" + chosen + "' is not permitted: " + second.reason);
  }
  asked.action = Action::kAllow;
  if (second.target != asked.target) {
    asked.target = second.target;
    asked.target_uuid = second.target_uuid;
  }
  asked.reason = "ask at " + asked.rule.ToString() + ": the user allowed target " + asked.target;
  return asked;
}

Decision PolicyService::Decide(const Request& request, DecideFlags flags) {
  PolicyPtr policy = CurrentPolicy();
  Decision d = policy->Evaluate(request, *options_.catalog);
  if (d.action == Action::kAsk) d = ResolveAsk(request, policy, std::move(d), flags);
  if (options_.audit) {
    AuditRecord record{request.source, request.intended_target, d.target, request.service_and_arg,
                       d.rule,         d.action,                d.reason};
    Status st = options_.audit->Append(record);
    if (!st.ok()) return MakeDeny(d, "denied because the audit log cannot be written: " + st.error().message);
  }
  return d;
}

}  // namespace odyssey::qrexec::policy
