// Evaluation: every token matched against every kind of caller and target, first match
// wins, no match denies, target= redirects, @dispvm resolves to the caller's template.
#include <gtest/gtest.h>

#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"

namespace odyssey::qrexec::policy {
namespace {

DomainCatalogPtr Catalog() {
  static DomainCatalogPtr catalog = [] {
    auto c = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture");
    if (!c.ok()) {
      ADD_FAILURE() << c.error().message;
      return AdminOnlyCatalog();
    }
    return c.value();
  }();
  return catalog;
}

Decision Eval(const std::string& text, const std::string& source, const std::string& target,
              const std::string& service = "qubes.Foo+") {
  auto policy = Policy::FromString(text, "p.policy", "/nonexistent");
  EXPECT_TRUE(policy->ok()) << policy->error();
  return policy->Evaluate({source, target, service}, *Catalog());
}

struct EvalCase {
  const char* name;
  const char* policy;  // the rule under test is followed by nothing: no match must deny
  const char* source;
  const char* target;
  const char* service;
  Action action;
  const char* resolved;  // expected Decision::target
  int line;              // expected rule line, 0 = none
};

class EvalTest : public ::testing::TestWithParam<EvalCase> {};

TEST_P(EvalTest, Decides) {
  const auto& c = GetParam();
  Decision d = Eval(c.policy, c.source, c.target, c.service);
  EXPECT_EQ(d.action, c.action) << d.reason;
  EXPECT_EQ(d.target, c.resolved) << d.reason;
  EXPECT_EQ(d.rule.line, c.line) << d.reason;
  EXPECT_FALSE(d.reason.empty());
}

std::string CaseName(const ::testing::TestParamInfo<EvalCase>& info) { return info.param.name; }

constexpr Action A = Action::kAllow;
constexpr Action D = Action::kDeny;
constexpr Action Q = Action::kAsk;

INSTANTIATE_TEST_SUITE_P(
    Policy, EvalTest,
    ::testing::Values(
        // literal names
        EvalCase{"NameMatches", "qubes.Foo * work vault allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"NameOtherSourceNoMatch", "qubes.Foo * work vault allow", "personal", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"NameOtherTargetNoMatch", "qubes.Foo * work vault allow", "work", "personal", "qubes.Foo+", D, "", 0},
        EvalCase{"UnknownSourceDenied", "* * * * allow", "nosuch", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"UnknownTargetDenied", "* * * * allow", "work", "nosuch", "qubes.Foo+", D, "", 0},
        EvalCase{"BadSourceSyntaxDenied", "* * * * allow", "wo rk", "vault", "qubes.Foo+", D, "", 0},
        // * and @anyvm
        EvalCase{"StarMatchesAdminSource", "qubes.Foo * * vault allow", "dom0", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"StarMatchesAdminTarget", "qubes.Foo * work * allow", "work", "dom0", "qubes.Foo+", A, "@adminvm", 1},
        EvalCase{"StarMatchesDefault", "qubes.Foo * work * allow target=vault", "work", "@default", "qubes.Foo+", A, "vault", 1},
        EvalCase{"AnyVmSkipsAdminSource", "qubes.Foo * @anyvm vault allow", "dom0", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"AnyVmMatchesSource", "qubes.Foo * @anyvm vault allow", "untrusted", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"AnyVmSkipsAdminTarget", "qubes.Foo * work @anyvm allow", "work", "@adminvm", "qubes.Foo+", D, "", 0},
        EvalCase{"AnyVmSkipsDefault", "qubes.Foo * work @anyvm allow", "work", "", "qubes.Foo+", D, "", 0},
        EvalCase{"AnyVmMatchesDispVm", "qubes.Foo * work @anyvm allow", "work", "@dispvm", "qubes.Foo+", A, "@dispvm:default-dvm", 1},
        EvalCase{"AnyVmMatchesDispVmTemplate", "qubes.Foo * work @anyvm allow", "work", "@dispvm:personal-dvm", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        // @adminvm
        EvalCase{"AdminVmSource", "qubes.Foo * @adminvm vault allow", "dom0", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"AdminVmSourceSpelledKeyword", "qubes.Foo * @adminvm vault allow", "@adminvm", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"AdminVmSourceNotOthers", "qubes.Foo * @adminvm vault allow", "work", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"AdminVmTargetByName", "qubes.Foo * work @adminvm allow", "work", "dom0", "qubes.Foo+", A, "@adminvm", 1},
        EvalCase{"AdminVmTargetByKeyword", "qubes.Foo * work @adminvm allow", "work", "@adminvm", "qubes.Foo+", A, "@adminvm", 1},
        EvalCase{"AdminNameRuleMatchesKeyword", "qubes.Foo * work dom0 allow", "work", "@adminvm", "qubes.Foo+", A, "@adminvm", 1},
        // @default
        EvalCase{"DefaultMatchesEmpty", "qubes.Foo * work @default allow target=vault", "work", "", "qubes.Foo+", A, "vault", 1},
        EvalCase{"DefaultMatchesKeyword", "qubes.Foo * work @default allow target=vault", "work", "@default", "qubes.Foo+", A, "vault", 1},
        EvalCase{"DefaultNotNamed", "qubes.Foo * work @default allow target=vault", "work", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"DefaultAllowWithoutTargetDenies", "qubes.Foo * work @default allow", "work", "@default", "qubes.Foo+", D, "", 1},
        EvalCase{"DefaultAskWithoutTargetAsks", "qubes.Foo * work @default ask", "work", "@default", "qubes.Foo+", Q, "@default", 1},
        // @type and @tag
        EvalCase{"TypeSource", "qubes.Foo * @type:TemplateVM vault allow", "fedora", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"TypeSourceOther", "qubes.Foo * @type:TemplateVM vault allow", "work", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"TypeTarget", "qubes.Foo * work @type:TemplateVM allow", "work", "fedora", "qubes.Foo+", A, "fedora", 1},
        EvalCase{"TypeAdminVm", "qubes.Foo * @type:AdminVM vault allow", "dom0", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"TypeDispVmSource", "qubes.Foo * @type:DispVM vault allow", "disp1234", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"TagSource", "qubes.Foo * @tag:work vault allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"TagSourceMissing", "qubes.Foo * @tag:work vault allow", "personal", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"TagTarget", "qubes.Foo * work @tag:trusted allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"TagTargetMissing", "qubes.Foo * work @tag:trusted allow", "work", "personal", "qubes.Foo+", D, "", 0},
        EvalCase{"TagTargetNotDispVm", "qubes.Foo * work @tag:disposable-template allow", "work", "@dispvm", "qubes.Foo+", D, "", 0},
        // uuid:
        EvalCase{"UuidSource", "qubes.Foo * uuid:11111111-1111-4111-8111-111111111111 vault allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"UuidSourceRequestByUuid", "qubes.Foo * work vault allow", "uuid:11111111-1111-4111-8111-111111111111", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"UuidTarget", "qubes.Foo * work uuid:22222222-2222-4222-8222-222222222222 allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"UuidTargetUnknown", "qubes.Foo * work vault allow", "work", "uuid:22222222-2222-4222-8222-22222222222A", "qubes.Foo+", D, "", 0},
        EvalCase{"UuidTargetRequestByUuid", "qubes.Foo * work vault allow", "work", "uuid:22222222-2222-4222-8222-222222222222", "qubes.Foo+", A, "vault", 1},
        EvalCase{"UuidNoMatch", "qubes.Foo * uuid:33333333-3333-4333-8333-333333333333 vault allow", "work", "vault", "qubes.Foo+", D, "", 0},
        // @dispvm family
        EvalCase{"DispVmResolvesToCallerTemplate", "qubes.Foo * work @dispvm allow", "work", "@dispvm", "qubes.Foo+", A, "@dispvm:default-dvm", 1},
        EvalCase{"DispVmOtherCallerTemplate", "qubes.Foo * personal @dispvm allow", "personal", "@dispvm", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"DispVmCallerWithoutTemplate", "qubes.Foo * untrusted @dispvm allow", "untrusted", "@dispvm", "qubes.Foo+", D, "", 1},
        EvalCase{"DispVmRuleNotNamedTemplate", "qubes.Foo * work @dispvm allow", "work", "@dispvm:default-dvm", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTemplateRuleMatchesDispVmRequest", "qubes.Foo * work @dispvm:default-dvm allow", "work", "@dispvm", "qubes.Foo+", A, "@dispvm:default-dvm", 1},
        EvalCase{"DispVmTemplateRuleOtherTemplate", "qubes.Foo * work @dispvm:personal-dvm allow", "work", "@dispvm", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTemplateExact", "qubes.Foo * work @dispvm:personal-dvm allow", "work", "@dispvm:personal-dvm", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"DispVmTemplateNotATemplate", "* * * * allow", "work", "@dispvm:vault", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTagRule", "qubes.Foo * work @dispvm:@tag:personal allow", "work", "@dispvm:personal-dvm", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"DispVmTagRuleOtherTag", "qubes.Foo * work @dispvm:@tag:personal allow", "work", "@dispvm:default-dvm", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTagRuleMatchesDefault", "qubes.Foo * personal @dispvm:@tag:personal allow", "personal", "@dispvm", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"DispVmTemplateSource", "qubes.Foo * @dispvm:default-dvm vault allow", "disp1234", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"DispVmTemplateSourceOther", "qubes.Foo * @dispvm:default-dvm vault allow", "disp5678", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTemplateSourceNotDisposable", "qubes.Foo * @dispvm:default-dvm vault allow", "default-dvm", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"DispVmTagSource", "qubes.Foo * @dispvm:@tag:personal vault allow", "disp5678", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"DispVmTagSourceOther", "qubes.Foo * @dispvm:@tag:personal vault allow", "disp1234", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"AdminDispVm", "qubes.Foo * @adminvm @dispvm allow", "dom0", "@dispvm", "qubes.Foo+", A, "@dispvm:default-dvm", 1},
        // redirect target=
        EvalCase{"RedirectName", "qubes.Foo * work @anyvm allow target=vault", "work", "personal", "qubes.Foo+", A, "vault", 1},
        EvalCase{"RedirectAdmin", "qubes.Foo * work @default allow target=@adminvm", "work", "", "qubes.Foo+", A, "@adminvm", 1},
        EvalCase{"RedirectDispVm", "qubes.Foo * work @default allow target=@dispvm", "work", "", "qubes.Foo+", A, "@dispvm:default-dvm", 1},
        EvalCase{"RedirectDispVmOfCaller", "qubes.Foo * * @default allow target=@dispvm", "personal", "", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"RedirectDispVmTemplate", "qubes.Foo * work @default allow target=@dispvm:personal-dvm", "work", "", "qubes.Foo+", A, "@dispvm:personal-dvm", 1},
        EvalCase{"RedirectDispVmNotTemplate", "qubes.Foo * work @default allow target=@dispvm:vault", "work", "", "qubes.Foo+", D, "", 1},
        EvalCase{"RedirectUuid", "qubes.Foo * work @default allow target=uuid:22222222-2222-4222-8222-222222222222", "work", "", "qubes.Foo+", A, "vault", 1},
        EvalCase{"RedirectUnknownName", "qubes.Foo * work @default allow target=nosuch", "work", "", "qubes.Foo+", D, "", 1},
        EvalCase{"RedirectAskKeepsAsk", "qubes.Foo * work @default ask target=vault", "work", "", "qubes.Foo+", Q, "vault", 1},
        // services and arguments
        EvalCase{"ServiceStar", "* * work vault allow", "work", "vault", "any.Service+x", A, "vault", 1},
        EvalCase{"ServiceOther", "qubes.Foo * work vault allow", "work", "vault", "qubes.Bar+", D, "", 0},
        EvalCase{"ArgumentStar", "qubes.Foo * work vault allow", "work", "vault", "qubes.Foo+anything", A, "vault", 1},
        EvalCase{"ArgumentExact", "qubes.Foo +x work vault allow", "work", "vault", "qubes.Foo+x", A, "vault", 1},
        EvalCase{"ArgumentOther", "qubes.Foo +x work vault allow", "work", "vault", "qubes.Foo+y", D, "", 0},
        EvalCase{"ArgumentEmpty", "qubes.Foo + work vault allow", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"ArgumentEmptyNoPlus", "qubes.Foo + work vault allow", "work", "vault", "qubes.Foo", A, "vault", 1},
        EvalCase{"ArgumentEmptyVsGiven", "qubes.Foo + work vault allow", "work", "vault", "qubes.Foo+x", D, "", 0},
        EvalCase{"ArgumentWithPlus", "qubes.Foo +a+b work vault allow", "work", "vault", "qubes.Foo+a+b", A, "vault", 1},
        EvalCase{"InvalidServiceDenied", "* * * * allow", "work", "vault", "bad/service+", D, "", 0},
        EvalCase{"EmptyServiceDenied", "* * * * allow", "work", "vault", "+x", D, "", 0},
        EvalCase{"InvalidArgumentDenied", "* * * * allow", "work", "vault", "qubes.Foo+a b", D, "", 0},
        // ordering: first match wins
        EvalCase{"FirstMatchDeny", "qubes.Foo * work vault deny\nqubes.Foo * work vault allow", "work", "vault", "qubes.Foo+", D, "", 1},
        EvalCase{"FirstMatchAllow", "qubes.Foo * work vault allow\nqubes.Foo * work vault deny", "work", "vault", "qubes.Foo+", A, "vault", 1},
        EvalCase{"SkipsNonMatching", "qubes.Foo * personal vault deny\n# c\n\nqubes.Foo * work vault allow", "work", "vault", "qubes.Foo+", A, "vault", 4},
        EvalCase{"SpecificBeforeGeneric", "qubes.Foo +x * * deny\nqubes.Foo * * * allow", "work", "vault", "qubes.Foo+x", D, "", 1},
        EvalCase{"GenericAfterSpecific", "qubes.Foo +x * * deny\nqubes.Foo * * * allow", "work", "vault", "qubes.Foo+y", A, "vault", 2},
        EvalCase{"NoMatchDenies", "qubes.Bar * * * allow", "work", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"EmptyPolicyDenies", "", "work", "vault", "qubes.Foo+", D, "", 0},
        EvalCase{"AskResult", "qubes.Foo * work vault ask", "work", "vault", "qubes.Foo+", Q, "vault", 1}),
    CaseName);

TEST(Evaluate, OptionsCarriedIntoDecision) {
  Decision d = Eval("qubes.Foo * work vault allow user=root autostart=no notify=yes", "work", "vault");
  EXPECT_EQ(d.action, Action::kAllow);
  EXPECT_EQ(d.user, "root");
  EXPECT_FALSE(d.autostart);
  EXPECT_TRUE(d.notify);
  EXPECT_EQ(d.target_uuid, "22222222-2222-4222-8222-222222222222");
  EXPECT_EQ(d.requested_target, "vault");
  EXPECT_EQ(d.service, "qubes.Foo");
  EXPECT_EQ(d.argument, "+");
  EXPECT_EQ(d.rule.ToString(), "p.policy:1");
}

TEST(Evaluate, DefaultsWhenNoOptions) {
  Decision d = Eval("qubes.Foo * work vault allow", "work", "vault");
  EXPECT_EQ(d.user, "");
  EXPECT_TRUE(d.autostart);
  EXPECT_FALSE(d.notify);
}

TEST(Evaluate, DenyNotifyOption) {
  Decision d = Eval("qubes.Foo * work vault deny notify=yes", "work", "vault");
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_TRUE(d.notify);
  EXPECT_EQ(d.rule.line, 1);
}

TEST(Evaluate, AskDefaultTargetResolved) {
  Decision d = Eval("qubes.Foo * work @default ask default_target=@dispvm", "work", "");
  EXPECT_EQ(d.action, Action::kAsk);
  EXPECT_EQ(d.target, "@default");
  EXPECT_EQ(d.default_target, "@dispvm:default-dvm");
  Decision d2 = Eval("qubes.Foo * work @default ask default_target=vault", "work", "");
  EXPECT_EQ(d2.default_target, "vault");
}

TEST(Evaluate, RequestedTargetNormalized) {
  EXPECT_EQ(Eval("* * * * allow", "work", "dom0").requested_target, "@adminvm");
  EXPECT_EQ(Eval("* * * * deny", "work", "").requested_target, "@default");
  EXPECT_EQ(Eval("* * * * deny", "work", "uuid:22222222-2222-4222-8222-222222222222").requested_target, "vault");
  EXPECT_EQ(Eval("* * * * deny", "work", "@dispvm").requested_target, "@dispvm");
}

TEST(Evaluate, BrokenPolicyDeniesEverything) {
  auto policy = Policy::FromString("* * * * allow\nqubes.Foo * work vault maybe", "p.policy", "/");
  ASSERT_FALSE(policy->ok());
  Decision d = policy->Evaluate({"work", "vault", "qubes.Foo+"}, *Catalog());
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("p.policy:2:24"), std::string::npos) << d.reason;
}

TEST(Evaluate, AdminOnlyCatalogKnowsOnlyDom0) {
  auto policy = Policy::FromString("* * * * allow", "p.policy", "/");
  auto catalog = AdminOnlyCatalog();
  EXPECT_EQ(policy->Evaluate({"dom0", "dom0", "a+"}, *catalog).action, Action::kAllow);
  EXPECT_EQ(policy->Evaluate({"work", "dom0", "a+"}, *catalog).action, Action::kDeny);
}

}  // namespace
}  // namespace odyssey::qrexec::policy
