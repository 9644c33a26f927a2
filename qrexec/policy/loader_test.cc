// Policy directories and files: name order, ignored and invalid names, the three include
// directives, cycles, depth, errors inside included files, change detection.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"
#include "qrexec/policy/testing/temp_dir.h"

namespace odyssey::qrexec::policy {
namespace {

using testing::TempDir;

class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture");
    ASSERT_TRUE(c.ok());
    catalog_ = c.value();
    policy_dir_ = dir_.Mkdir("policy.d");
  }
  std::string Write(const std::string& rel, const std::string& text) { return dir_.Write("policy.d/" + rel, text); }
  PolicyPtr Load() { return Policy::LoadDirectory(policy_dir_); }
  Decision Eval(const PolicyPtr& p, const std::string& src, const std::string& tgt, const std::string& svc) {
    return p->Evaluate({src, tgt, svc}, *catalog_);
  }

  TempDir dir_;
  std::string policy_dir_;
  DomainCatalogPtr catalog_;
};

TEST_F(LoaderTest, FilesInNameOrder) {
  Write("20-b.policy", "qubes.Foo * work vault allow\n");
  Write("10-a.policy", "qubes.Foo * work vault deny\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  Decision d = Eval(p, "work", "vault", "qubes.Foo+");
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_EQ(d.rule.ToString(), policy_dir_ + "/10-a.policy:1");
}

TEST_F(LoaderTest, NameOrderIsByteOrder) {
  Write("9.policy", "qubes.Foo * work vault deny\n");
  Write("10.policy", "qubes.Foo * work vault allow\n");
  Write("1_.policy", "qubes.Foo * work personal allow\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").rule.file, policy_dir_ + "/10.policy");
}

TEST_F(LoaderTest, IgnoresHiddenAndNonPolicyFiles) {
  Write("README", "this is not policy\n");
  Write(".hidden.policy", "garbage garbage\n");
  Write("30-user.policy~", "garbage\n");
  Write("30-user.policy.swp", "garbage\n");
  Write("Upper.pol", "garbage\n");
  Write("30-user.policy", "qubes.Foo * work vault allow\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(p->rule_count(), 1u);
}

TEST_F(LoaderTest, InvalidFileNameDeniesEverything) {
  Write("10-ok.policy", "* * * * allow\n");
  Write("Bad.policy", "* * * * allow\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/Bad.policy:0:0: invalid policy file name (allowed characters: 0-9 a-z _ . -) 'Bad.policy'");
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").action, Action::kDeny);
}

TEST_F(LoaderTest, FileNameWithSpaceIsInvalid) {
  Write("a b.policy", "* * * * allow\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_NE(p->error().find("invalid policy file name"), std::string::npos);
}

TEST_F(LoaderTest, SubdirectoryNamedPolicyIsAnError) {
  dir_.Mkdir("policy.d/x.policy");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_NE(p->error().find("not a regular file"), std::string::npos) << p->error();
}

TEST_F(LoaderTest, MissingDirectoryDenies) {
  auto p = Policy::LoadDirectory(dir_ / "nope");
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), dir_ / "nope" + ":0:0: cannot read policy directory: opendir: No such file or directory '" +
                            dir_ / "nope" + "'");
}

TEST_F(LoaderTest, EmptyDirectoryDeniesByDefault) {
  auto p = Load();
  ASSERT_TRUE(p->ok());
  EXPECT_EQ(p->rule_count(), 0u);
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").action, Action::kDeny);
}

TEST_F(LoaderTest, ErrorInLaterFileDeniesEarlierAllow) {
  Write("10-a.policy", "* * * * allow\n");
  Write("99-z.policy", "\n\nqubes.Foo * work vault alow\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/99-z.policy:3:24: invalid action (expected allow, deny or ask) 'alow'");
  Decision d = Eval(p, "work", "vault", "qubes.Foo+");
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_EQ(d.rule.file, "");
}

TEST_F(LoaderTest, IncludeRelativeToBaseDirectory) {
  dir_.Write("policy.d/inc/extra", "qubes.Foo * work vault allow\n");
  Write("10-a.policy", "# first\n!include inc/extra\nqubes.Foo * * * deny\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  Decision d = Eval(p, "work", "vault", "qubes.Foo+");
  EXPECT_EQ(d.action, Action::kAllow);
  EXPECT_EQ(d.rule.ToString(), policy_dir_ + "/inc/extra:1");
  EXPECT_EQ(Eval(p, "work", "personal", "qubes.Foo+").rule.ToString(), policy_dir_ + "/10-a.policy:3");
}

TEST_F(LoaderTest, IncludeAbsolutePath) {
  std::string inc = dir_.Write("elsewhere/rules", "qubes.Foo * work vault allow\n");
  Write("10-a.policy", "!include " + inc + "\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").rule.file, inc);
}

