#include "engine/policy_gate.h"

#include <utility>

#include "qrexec/policy/policy.h"

namespace odyssey::engine {
namespace {

namespace qp = odyssey::qrexec::policy;

// The engine's domains as the policy sees them: the admin domain "dom0" whose default
// disposable template is the engine's default, one disposable template per engine
// template, and one AppVM per running named domain (`odyssey vm start`).
class TemplateCatalog final : public qp::DomainCatalog {
 public:
  explicit TemplateCatalog(PolicyGateOptions* options) : options_(options) {}

  std::optional<qp::DomainInfo> FindByName(std::string_view name) const override {
    std::string n(name);
    if (n == "dom0") return AdminDomain();
    bool exists = options_->template_exists ? options_->template_exists(n)
                                            : n == options_->default_template;
    qp::DomainInfo d;
    d.name = n;
    d.type = "AppVM";
    if (exists) {
      d.tags = {"disposable-template"};
      d.template_for_dispvms = true;
      return d;
    }
    if (options_->named_domain_exists && options_->named_domain_exists(n)) {
      d.tags = {"odyssey-vm"};
      return d;
    }
    return std::nullopt;
  }
  std::optional<qp::DomainInfo> FindByUuid(std::string_view) const override { return std::nullopt; }
  qp::DomainInfo AdminDomain() const override {
    qp::DomainInfo d;
    d.name = "dom0";
    d.type = "AdminVM";
    d.default_dispvm = options_->default_template;
    return d;
  }

 private:
  PolicyGateOptions* options_;  // owned by the gate, outlives the catalog's uses
};

class QrexecPolicyGate final : public PolicyGate {
 public:
  explicit QrexecPolicyGate(PolicyGateOptions options)
      : options_(std::move(options)),
        catalog_(std::make_shared<TemplateCatalog>(&options_)),
        // No prompter (ask denies) and no audit log: the engine records decisions itself.
        service_(qp::ServiceOptions{options_.policy_dir, catalog_, nullptr, nullptr}) {}

  std::string engine_name() const override { return "qrexec-policy"; }

  Result<PolicyDecision> Decide(const PolicyQuery& q) override {
    qp::Request r{q.source, q.target, q.service + "+" + q.argument};
    qp::Decision d = service_.Decide(r, qp::DecideFlags{.just_evaluate = true});
    PolicyDecision out;
    out.action = std::string(qp::ActionName(d.action));
    out.allow = d.action == qp::Action::kAllow;
    out.reason = d.reason;
    if (!d.rule.file.empty()) {
      out.rule = d.rule.ToString();
    } else {
      auto policy = service_.CurrentPolicy();
      out.rule = policy && !policy->ok() ? "(policy error: " + policy->error() + ")"
                                         : "(no rule matched in " + options_.policy_dir + ": " +
                                               d.reason + ")";
    }
    return out;
  }

 private:
  PolicyGateOptions options_;
  std::shared_ptr<TemplateCatalog> catalog_;
  qp::PolicyService service_;
};

}  // namespace

bool IsValidEngineDomainName(const std::string& name) {
  if (!qp::IsValidDomainName(name)) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) return false;
  return true;
}

std::unique_ptr<PolicyGate> MakePolicyGate(PolicyGateOptions options) {
  return std::make_unique<QrexecPolicyGate>(std::move(options));
}

}  // namespace odyssey::engine
