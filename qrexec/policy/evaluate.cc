// Evaluation: validate the untrusted request, find the first matching rule, resolve its
// target (redirect, @dispvm -> caller's default disposable template).
#include <algorithm>

#include "qrexec/policy/parser.h"
#include "qrexec/policy/policy.h"

namespace odyssey::qrexec::policy {
namespace {

// The intended target after validation.
struct Intended {
  enum class Kind { kDomain, kDefault, kDispVm, kDispVmTemplate };
  Kind kind = Kind::kDefault;
  DomainInfo domain;    // kDomain: the domain; kDispVmTemplate: the template
  std::string display;  // normalized spelling for requested_target
};

struct Context {
  const DomainCatalog& catalog;
  const DomainInfo& source;
};

Decision Deny(Decision d, std::string reason) {
  d.action = Action::kDeny;
  d.target.clear();
  d.target_uuid.clear();
  d.default_target.clear();
  d.user.clear();
  d.reason = std::move(reason);
  return d;
}

std::optional<DomainInfo> LookupDomain(const DomainCatalog& catalog, std::string_view name) {
  if (name == "@adminvm") return catalog.AdminDomain();
  if (name.substr(0, 5) == "uuid:") {
    if (!IsValidUuid(name.substr(5))) return std::nullopt;
    return catalog.FindByUuid(name.substr(5));
  }
  if (!IsValidDomainName(name)) return std::nullopt;
  return catalog.FindByName(name);
}

std::string DomainDisplay(const DomainInfo& d) { return d.is_admin() ? "@adminvm" : d.name; }

std::optional<DomainInfo> DispVmTemplate(const DomainCatalog& catalog, std::string_view name) {
  if (!IsValidDomainName(name)) return std::nullopt;
  auto t = catalog.FindByName(name);
  if (!t || !t->template_for_dispvms) return std::nullopt;
  return t;
}

Result<Intended> NormalizeTarget(const DomainCatalog& catalog, std::string_view untrusted) {
  Intended out;
  if (untrusted.empty() || untrusted == "@default") {
    out.kind = Intended::Kind::kDefault;
    out.display = "@default";
    return out;
  }
  if (untrusted == "@dispvm") {
    out.kind = Intended::Kind::kDispVm;
    out.display = "@dispvm";
    return out;
  }
  if (untrusted.substr(0, 8) == "@dispvm:") {
    auto t = DispVmTemplate(catalog, untrusted.substr(8));
    if (!t) return Error{"unknown disposable template", 0};
    out.kind = Intended::Kind::kDispVmTemplate;
    out.domain = *t;
    out.display = "@dispvm:" + t->name;
    return out;
  }
  auto d = LookupDomain(catalog, untrusted);
  if (!d) return Error{"unknown target domain", 0};
  out.kind = Intended::Kind::kDomain;
  out.domain = *d;
  out.display = DomainDisplay(*d);
  return out;
}

// The caller's default disposable template, if it has a usable one.
std::optional<DomainInfo> DefaultTemplate(const Context& ctx) {
  if (ctx.source.default_dispvm.empty()) return std::nullopt;
  return DispVmTemplate(ctx.catalog, ctx.source.default_dispvm);
}

bool MatchesDomain(const Token& t, const DomainInfo& d, const DomainCatalog& catalog) {
  switch (t.kind) {
    case TokenKind::kAny: return true;
    case TokenKind::kName: return d.name == t.value;
    case TokenKind::kUuid: return !d.uuid.empty() && d.uuid == t.value;
    case TokenKind::kAdminVm: return d.is_admin();
    case TokenKind::kAnyVm: return !d.is_admin();
    case TokenKind::kType: return d.type == t.value;
    case TokenKind::kTag: return d.has_tag(t.value);
    case TokenKind::kDispVmTemplate: return d.type == "DispVM" && d.dispvm_template == t.value;
    case TokenKind::kDispVmTag: {
      if (d.type != "DispVM" || d.dispvm_template.empty()) return false;
      auto tmpl = catalog.FindByName(d.dispvm_template);
      return tmpl && tmpl->has_tag(t.value);
    }
    case TokenKind::kDefault:
    case TokenKind::kDispVm:
      return false;
  }
  return false;
}

// Does a rule's @dispvm:… / @anyvm / * token match a new disposable of `tmpl`?
bool MatchesDisposable(const Token& t, const DomainInfo& tmpl) {
  switch (t.kind) {
    case TokenKind::kAny:
    case TokenKind::kAnyVm:
      return true;
    case TokenKind::kDispVmTemplate: return t.value == tmpl.name;
    case TokenKind::kDispVmTag: return tmpl.has_tag(t.value);
    default: return false;
  }
}

bool MatchesTarget(const Token& t, const Intended& target, const Context& ctx) {
  switch (target.kind) {
    case Intended::Kind::kDomain:
      return MatchesDomain(t, target.domain, ctx.catalog);
    case Intended::Kind::kDefault:
      return t.kind == TokenKind::kAny || t.kind == TokenKind::kDefault;
    case Intended::Kind::kDispVmTemplate:
      return MatchesDisposable(t, target.domain);
    case Intended::Kind::kDispVm: {
      if (t.kind == TokenKind::kDispVm || t.kind == TokenKind::kAny || t.kind == TokenKind::kAnyVm) return true;
      auto tmpl = DefaultTemplate(ctx);
      return tmpl && MatchesDisposable(t, *tmpl);
    }
  }
  return false;
}

bool Matches(const Rule& rule, std::string_view service, std::string_view argument, const Intended& target,
             const Context& ctx) {
  if (rule.service != "*" && rule.service != service) return false;
  if (rule.argument != "*" && rule.argument != argument) return false;
  if (!MatchesDomain(rule.source, ctx.source, ctx.catalog)) return false;
  return MatchesTarget(rule.target, target, ctx);
}

// Turns a target= / default_target= token or the intended target into a concrete target.
struct Resolved {
  std::string target;
  std::string uuid;
};

Result<Resolved> ResolveToken(const Token& t, const Context& ctx) {
  switch (t.kind) {
    case TokenKind::kDispVm: {
      auto tmpl = DefaultTemplate(ctx);
      if (!tmpl) return Error{"the caller has no default disposable template", 0};
      return Resolved{"@dispvm:" + tmpl->name, ""};
    }
    case TokenKind::kDispVmTemplate: {
      auto tmpl = DispVmTemplate(ctx.catalog, t.value);
      if (!tmpl) return Error{"'" + t.text + "' is not a disposable template", 0};
      return Resolved{"@dispvm:" + tmpl->name, ""};
    }
    case TokenKind::kAdminVm: {
      DomainInfo admin = ctx.catalog.AdminDomain();
      return Resolved{"@adminvm", admin.uuid};
    }
    case TokenKind::kName:
    case TokenKind::kUuid: {
      auto d = t.kind == TokenKind::kName ? ctx.catalog.FindByName(t.value) : ctx.catalog.FindByUuid(t.value);
      if (!d) return Error{"target '" + t.text + "' is not a known domain", 0};
      return Resolved{DomainDisplay(*d), d->uuid};
    }
    default:
      return Error{"'" + t.text + "' cannot be a call target", 0};
  }
}

Result<Resolved> ResolveIntended(const Intended& target, const Context& ctx) {
  switch (target.kind) {
    case Intended::Kind::kDomain:
      return Resolved{DomainDisplay(target.domain), target.domain.uuid};
    case Intended::Kind::kDispVmTemplate:
      return Resolved{"@dispvm:" + target.domain.name, ""};
    case Intended::Kind::kDispVm: {
      Token t;
      t.kind = TokenKind::kDispVm;
      t.text = "@dispvm";
      return ResolveToken(t, ctx);
    }
    case Intended::Kind::kDefault:
      return Error{"the caller named no target and the rule gives no target=", 0};
  }
  return Error{"unreachable", 0};
}

Decision Resolve(const Rule& rule, const Intended& target, const Context& ctx, Decision d) {
  d.rule = rule.where;
  d.notify = rule.notify.value_or(false);
  if (rule.action == Action::kDeny) return Deny(d, "denied by rule " + rule.where.ToString());
  d.user = rule.user;
  d.autostart = rule.autostart.value_or(true);
  Result<Resolved> resolved = rule.redirect ? ResolveToken(*rule.redirect, ctx) : ResolveIntended(target, ctx);
  if (rule.action == Action::kAsk) {
    if (rule.default_target) {
      auto def = ResolveToken(*rule.default_target, ctx);
      if (def.ok()) d.default_target = def->target;
    }
    d.action = Action::kAsk;
    if (resolved.ok()) {
      d.target = resolved->target;
      d.target_uuid = resolved->uuid;
    } else if (!rule.redirect && target.kind == Intended::Kind::kDefault) {
      d.target = "@default";  // the user picks one in the prompt
    } else {
      return Deny(d, "rule " + rule.where.ToString() + " matched but " + resolved.error().message);
    }
    d.reason = "rule " + rule.where.ToString() + " says ask";
    return d;
  }
  if (!resolved.ok()) return Deny(d, "rule " + rule.where.ToString() + " matched but " + resolved.error().message);
  d.action = Action::kAllow;
  d.target = resolved->target;
  d.target_uuid = resolved->uuid;
  d.reason = "allowed by rule " + rule.where.ToString();
  return d;
}

}  // namespace

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kAllow: return "allow";
    case Action::kDeny: return "deny";
    case Action::kAsk: return "ask";
  }
  return "deny";
}

