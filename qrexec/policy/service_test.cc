// PolicyService: reload on change, audit log contents and fail-closed auditing, `ask`
// through prompt programs, with and without a display.
#include <sqlite3.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"
#include "qrexec/policy/testing/temp_dir.h"

namespace odyssey::qrexec::policy {
namespace {

using testing::TempDir;

std::vector<std::vector<std::string>> Query(const std::string& db_path, const std::string& sql) {
  std::vector<std::vector<std::string>> rows;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << db_path;
    sqlite3_close(db);
    return rows;
  }
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  while (stmt && sqlite3_step(stmt) == SQLITE_ROW) {
    std::vector<std::string> row;
    for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
      const unsigned char* t = sqlite3_column_text(stmt, i);
      row.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
    rows.push_back(row);
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return rows;
}

void Exec(const std::string& db_path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto c = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture");
    ASSERT_TRUE(c.ok());
    catalog_ = c.value();
    policy_dir_ = dir_.Mkdir("policy.d");
  }

  void Policy(const std::string& text) { dir_.Write("policy.d/50-test.policy", text); }

  // A prompt program: a shell script with this body.
  std::string Script(const std::string& name, const std::string& body) {
    return dir_.Write("bin/" + name, "#!/bin/sh\n" + body + "\n", 0755);
  }

  std::unique_ptr<PolicyService> Make(std::shared_ptr<Prompter> prompter, bool audit = true) {
    ServiceOptions o;
    o.policy_dir = policy_dir_;
    o.catalog = catalog_;
    o.prompter = std::move(prompter);
    if (audit) {
      auto log = AuditLog::Open(db_path());
      EXPECT_TRUE(log.ok()) << log.error().message;
      if (log.ok()) o.audit = std::move(log.value());
    }
    return std::make_unique<PolicyService>(std::move(o));
  }

  std::shared_ptr<Prompter> ProgramPrompter(const std::string& program, const std::string& display = "",
                                            const std::string& path = "/nonexistent") {
    return MakeProgramPrompter({program, display, path});
  }

  std::string db_path() const { return dir_ / "audit.db"; }

  TempDir dir_;
  std::string policy_dir_;
  DomainCatalogPtr catalog_;
};

TEST_F(ServiceTest, ReloadsWhenFilesChange) {
  Policy("qubes.Foo * work vault deny\n");
  auto s = Make(nullptr, false);
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kDeny);
  Policy("qubes.Foo * work vault allow\n");
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kAllow);
  dir_.Write("policy.d/10-first.policy", "qubes.Foo * * * deny\n");
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kDeny);
}

TEST_F(ServiceTest, BrokenEditDeniesUntilFixed) {
  Policy("qubes.Foo * work vault allow\n");
  auto s = Make(nullptr, false);
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kAllow);
  Policy("qubes.Foo * work vault allow\nbroken line\n");
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("50-test.policy:2:8"), std::string::npos) << d.reason;
  EXPECT_FALSE(s->CurrentPolicy()->ok());
  Policy("qubes.Foo * work vault allow\n");
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kAllow);
}

TEST_F(ServiceTest, AuditRecordsEveryDecision) {
  Policy("qubes.Foo * work vault allow\nqubes.Foo * work @dispvm allow\n");
  auto s = Make(nullptr);
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+x"}).action, Action::kAllow);
  EXPECT_EQ(s->Decide({"personal", "vault", "qubes.Foo+"}).action, Action::kDeny);
  EXPECT_EQ(s->Decide({"work", "@dispvm", "qubes.Foo+"}).action, Action::kAllow);
  auto rows = Query(db_path(),
                    "SELECT source, intended_target, target, service_and_arg, rule_file, rule_line, result, "
                    "length(time), unix_ms > 0 FROM decisions ORDER BY id");
  ASSERT_EQ(rows.size(), 3u);
  std::string file = policy_dir_ + "/50-test.policy";
  EXPECT_EQ(rows[0], (std::vector<std::string>{"work", "vault", "vault", "qubes.Foo+x", file, "1", "allow", "24", "1"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"personal", "vault", "", "qubes.Foo+", "", "0", "deny", "24", "1"}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"work", "@dispvm", "@dispvm:default-dvm", "qubes.Foo+", file, "2",
                                               "allow", "24", "1"}));
  auto reasons = Query(db_path(), "SELECT reason FROM decisions ORDER BY id");
  EXPECT_EQ(reasons[1][0], "no rule matched");
}

