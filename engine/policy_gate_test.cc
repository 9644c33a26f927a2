#include "engine/policy_gate.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

namespace odyssey::engine {
namespace {

TEST(PolicyGateTest, ShippedPolicyAllowsEngineCalls) {
  auto gate = MakePolicyGate(std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d");
  for (const char* svc : {"qubes.VMShell", "qubes.OpenInVM", "qubes.OpenURL"}) {
    for (const char* target : {"@dispvm", "@dispvm:host"}) {
      auto d = gate->Decide({"@adminvm", target, svc, ""});
      ASSERT_TRUE(d.ok()) << d.error().message;
      EXPECT_TRUE(d->allow) << svc << " -> " << target << " rule " << d->rule;
      EXPECT_NE(d->rule.find("50-odyssey-engine.policy:"), std::string::npos) << d->rule;
    }
  }
  auto d = gate->Decide({"@adminvm", "@dispvm", "qubes.Filecopy", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allow);
}

TEST(PolicyGateTest, DenyRuleNamesFileAndLine) {
  char tmpl[] = "/tmp/odyssey-policy-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  {
    std::ofstream f(dir + "/10-deny.policy");
    f << "# deny URLs\n\nqubes.OpenURL * @adminvm @anyvm deny\n";
    std::ofstream g(dir + "/50-allow.policy");
    g << "* * @adminvm @anyvm allow\n";
  }
  auto gate = MakePolicyGate(dir);
  auto d = gate->Decide({"@adminvm", "@dispvm:host", "qubes.OpenURL", ""});
  ASSERT_TRUE(d.ok()) << d.error().message;
  EXPECT_FALSE(d->allow);
  EXPECT_EQ(d->rule, dir + "/10-deny.policy:3");
  d = gate->Decide({"@adminvm", "@dispvm:host", "qubes.VMShell", ""});
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allow);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace odyssey::engine
