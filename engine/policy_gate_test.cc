#include "engine/policy_gate.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

namespace odyssey::engine {
namespace {

std::unique_ptr<PolicyGate> Gate(const std::string& dir, std::set<std::string> templates = {"host"}) {
  return MakePolicyGate({dir, "host", [templates](const std::string& t) { return templates.count(t) > 0; }});
}

std::string TempDir() {
  char tmpl[] = "/tmp/odyssey-policy-XXXXXX";
  if (!mkdtemp(tmpl)) ::abort();
  return tmpl;
}

TEST(PolicyGateTest, ShippedPolicyAllowsEngineCalls) {
  auto gate = Gate(std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d");
  EXPECT_EQ(gate->engine_name(), "qrexec-policy");
  for (const char* svc : {"qubes.VMShell", "qubes.OpenInVM", "qubes.OpenURL", "odyssey.RenderPDF",
                          "odyssey.RenderImage"}) {
    for (const char* target : {"@dispvm", "@dispvm:host"}) {
      auto d = gate->Decide({"@adminvm", target, svc, ""});
      ASSERT_TRUE(d.ok()) << d.error().message;
      EXPECT_TRUE(d->allow) << svc << " -> " << target << " rule " << d->rule << ": " << d->reason;
      EXPECT_NE(d->rule.find("50-odyssey-engine.policy:"), std::string::npos) << d->rule;
    }
  }
  auto d = gate->Decide({"@adminvm", "@dispvm", "qubes.Filecopy", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  // A template the engine does not have is no disposable template for the policy.
  d = gate->Decide({"@adminvm", "@dispvm:nosuch", "qubes.VMShell", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow) << d->rule;
}

TEST(PolicyGateTest, DenyRuleNamesFileAndLine) {
  std::string dir = TempDir();
  {
    std::ofstream f(dir + "/10-deny.policy");
    f << "# deny URLs\n\nqubes.OpenURL * @adminvm @anyvm deny\n";
    std::ofstream g(dir + "/50-allow.policy");
    g << "* * @adminvm @anyvm allow\n";
  }
  auto gate = Gate(dir);
  auto d = gate->Decide({"@adminvm", "@dispvm:host", "qubes.OpenURL", ""});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_FALSE(d->allow);
  EXPECT_EQ(d->rule, dir + "/10-deny.policy:3");
  d = gate->Decide({"@adminvm", "@dispvm:host", "qubes.VMShell", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allow) << d->rule << ": " << d->reason;
  std::filesystem::remove_all(dir);
}

TEST(PolicyGateTest, QubesFeaturesOfTheRealPolicyEngine) {
  std::string dir = TempDir();
  {
    std::ofstream f(dir + "/20-x.policy");
    f << "qubes.VMShell +secret @adminvm @anyvm deny\n"
         "qubes.VMShell * @adminvm @dispvm:@tag:disposable-template allow\n"
         "qubes.OpenURL * @adminvm @dispvm ask\n";
  }
  auto gate = Gate(dir, {"host", "work"});
  auto d = gate->Decide({"@adminvm", "@dispvm:work", "qubes.VMShell", "secret"});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  EXPECT_EQ(d->rule, dir + "/20-x.policy:1");
  d = gate->Decide({"@adminvm", "@dispvm:work", "qubes.VMShell", "other"});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allow) << d->rule << ": " << d->reason;
  EXPECT_EQ(d->rule, dir + "/20-x.policy:2");
  // `ask` denies: the engine has no one to ask.
  d = gate->Decide({"@adminvm", "@dispvm", "qubes.OpenURL", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  EXPECT_EQ(d->action, "ask");
  // No rule: deny, and the reply says so.
  d = gate->Decide({"@adminvm", "@dispvm", "qubes.OpenInVM", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  EXPECT_NE(d->rule.find("no rule matched"), std::string::npos) << d->rule;
  std::filesystem::remove_all(dir);
}

TEST(PolicyGateTest, BrokenPolicyDeniesAndNamesTheError) {
  std::string dir = TempDir();
  { std::ofstream(dir + "/10-bad.policy") << "qubes.VMShell * @adminvm @dispvm allw\n"; }
  auto d = Gate(dir)->Decide({"@adminvm", "@dispvm", "qubes.VMShell", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  EXPECT_NE(d->rule.find("10-bad.policy:1"), std::string::npos) << d->rule;
  std::filesystem::remove_all(dir);
}

TEST(PolicyGateTest, EngineNamesAreExactlyNamesThePolicyCanWrite) {
  const std::string longest(31, 'a'), too_long(32, 'a');
  for (const std::string& name : {std::string("a"), std::string("work"), std::string("fedora-41_dvm"),
                                  std::string("x9"), longest})
    EXPECT_TRUE(IsValidEngineDomainName(name)) << name;
  // Digits first, too long, upper case, '.', empty, spaces: the engine refuses what the
  // policy cannot name, and also the policy names it cannot use as files ('.', upper case).
  for (const std::string& name : {std::string("1work"), std::string("-x"), std::string("_x"), too_long,
                                  std::string("Work"), std::string("a.b"), std::string(""), std::string("a b")})
    EXPECT_FALSE(IsValidEngineDomainName(name)) << name;
  // Every name the engine accepts works in a policy file: as @dispvm:NAME for a template and
  // as a plain target for a named domain, each deciding by its own rule (file:line).
  std::string dir = TempDir();
  const std::vector<std::string> names = {"a", "fedora-41_dvm", longest};
  {
    std::ofstream f(dir + "/10-names.policy");
    for (auto& n : names) f << "qubes.VMShell * @adminvm @dispvm:" << n << " allow\n";
    for (auto& n : names) f << "qubes.OpenURL * @adminvm vm" << n.substr(0, 29) << " allow\n";
  }
  std::set<std::string> templates(names.begin(), names.end());
  templates.insert("host");
  PolicyGateOptions o{dir, "host", [templates](const std::string& t) { return templates.count(t) > 0; },
                      [](const std::string& n) { return n.rfind("vm", 0) == 0; }};
  auto gate = MakePolicyGate(o);
  for (size_t i = 0; i < names.size(); ++i) {
    ASSERT_TRUE(IsValidEngineDomainName("vm" + names[i].substr(0, 29)));
    auto d = gate->Decide({"@adminvm", "@dispvm:" + names[i], "qubes.VMShell", ""});
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->allow) << names[i] << ": " << d->rule << " " << d->reason;
    EXPECT_EQ(d->rule, dir + "/10-names.policy:" + std::to_string(i + 1));
    d = gate->Decide({"@adminvm", "vm" + names[i].substr(0, 29), "qubes.OpenURL", ""});
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->allow) << names[i] << ": " << d->rule << " " << d->reason;
    EXPECT_EQ(d->rule, dir + "/10-names.policy:" + std::to_string(names.size() + i + 1));
  }
  // A named domain is no disposable template, and one that does not run is no target.
  auto d = gate->Decide({"@adminvm", "@dispvm:vma", "qubes.VMShell", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  d = gate->Decide({"@adminvm", "other", "qubes.OpenURL", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
  std::filesystem::remove_all(dir);
}

TEST(PolicyGateTest, ShippedPolicyAllowsCallsIntoNamedDomains) {
  PolicyGateOptions o{std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d", "host", nullptr,
                      [](const std::string& n) { return n == "work"; }};
  auto gate = MakePolicyGate(o);
  for (const char* svc : {"qubes.OpenInVM", "qubes.OpenURL"}) {
    auto d = gate->Decide({"@adminvm", "work", svc, ""});
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->allow) << svc << ": " << d->rule << " " << d->reason;
  }
  auto d = gate->Decide({"@adminvm", "absent", "qubes.OpenURL", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
}

}  // namespace
}  // namespace odyssey::engine