TEST_F(ServiceTest, AuditTimeIsIso8601Utc) {
  Policy("* * * * deny\n");
  auto s = Make(nullptr);
  (void)s->Decide({"work", "vault", "a+"});
  auto rows = Query(db_path(), "SELECT time FROM decisions");
  ASSERT_EQ(rows.size(), 1u);
  const std::string& t = rows[0][0];
  ASSERT_EQ(t.size(), 24u) << t;
  EXPECT_EQ(t[4], '-');
  EXPECT_EQ(t[10], 'T');
  EXPECT_EQ(t[19], '.');
  EXPECT_EQ(t.back(), 'Z');
}

TEST_F(ServiceTest, AuditLogOpenFailsInMissingDirectory) {
  auto log = AuditLog::Open(dir_ / "no/such/dir/audit.db");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.error().message.find("no/such/dir/audit.db"), std::string::npos) << log.error().message;
}

TEST_F(ServiceTest, AuditWriteFailureDenies) {
  Policy("qubes.Foo * work vault allow\n");
  auto s = Make(nullptr);
  EXPECT_EQ(s->Decide({"work", "vault", "qubes.Foo+"}).action, Action::kAllow);
  Exec(db_path(), "DROP TABLE decisions");
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("audit log cannot be written"), std::string::npos) << d.reason;
  EXPECT_EQ(d.target, "");
}

TEST_F(ServiceTest, AuditReadOnlyDatabaseDenies) {
  Policy("qubes.Foo * work vault allow\n");
  auto s = Make(nullptr);
  // A trigger makes every insert fail, as a full or read-only disk would.
  Exec(db_path(), "CREATE TRIGGER refuse BEFORE INSERT ON decisions BEGIN SELECT RAISE(FAIL, 'disk full'); END");
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("disk full"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AskWithoutDisplayDeniesWithNotice) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(MakeProgramPrompter({"", "", "/usr/bin:/bin"}));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_EQ(d.reason, "ask denied: no prompt can be shown: DISPLAY is not set and no prompt program is configured");
  EXPECT_EQ(d.rule.line, 1);
  auto rows = Query(db_path(), "SELECT result, reason FROM decisions");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "deny");
  EXPECT_EQ(rows[0][1], d.reason);
}

TEST_F(ServiceTest, AskWithDisplayButNoPromptToolDenies) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(MakeProgramPrompter({"", ":99", dir_ / "empty-bin"}));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("neither zenity nor xmessage"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AskWithoutPrompterDenies) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(nullptr);
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("no prompt can be shown"), std::string::npos);
}

TEST_F(ServiceTest, AskProgramAllows) {
  Policy("qubes.Foo * work vault ask user=u\n");
  std::string args = dir_ / "args";
  auto s = Make(ProgramPrompter(Script("yes", "echo \"$1|$2|$3|$4\" > " + args + "; exit 0")));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+x"});
  EXPECT_EQ(d.action, Action::kAllow) << d.reason;
  EXPECT_EQ(d.target, "vault");
  EXPECT_EQ(d.user, "u");
  EXPECT_EQ(d.rule.line, 1);
  std::ifstream in(args);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "work|qubes.Foo+x|vault|");
}

TEST_F(ServiceTest, AskProgramRefuses) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(ProgramPrompter(Script("no", "exit 1")));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("the user refused"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AskProgramChoosesPermittedTarget) {
  Policy("qubes.Foo * work @default ask default_target=vault\nqubes.Foo * work @tag:personal ask\n");
  std::string args = dir_ / "args";
  auto s = Make(ProgramPrompter(Script("pick", "echo \"$3|$4\" > " + args + "; echo personal; exit 0")));
  Decision d = s->Decide({"work", "", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kAllow) << d.reason;
  EXPECT_EQ(d.target, "personal");
  std::ifstream in(args);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "@default|vault");
}

