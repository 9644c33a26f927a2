// qrexec-policy as a real process: decision and rule file:line on stdout, exit status
// 0 allow / 1 deny / 2 ask needed / 3 setup error, errors naming the offending value.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "qrexec/policy/testing/fixture_catalog.h"
#include "qrexec/policy/testing/temp_dir.h"
#include "tests/policy/process.h"

namespace odyssey::qrexec::policy {
namespace {

using testing::TempDir;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_.Write("catalog.json", testing::kFixtureCatalogJson);
    policy_file_ = dir_.Write("policy.d/50-test.policy",
                              "qubes.Foo * work vault allow\nqubes.Ask * work vault ask\n"
                              "qubes.Disp * @anyvm @dispvm allow\n* * * * deny\n");
  }

  testing::ProcessResult Policy(std::vector<std::string> args, std::vector<std::string> env = testing::BaseEnv()) {
    std::vector<std::string> argv = {ODYSSEY_POLICY_CLI_BIN, "--policy-dir", dir_ / "policy.d", "--catalog",
                                     dir_ / "catalog.json", "--audit-log", dir_ / "audit.db"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::Run(argv, dir_.path(), std::move(env));
  }

  TempDir dir_;
  std::string policy_file_;
};

TEST_F(CliTest, AllowPrintsRule) {
  auto r = Policy({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "result=allow\ntarget=vault\ntarget_uuid=22222222-2222-4222-8222-222222222222\nautostart=True\n"
            "rule=" + policy_file_ + ":1\nreason=allowed by rule " + policy_file_ + ":1\n");
}

TEST_F(CliTest, DenyByRule) {
  auto r = Policy({"personal", "vault", "qubes.Foo+"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("result=deny\nrule=" + policy_file_ + ":4\n"), std::string::npos) << r.out;
}

TEST_F(CliTest, DenyWithoutRule) {
  dir_.Write("policy.d/50-test.policy", "qubes.Foo * work vault allow\n");
  auto r = Policy({"personal", "vault", "qubes.Foo+"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("rule=none\nreason=no rule matched\n"), std::string::npos) << r.out;
}

TEST_F(CliTest, DispVm) {
  auto r = Policy({"personal", "@dispvm", "qubes.Disp+x"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("target=@dispvm:personal-dvm\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule=" + policy_file_ + ":3\n"), std::string::npos) << r.out;
}

TEST_F(CliTest, AskJustEvaluateExits2) {
  auto r = Policy({"work", "vault", "qubes.Ask+", "--just-evaluate"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("result=ask\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rule=" + policy_file_ + ":2\n"), std::string::npos) << r.out;
}

TEST_F(CliTest, AskWithoutDisplayDeniesWithNotice) {
  auto r = Policy({"work", "vault", "qubes.Ask+"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("notice: ask denied: no prompt can be shown"), std::string::npos) << r.err;
}

TEST_F(CliTest, AskAssumeYes) {
  auto r = Policy({"work", "vault", "qubes.Ask+", "--assume-yes-for-ask"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

TEST_F(CliTest, AskProgram) {
  std::string yes = dir_.Write("bin/yes", "#!/bin/sh\nexit 0\n", 0755);
  std::string no = dir_.Write("bin/no", "#!/bin/sh\nexit 1\n", 0755);
  EXPECT_EQ(Policy({"work", "vault", "qubes.Ask+", "--ask-program", yes}).exit_code, 0);
  EXPECT_EQ(Policy({"work", "vault", "qubes.Ask+", "--ask-program", no}).exit_code, 1);
}

TEST_F(CliTest, SyntaxErrorReportedAndDenied) {
  dir_.Write("policy.d/40-bad.policy", "qubes.Foo * work vault allow autostart=maybe\n");
  auto r = Policy({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(dir_ / "policy.d/40-bad.policy:1:30: invalid value (expected yes or no) 'autostart=maybe'"),
            std::string::npos)
      << r.err;
}

TEST_F(CliTest, BadCatalogNamed) {
  auto r = testing::Run({ODYSSEY_POLICY_CLI_BIN, "--policy-dir", dir_ / "policy.d", "--catalog",
                         dir_ / "missing.json", "--no-audit", "work", "vault", "qubes.Foo+"},
                        dir_.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("--catalog " + dir_ / "missing.json"), std::string::npos) << r.err;
}

TEST_F(CliTest, UnwritableAuditLogRefuses) {
  auto r = testing::Run({ODYSSEY_POLICY_CLI_BIN, "--policy-dir", dir_ / "policy.d", "--catalog",
                         dir_ / "catalog.json", "--audit-log", dir_ / "no/dir/audit.db", "work", "vault", "qubes.Foo+"},
                        dir_.path());
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.err.find("--audit-log " + dir_ / "no/dir/audit.db"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("result=allow"), std::string::npos);
}

TEST_F(CliTest, NoAudit) {
  auto r = testing::Run({ODYSSEY_POLICY_CLI_BIN, "--policy-dir", dir_ / "policy.d", "--catalog",
                         dir_ / "catalog.json", "--no-audit", "work", "vault", "qubes.Foo+"},
                        dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  struct stat st;
  EXPECT_NE(::stat((dir_ / "audit.db").c_str(), &st), 0);
}

TEST_F(CliTest, Help) {
  auto r = testing::Run({ODYSSEY_POLICY_CLI_BIN, "--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("SOURCE"), std::string::npos);
  EXPECT_NE(r.out.find("--just-evaluate"), std::string::npos);
  EXPECT_NE(r.out.find("Exit status"), std::string::npos);
}

TEST_F(CliTest, MissingArgumentsIsUsageError) {
  auto r = testing::Run({ODYSSEY_POLICY_CLI_BIN, "work"}, dir_.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 1);
  EXPECT_NE(r.exit_code, 2);
  EXPECT_NE(r.err.find("TARGET"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace odyssey::qrexec::policy
