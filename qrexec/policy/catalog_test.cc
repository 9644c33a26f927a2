// JSON domain catalog: the accepted shape, and refusal of anything ambiguous or malformed.
#include <gtest/gtest.h>

#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"
#include "qrexec/policy/testing/temp_dir.h"

namespace odyssey::qrexec::policy {
namespace {

TEST(JsonCatalog, LoadsFixture) {
  auto c = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture");
  ASSERT_TRUE(c.ok()) << c.error().message;
  auto work = (*c)->FindByName("work");
  ASSERT_TRUE(work.has_value());
  EXPECT_EQ(work->type, "AppVM");
  EXPECT_EQ(work->tags, (std::vector<std::string>{"trusted", "work"}));
  EXPECT_EQ(work->default_dispvm, "default-dvm");
  EXPECT_EQ((*c)->AdminDomain().name, "dom0");
  EXPECT_EQ((*c)->FindByUuid("22222222-2222-4222-8222-222222222222")->name, "vault");
  EXPECT_EQ((*c)->FindByUuid("22222222-2222-4222-8222-222222222222")->name, "vault");
  EXPECT_FALSE((*c)->FindByName("nosuch").has_value());
  EXPECT_TRUE((*c)->FindByName("default-dvm")->template_for_dispvms);
  EXPECT_EQ((*c)->FindByName("disp1234")->dispvm_template, "default-dvm");
}

TEST(JsonCatalog, UuidLookupIgnoresCase) {
  auto c = ParseJsonCatalog(R"({"domains": {"a": {"uuid": "ABCDEF01-0000-4000-8000-000000000000"}}})", "t");
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ((*c)->FindByUuid("abcdef01-0000-4000-8000-000000000000")->name, "a");
  EXPECT_EQ((*c)->FindByUuid("ABCDEF01-0000-4000-8000-000000000000")->name, "a");
}

TEST(JsonCatalog, AddsDom0WhenNoAdmin) {
  auto c = ParseJsonCatalog(R"({"domains": {"a": {}}})", "t");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE((*c)->AdminDomain().is_admin());
  EXPECT_EQ((*c)->FindByName("a")->type, "AppVM");
}

TEST(JsonCatalog, AdminMayHaveAnotherName) {
  auto c = ParseJsonCatalog(R"({"domains": {"host": {"type": "AdminVM"}}})", "t");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->AdminDomain().name, "host");
  EXPECT_FALSE((*c)->FindByName("dom0").has_value());
}

struct BadCatalog {
  const char* json;
  const char* message_part;
};

class BadCatalogTest : public ::testing::TestWithParam<BadCatalog> {};

TEST_P(BadCatalogTest, Refused) {
  auto c = ParseJsonCatalog(GetParam().json, "cat.json");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find(GetParam().message_part), std::string::npos) << c.error().message;
  EXPECT_EQ(c.error().message.rfind("cat.json", 0), 0u) << c.error().message;
}

INSTANTIATE_TEST_SUITE_P(
    Policy, BadCatalogTest,
    ::testing::Values(BadCatalog{"{", "not valid JSON"}, BadCatalog{"[]", "expected an object"},
                      BadCatalog{R"({"vms": {}})", "unknown key 'vms'"},
                      BadCatalog{R"({"domains": {"a": {"colour": "red"}}})", "unknown key 'colour'"},
                      BadCatalog{R"({"domains": {"0a": {}}})", "invalid domain name"},
                      BadCatalog{R"({"domains": {"a": {"tags": "x"}}})", "expected an array"},
                      BadCatalog{R"({"domains": {"a": {"tags": ["a b"]}}})", "invalid tag 'a b'"},
                      BadCatalog{R"({"domains": {"a": {"uuid": "nope"}}})", "invalid uuid 'nope'"},
                      BadCatalog{R"({"domains": {"a": {"type": 3}}})", "expected a string"},
                      BadCatalog{R"({"domains": {"a": {"type": "App VM"}}})", "invalid type"},
                      BadCatalog{R"({"domains": {"a": {"template_for_dispvms": "yes"}}})", "expected true or false"},
                      BadCatalog{R"({"domains": {"a": {"default_dispvm": "../x"}}})", "invalid domain name '../x'"},
                      BadCatalog{R"({"domains": {"a": {"type": "AdminVM"}, "b": {"type": "AdminVM"}}})",
                                 "more than one"},
                      BadCatalog{R"({"domains": {"dom0": {"type": "AppVM"}}})", "must have type AdminVM"},
                      BadCatalog{R"({"domains": {"a": {"uuid": "00000000-0000-4000-8000-000000000001"},
                                                  "b": {"uuid": "00000000-0000-4000-8000-000000000001"}}})",
                                 "also used by"}));

TEST(JsonCatalog, LoadFromFileAndMissingFile) {
  testing::TempDir dir;
  std::string path = dir.Write("c.json", testing::kFixtureCatalogJson);
  auto c = LoadJsonCatalog(path);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE((*c)->FindByName("work").has_value());
  auto missing = LoadJsonCatalog(dir / "missing.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("missing.json"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::qrexec::policy
