#include "engine/config.h"

#include <gtest/gtest.h>

namespace odyssey::engine {
namespace {

TEST(ConfigTest, DefaultsNeedNoFile) {
  auto c = LoadConfig("/nonexistent/odysseyd.conf", /*must_exist=*/false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->socket_path.empty());
  EXPECT_FALSE(c->state_dir.empty());
  EXPECT_EQ(c->backend, "auto");
  EXPECT_EQ(c->default_template, "host");
}

TEST(ConfigTest, NamedMissingFileIsAnError) {
  auto c = LoadConfig("/nonexistent/odysseyd.conf", /*must_exist=*/true);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("does not exist"), std::string::npos);
}

TEST(ConfigTest, KeyValueLines) {
  Config c;
  auto s = ParseConfig("# comment\n pool_size = 7\nbackend=process\nservice_path = /a:/b\n"
                       "allowed_uids = 5, 6\nsocket_mode = 0660\n", "t.conf", &c);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(c.pool_size, 7u);
  EXPECT_EQ(c.backend, "process");
  EXPECT_EQ(c.service_path, (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(c.allowed_uids, (std::vector<uint32_t>{5, 6}));
  EXPECT_EQ(c.socket_mode, 0660u);
}

TEST(ConfigTest, Json) {
  Config c;
  auto s = ParseConfig(R"({"pool_size": 3, "log_level": "debug", "service_path": ["/x", "/y"]})",
                       "t.json", &c);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(c.pool_size, 3u);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.service_path.size(), 2u);
}

TEST(ConfigTest, ErrorsNameFileLineAndKey) {
  Config c;
  auto s = ParseConfig("pool_size = 2\nbogus = 1\n", "my.conf", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("my.conf:2: bogus"), std::string::npos) << s.error().message;
  s = ParseConfig("pool_size = -1\n", "my.conf", &c);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("my.conf:1"), std::string::npos);
  s = ParseConfig("pool_size\n", "my.conf", &c);
  EXPECT_FALSE(s.ok());
  s = ParseConfig("log_level = loud\n", "my.conf", &c);
  EXPECT_FALSE(s.ok());
  s = ParseConfig("{ not json", "my.json", &c);
  EXPECT_FALSE(s.ok());
  s = ParseConfig(R"({"pool_size": true})", "my.json", &c);
  EXPECT_FALSE(s.ok());
}

TEST(ConfigTest, EnvironmentOverridesDefaults) {
  setenv("ODYSSEY_SOCKET", "/tmp/x/odysseyd.sock", 1);
  setenv("ODYSSEY_STATE_DIR", "/tmp/x/state", 1);
  EXPECT_EQ(DefaultSocketPath(), "/tmp/x/odysseyd.sock");
  EXPECT_EQ(DefaultStateDir(), "/tmp/x/state");
  unsetenv("ODYSSEY_SOCKET");
  unsetenv("ODYSSEY_STATE_DIR");
}

}  // namespace
}  // namespace odyssey::engine
