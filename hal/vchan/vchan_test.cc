// Front-door tests: path scheme, environment defaults, backend selection.
#include "hal/vchan/vchan.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>

namespace odyssey::vchan {
namespace {

// Sets an environment variable for one scope and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    const char* old = ::getenv(name);
    if (old != nullptr) old_ = old;
    had_ = old != nullptr;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(VchanPaths, SocketPathMatchesQubesScheme) {
  EXPECT_EQ(SocketPath("/var/run/vchan", 0, 7, 512), "/var/run/vchan/vchan.0.7.512.sock");
  EXPECT_EQ(SocketPath("/d", 12, 0, 513), "/d/vchan.12.0.513.sock");
  EXPECT_EQ(VirtioPortPath("/dev/virtio-ports", 512), "/dev/virtio-ports/org.odyssey.vchan.512");
}

TEST(VchanPaths, EnvironmentDefaults) {
  {
    ScopedEnv dir("VCHAN_SOCKET_DIR", nullptr);
    ScopedEnv dom("VCHAN_DOMAIN", nullptr);
    ScopedEnv vdir("VCHAN_VIRTIO_DIR", nullptr);
    Options o;
    EXPECT_EQ(EffectiveSocketDir(o), "/var/run/vchan");
    EXPECT_EQ(EffectiveOwnDomain(o), 0);
    EXPECT_EQ(EffectiveVirtioDir(o), "/dev/virtio-ports");
  }
  {
    ScopedEnv dir("VCHAN_SOCKET_DIR", "/tmp/x");
    ScopedEnv dom("VCHAN_DOMAIN", "42");
    ScopedEnv vdir("VCHAN_VIRTIO_DIR", "/tmp/v");
    Options o;
    EXPECT_EQ(EffectiveSocketDir(o), "/tmp/x");
    EXPECT_EQ(EffectiveOwnDomain(o), 42);
    EXPECT_EQ(EffectiveVirtioDir(o), "/tmp/v");
    o.socket_dir = "/explicit";
    o.own_domain = 3;
    o.virtio_dir = "/vd";
    EXPECT_EQ(EffectiveSocketDir(o), "/explicit");
    EXPECT_EQ(EffectiveOwnDomain(o), 3);
    EXPECT_EQ(EffectiveVirtioDir(o), "/vd");
  }
}

TEST(VchanBackend, SelectedByOptionThenEnvironment) {
  ScopedEnv be("VCHAN_BACKEND", nullptr);
  Options o;
  EXPECT_EQ(EffectiveBackend(o).value(), Backend::kSocket);
  {
    ScopedEnv be2("VCHAN_BACKEND", "virtio-serial");
    EXPECT_EQ(EffectiveBackend(o).value(), Backend::kVirtioSerial);
    o.backend = Backend::kXen;
    EXPECT_EQ(EffectiveBackend(o).value(), Backend::kXen);
  }
  ScopedEnv bad("VCHAN_BACKEND", "carrier-pigeon");
  Options d;
  auto r = EffectiveBackend(d);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  // An unknown backend is an error from the constructors too, never a crash.
  auto s = Vchan::Server(1, 600, d);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("carrier-pigeon"), std::string::npos);
  EXPECT_STREQ(BackendName(Backend::kVirtioSerial), "virtio-serial");
}

TEST(VchanBackend, NegativeIdsRefused) {
  Options o;
  o.backend = Backend::kSocket;
  o.socket_dir = "/nonexistent-vchan-dir";
  EXPECT_EQ(Vchan::Server(-1, 5, o).error().code, EINVAL);
  EXPECT_EQ(Vchan::Client(1, -5, o).error().code, EINVAL);
}

}  // namespace
}  // namespace odyssey::vchan
