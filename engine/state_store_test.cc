#include "engine/state_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>

namespace odyssey::engine {
namespace {

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/odyssey-store-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(StateStoreTest, PersistsAcrossReopenInWalMode) {
  std::string path = dir_ + "/state.sqlite3";
  {
    auto s = StateStore::Open(path);
    ASSERT_TRUE(s.ok()) << s.error().message;
    ASSERT_TRUE((*s)->PutTemplate({"host", "native", "", -1}).ok());
    ASSERT_TRUE((*s)->PutTemplate({"work", "native", "/srv/work", 3}).ok());
    ASSERT_TRUE((*s)->PutDomain({"disp1", "host", "running", 42, 0}).ok());
    auto id = (*s)->BeginCall({0, "disp1", "run", "sleep 100", 1000, 0, {}, {}, true, ""});
    ASSERT_TRUE(id.ok());
    ASSERT_TRUE((*s)->RecordDecision({"@adminvm", "@dispvm", "qubes.VMShell", "", "allow", "a:1"}).ok());
  }
  EXPECT_TRUE(std::filesystem::exists(path + "-wal") || std::filesystem::exists(path));
  auto s = StateStore::Open(path);
  ASSERT_TRUE(s.ok());
  auto t = (*s)->Templates();
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[1].root_dir, "/srv/work");
  EXPECT_EQ((*t)[1].pool_size, 3);
  auto live = (*s)->LiveDomains();
  ASSERT_TRUE(live.ok());
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].pid, 42);
  // What reconciliation does after a crash.
  auto closed = (*s)->MarkAllInterrupted();
  ASSERT_TRUE(closed.ok());
  EXPECT_EQ(closed->first, 1);
  EXPECT_EQ(closed->second, 1);
  EXPECT_TRUE((*s)->LiveDomains()->empty());
  auto calls = (*s)->RecentCalls(10);
  ASSERT_TRUE(calls.ok());
  ASSERT_EQ(calls->size(), 1u);
  EXPECT_EQ((*calls)[0].outcome, "interrupted");
  EXPECT_TRUE((*calls)[0].pool_hit);
  EXPECT_EQ((*s)->DecisionCount().value(), 1);
}

TEST_F(StateStoreTest, EndCallAndDeleteTemplate) {
  auto s = StateStore::Open(dir_ + "/state.sqlite3");
  ASSERT_TRUE(s.ok());
  auto id = (*s)->BeginCall({0, "d", "call", "qubes.OpenURL", 0, 0, {}, {}, false, ""});
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE((*s)->EndCall(*id, 3, "exited").ok());
  auto calls = (*s)->RecentCalls(1);
  ASSERT_EQ(calls->size(), 1u);
  EXPECT_EQ((*calls)[0].exit_code.value_or(-1), 3);
  ASSERT_TRUE((*s)->PutTemplate({"x", "native", "", -1}).ok());
  ASSERT_TRUE((*s)->DeleteTemplate("x").ok());
  EXPECT_TRUE((*s)->Templates()->empty());
}

TEST_F(StateStoreTest, UnwritableDirectoryIsAClearError) {
  auto s = StateStore::Open(dir_ + "/missing/dir/state.sqlite3");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("state store"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::engine