std::string Location::ToString(bool with_column) const {
  if (file.empty()) return "none";
  std::string s = file;
  s += ':';
  s += std::to_string(line);
  if (with_column) {
    s += ':';
    s += std::to_string(column);
  }
  return s;
}

bool DomainInfo::has_tag(std::string_view tag) const {
  return std::find(tags.begin(), tags.end(), tag) != tags.end();
}

Policy::Policy(std::unique_ptr<PolicyImpl> impl) : impl_(std::move(impl)) {}
Policy::~Policy() = default;

std::shared_ptr<const Policy> Policy::LoadDirectory(const std::string& dir) {
  auto impl = std::make_unique<PolicyImpl>();
  LoadDirectoryInto(dir, impl.get());
  return std::make_shared<const Policy>(std::move(impl));
}

std::shared_ptr<const Policy> Policy::FromString(std::string_view text, const std::string& file_name,
                                                 const std::string& base_dir) {
  auto impl = std::make_unique<PolicyImpl>();
  LoadTextInto(text, file_name, base_dir, impl.get());
  return std::make_shared<const Policy>(std::move(impl));
}

bool Policy::ok() const { return !impl_->error_.has_value(); }
const std::string& Policy::error() const { return impl_->error_text_; }
size_t Policy::rule_count() const { return impl_->rules_.size(); }