TEST_F(LoaderTest, IncludeMissingFileReportsDirective) {
  Write("10-a.policy", "* * * * deny\n  !include missing\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/10-a.policy:2:12: cannot read policy file: stat: No such file or directory 'missing'");
}

TEST_F(LoaderTest, IncludeOfDirectoryIsAnError) {
  dir_.Mkdir("policy.d/sub");
  Write("10-a.policy", "!include sub\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/10-a.policy:1:10: policy file is not a regular file 'sub'");
}

TEST_F(LoaderTest, IncludeDirReadsPolicyFilesInOrder) {
  dir_.Write("policy.d/sub/20-b.policy", "qubes.Foo * work vault allow\n");
  dir_.Write("policy.d/sub/10-a.policy", "qubes.Foo * work vault ask\n");
  dir_.Write("policy.d/sub/notes.txt", "garbage\n");
  Write("10-a.policy", "!include-dir sub\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(p->rule_count(), 2u);
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").action, Action::kAsk);
}

TEST_F(LoaderTest, IncludeDirMissing) {
  Write("10-a.policy", "!include-dir nosub\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(),
            policy_dir_ + "/10-a.policy:1:14: cannot read policy directory: opendir: No such file or directory 'nosub'");
}

TEST_F(LoaderTest, IncludeDirWithInvalidName) {
  dir_.Write("policy.d/sub/X.policy", "* * * * allow\n");
  Write("10-a.policy", "!include-dir sub\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/sub/X.policy:0:0: invalid policy file name (allowed characters: 0-9 a-z _ . -) 'X.policy'");
}

TEST_F(LoaderTest, IncludeServiceAppliesOnlyToThatService) {
  dir_.Write("policy.d/svc/foo", "# old syntax\n$anyvm $dispvm allow\nwork vault allow\n$anyvm $anyvm deny\n");
  Write("10-a.policy", "!include-service qubes.Foo +x svc/foo\nqubes.Bar * work vault allow\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+x").action, Action::kAllow);
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+x").rule.ToString(), policy_dir_ + "/svc/foo:3");
  EXPECT_EQ(Eval(p, "work", "@dispvm", "qubes.Foo+x").target, "@dispvm:default-dvm");
  EXPECT_EQ(Eval(p, "personal", "vault", "qubes.Foo+x").rule.ToString(), policy_dir_ + "/svc/foo:4");
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+y").action, Action::kDeny);
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+y").rule.file, "");
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Bar+").action, Action::kAllow);
}