TEST_F(ServiceTest, AskProgramChoosesForbiddenTarget) {
  Policy("qubes.Foo * work @default ask default_target=vault\nqubes.Foo * work vault ask\n");
  auto s = Make(ProgramPrompter(Script("pick", "echo untrusted; exit 0")));
  Decision d = s->Decide({"work", "", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("'untrusted' is not permitted"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AskProgramChoosesUnknownTarget) {
  Policy("qubes.Foo * * * ask\n");
  auto s = Make(ProgramPrompter(Script("pick", "echo 'no such;rm'; exit 0")));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny) << d.reason;
}

TEST_F(ServiceTest, AskDefaultTargetAcceptedWithEmptyAnswer) {
  Policy("qubes.Foo * work @default ask default_target=@dispvm\nqubes.Foo * work @dispvm allow\n");
  auto s = Make(ProgramPrompter(Script("yes", "exit 0")));
  Decision d = s->Decide({"work", "@default", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kAllow) << d.reason;
  EXPECT_EQ(d.target, "@dispvm:default-dvm");
}

TEST_F(ServiceTest, AskMissingProgramDeniesWithNotice) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(ProgramPrompter(dir_ / "bin/does-not-exist"));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("ask denied: running prompt program"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AskUsesXmessageWhenDisplaySet) {
  Policy("qubes.Foo * work vault ask\n");
  std::string args = dir_ / "args";
  Script("xmessage", "printf '%s\\n' \"$@\" > " + args + "; exit 0");
  auto s = Make(MakeProgramPrompter({"", ":99", dir_ / "bin"}));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kAllow) << d.reason;
  std::ifstream in(args);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("Allow:0,Deny:1"), std::string::npos) << ss.str();
  EXPECT_NE(ss.str().find("source: work"), std::string::npos) << ss.str();
}

TEST_F(ServiceTest, AskPrefersZenityAndHonoursRefusal) {
  Policy("qubes.Foo * work vault ask\n");
  std::string args = dir_ / "args";
  Script("xmessage", "exit 0");
  Script("zenity", "printf '%s\\n' \"$@\" > " + args + "; exit 1");
  auto s = Make(MakeProgramPrompter({"", ":99", dir_ / "bin"}));
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  std::ifstream in(args);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("--no-markup"), std::string::npos) << ss.str();
}

TEST_F(ServiceTest, GraphicalPromptNeedsATarget) {
  Policy("qubes.Foo * work @default ask\n");
  Script("xmessage", "exit 0");
  auto s = Make(MakeProgramPrompter({"", ":99", dir_ / "bin"}));
  Decision d = s->Decide({"work", "", "qubes.Foo+"});
  EXPECT_EQ(d.action, Action::kDeny);
  EXPECT_NE(d.reason.find("no default_target"), std::string::npos) << d.reason;
}

TEST_F(ServiceTest, AssumeYesForAsk) {
  Policy("qubes.Foo * work vault ask\nqubes.Foo * work @default ask default_target=vault\nqubes.Bar * * * ask\n");
  auto s = Make(nullptr);
  DecideFlags yes;
  yes.assume_yes_for_ask = true;
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"}, yes);
  EXPECT_EQ(d.action, Action::kAllow);
  EXPECT_EQ(d.target, "vault");
  Decision d2 = s->Decide({"work", "", "qubes.Foo+"}, yes);
  EXPECT_EQ(d2.action, Action::kAllow);
  EXPECT_EQ(d2.target, "vault");
  Decision d3 = s->Decide({"work", "", "qubes.Bar+"}, yes);
  EXPECT_EQ(d3.action, Action::kDeny);
}

TEST_F(ServiceTest, JustEvaluateKeepsAskAndAuditsIt) {
  Policy("qubes.Foo * work vault ask\n");
  auto s = Make(ProgramPrompter(Script("never", "touch " + (dir_ / "ran") + "; exit 0")));
  DecideFlags just;
  just.just_evaluate = true;
  Decision d = s->Decide({"work", "vault", "qubes.Foo+"}, just);
  EXPECT_EQ(d.action, Action::kAsk);
  EXPECT_NE(::access((dir_ / "ran").c_str(), F_OK), 0);
  auto rows = Query(db_path(), "SELECT result FROM decisions");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "ask");
}

}  // namespace
}  // namespace odyssey::qrexec::policy