bool Policy::Changed() const {
  for (const auto& stamp : impl_->stamps_) {
    if (!SameStamp(stamp, TakeStamp(stamp.path))) return true;
  }
  return false;
}

Decision Policy::Evaluate(const Request& request, const DomainCatalog& catalog) const {
  Decision d;
  std::string_view sa = request.service_and_arg;
  size_t plus = sa.find('+');
  std::string_view service = sa.substr(0, plus);
  std::string argument = plus == std::string_view::npos ? "+" : std::string(sa.substr(plus));
  if (!IsValidServiceName(service) || !IsValidArgument(argument)) return Deny(d, "invalid service name or argument");
  d.service = std::string(service);
  d.argument = argument;
  if (!ok()) return Deny(d, "policy error: " + impl_->error_text_);
  auto source = LookupDomain(catalog, request.source);
  if (!source) return Deny(d, "unknown source domain");
  auto target = NormalizeTarget(catalog, request.intended_target);
  if (!target.ok()) return Deny(d, target.error().message);
  d.requested_target = target->display;
  Context ctx{catalog, *source};
  for (const Rule& rule : impl_->rules_) {
    if (Matches(rule, service, argument, *target, ctx)) return Resolve(rule, *target, ctx, d);
  }
  return Deny(d, "no rule matched");
}

}  // namespace odyssey::qrexec::policy
