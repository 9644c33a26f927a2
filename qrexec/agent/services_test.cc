#include "qrexec/agent/services.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace odyssey::qrexec {
namespace {

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qrexec-services-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    for (auto d : {"/ody", "/a", "/b", "/cfg"}) ::mkdir((root_ + d).c_str(), 0755);
    paths_.dirs = {root_ + "/ody", root_ + "/a", root_ + "/b"};
    paths_.config_dir = root_ + "/cfg";
  }
  void TearDown() override { std::system(("rm -rf " + root_).c_str()); }
  void Touch(const std::string& rel, const std::string& content = "#!/bin/sh\n") {
    std::ofstream(root_ + rel) << content;
    ::chmod((root_ + rel).c_str(), 0755);
  }
  std::string root_;
  ServicePaths paths_;
};

TEST_F(ServicesTest, NotFound) { EXPECT_FALSE(FindService(paths_, "x.Y", "").has_value()); }

TEST_F(ServicesTest, ArgumentFormBeatsEarlierDirWithoutArgument) {
  Touch("/ody/x.Y");
  Touch("/b/x.Y+arg");
  auto f = FindService(paths_, "x.Y", "arg");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->path, root_ + "/b/x.Y+arg");
  f = FindService(paths_, "x.Y", "other");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->path, root_ + "/ody/x.Y");
}

TEST_F(ServicesTest, OdysseyDirFirst) {
  Touch("/a/x.Y");
  Touch("/ody/x.Y");
  EXPECT_EQ(FindService(paths_, "x.Y", "")->path, root_ + "/ody/x.Y");
  Touch("/a/x.Y+");
  EXPECT_EQ(FindService(paths_, "x.Y", "")->path, root_ + "/a/x.Y+");
}

TEST_F(ServicesTest, SocketService) {
  std::string path = root_ + "/a/sock.S";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  auto f = FindService(paths_, "sock.S", "");
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->is_socket);
  ::close(fd);
}

TEST_F(ServicesTest, Config) {
  EXPECT_FALSE(LoadServiceConfig(paths_, "s.S", "").skip_service_descriptor);
  std::ofstream(root_ + "/cfg/s.S") << "# comment\nskip-service-descriptor = true\n";
  EXPECT_TRUE(LoadServiceConfig(paths_, "s.S", "x").skip_service_descriptor);
  std::ofstream(root_ + "/cfg/s.S+x") << "exit-on-client-eof=1\n";
  auto c = LoadServiceConfig(paths_, "s.S", "x");
  EXPECT_FALSE(c.skip_service_descriptor);  // the +ARG file wins, whole
  EXPECT_TRUE(c.exit_on_client_eof);
}

TEST(ServicePathsTest, EnvironmentOverrides) {
  ::setenv("ODYSSEY_RPC_DIR", "/o", 1);
  ::setenv("QREXEC_SERVICE_PATH", "/p1:/p2", 1);
  ::setenv("QUBES_RPC_CONFIG_PATH", "/c", 1);
  auto p = ResolveServicePaths(std::nullopt);
  EXPECT_EQ(p.dirs, (std::vector<std::string>{"/o", "/p1", "/p2"}));
  EXPECT_EQ(p.config_dir, "/c");
  p = ResolveServicePaths(std::string("/flag"));
  EXPECT_EQ(p.dirs[0], "/flag");
  ::unsetenv("QREXEC_SERVICE_PATH");
  ::unsetenv("ODYSSEY_RPC_DIR");
  ::unsetenv("QUBES_RPC_CONFIG_PATH");
  p = ResolveServicePaths(std::string(""));
  EXPECT_EQ(p.dirs, (std::vector<std::string>{"/usr/local/etc/qubes-rpc", "/etc/qubes-rpc"}));
}

TEST(ServiceEnvTest, Variables) {
  auto cmd = ParseCmdline("user:QUBESRPC a.B+arg1 work").value();
  auto env = ServiceEnvironment({"PATH=/bin"}, cmd);
  auto has = [&](const std::string& kv) { return std::find(env.begin(), env.end(), kv) != env.end(); };
  EXPECT_TRUE(has("QREXEC_REMOTE_DOMAIN=work"));
  EXPECT_TRUE(has("QREXEC_SERVICE_FULL_NAME=a.B+arg1"));
  EXPECT_TRUE(has("QREXEC_SERVICE_ARGUMENT=arg1"));
  cmd = ParseCmdline("user:QUBESRPC a.B+ work").value();
  env = ServiceEnvironment({}, cmd);
  EXPECT_FALSE(has("QREXEC_SERVICE_ARGUMENT=arg1"));
  EXPECT_EQ(env.size(), 2u);
}

}  // namespace
}  // namespace odyssey::qrexec