TEST_F(LoaderTest, IncludeServiceStarAppliesToAll) {
  dir_.Write("policy.d/svc/all", "work vault allow\n");
  Write("10-a.policy", "!include-service * * svc/all\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(Eval(p, "work", "vault", "any.Thing+z").action, Action::kAllow);
}

TEST_F(LoaderTest, IncludeServiceFileMayIncludeMore) {
  dir_.Write("policy.d/svc/more", "work vault allow\n");
  dir_.Write("policy.d/svc/foo", "!include svc/more\n");
  Write("10-a.policy", "!include-service qubes.Foo * svc/foo\n");
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  Decision d = Eval(p, "work", "vault", "qubes.Foo+q");
  EXPECT_EQ(d.action, Action::kAllow);
  EXPECT_EQ(d.rule.ToString(), policy_dir_ + "/svc/more:1");
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Bar+").action, Action::kDeny);
}

TEST_F(LoaderTest, IncludeServiceFileSyntaxError) {
  dir_.Write("policy.d/svc/foo", "work vault allow\n$anyvm @default allow target=@tag:x\n");
  Write("10-a.policy", "!include-service qubes.Foo * svc/foo\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/svc/foo:2:30: token not allowed in the target=/default_target= column '@tag:x'");
}

TEST_F(LoaderTest, IncludeServiceFileRefusesIncludeService) {
  dir_.Write("policy.d/svc/foo", "!include-service a * b\n");
  Write("10-a.policy", "!include-service qubes.Foo * svc/foo\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/svc/foo:1:1: directive not allowed in an !include-service file '!include-service'");
}

TEST_F(LoaderTest, IncludeCycle) {
  dir_.Write("policy.d/inc/a", "!include inc/b\n");
  dir_.Write("policy.d/inc/b", "* * * * allow\n!include inc/a\n");
  Write("10-a.policy", "!include inc/a\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_EQ(p->error(), policy_dir_ + "/inc/b:2:10: include cycle 'inc/a'");
}

TEST_F(LoaderTest, SelfInclude) {
  Write("10-a.policy", "!include 10-a.policy\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_NE(p->error().find("include cycle"), std::string::npos);
}

TEST_F(LoaderTest, IncludeDepthLimited) {
  for (int i = 0; i < 20; ++i) {
    dir_.Write("policy.d/chain/" + std::to_string(i), "!include chain/" + std::to_string(i + 1) + "\n");
  }
  dir_.Write("policy.d/chain/20", "* * * * allow\n");
  Write("10-a.policy", "!include chain/0\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_NE(p->error().find("includes nested too deeply"), std::string::npos) << p->error();
}

TEST_F(LoaderTest, IncludeDirRecursionLimited) {
  Write("10-a.policy", "!include-dir .\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_NE(p->error().find("include cycle"), std::string::npos) << p->error();
}

TEST_F(LoaderTest, SymlinkedFileFollowed) {
  std::string real = dir_.Write("real.rules", "qubes.Foo * work vault allow\n");
  ASSERT_EQ(::symlink(real.c_str(), (policy_dir_ + "/50-link.policy").c_str()), 0);
  auto p = Load();
  ASSERT_TRUE(p->ok()) << p->error();
  EXPECT_EQ(Eval(p, "work", "vault", "qubes.Foo+").action, Action::kAllow);
}

TEST_F(LoaderTest, ChangedNoticesEdits) {
  Write("10-a.policy", "* * * * deny\n");
  dir_.Write("policy.d/inc/x", "* * * * deny\n");
  Write("20-b.policy", "!include inc/x\n");
  auto p = Load();
  ASSERT_TRUE(p->ok());
  EXPECT_FALSE(p->Changed());
  Write("10-a.policy", "* * * * allow\n");
  EXPECT_TRUE(p->Changed());
  p = Load();
  EXPECT_FALSE(p->Changed());
  dir_.Write("policy.d/inc/x", "* * * * allow\n");
  EXPECT_TRUE(p->Changed());
  p = Load();
  Write("30-c.policy", "\n");
  EXPECT_TRUE(p->Changed());
  p = Load();
  ASSERT_EQ(::unlink((policy_dir_ + "/30-c.policy").c_str()), 0);
  EXPECT_TRUE(p->Changed());
}

TEST_F(LoaderTest, ChangedNoticesFixedMissingInclude) {
  Write("10-a.policy", "!include inc/later\n");
  auto p = Load();
  ASSERT_FALSE(p->ok());
  EXPECT_FALSE(p->Changed());
  dir_.Write("policy.d/inc/later", "* * * * allow\n");
  EXPECT_TRUE(p->Changed());
  EXPECT_TRUE(Load()->ok());
}

TEST_F(LoaderTest, ShippedDefaultPolicy) {
  auto p = Policy::LoadDirectory(ODYSSEY_POLICY_DEFAULT_DIR);
  ASSERT_TRUE(p->ok()) << p->error();
  for (const char* svc : {"qubes.OpenInVM+", "qubes.OpenURL+", "qubes.VMShell+"}) {
    Decision d = Eval(p, "dom0", "@dispvm", svc);
    EXPECT_EQ(d.action, Action::kAllow) << svc << ": " << d.reason;
    EXPECT_EQ(d.target, "@dispvm:default-dvm");
    EXPECT_EQ(Eval(p, "dom0", "@dispvm:personal-dvm", svc).action, Action::kAllow) << svc;
    EXPECT_EQ(Eval(p, "work", "@dispvm", svc).action, Action::kDeny) << svc;
    EXPECT_EQ(Eval(p, "dom0", "work", svc).action, Action::kDeny) << svc;
  }
  EXPECT_EQ(Eval(p, "dom0", "@dispvm", "qubes.Filecopy+").action, Action::kDeny);
  EXPECT_EQ(Eval(p, "work", "dom0", "qubes.VMShell+").action, Action::kDeny);
  EXPECT_EQ(Eval(p, "dom0", "@dispvm:vault", "qubes.OpenURL+").action, Action::kDeny);
}

}  // namespace
}  // namespace odyssey::qrexec::policy
