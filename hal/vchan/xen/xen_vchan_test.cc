// xen backend: only the error paths can run without a hypervisor; the data path needs
// /dev/xen (and a second domain), so it skips with a message otherwise.
#include "hal/vchan/xen/xen_vchan.h"

#include <gtest/gtest.h>
#include <unistd.h>

namespace odyssey::vchan {
namespace {

Options XenOpts() {
  Options o;
  o.backend = Backend::kXen;
  return o;
}

TEST(XenVchan, UnavailableIsAnErrorNotACrash) {
  if (!XenBackendCompiled()) {
    auto s = Vchan::Server(1, 512, XenOpts());
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ENOSYS);
    GTEST_SKIP() << "xen backend not compiled (libxenvchan not found at build time)";
  }
  if (::access("/dev/xen", F_OK) == 0) GTEST_SKIP() << "/dev/xen present: covered by DataPath";
  EXPECT_FALSE(Vchan::Server(1, 512, XenOpts()).ok());
  EXPECT_FALSE(Vchan::Client(1, 512, XenOpts()).ok());
}

TEST(XenVchan, DataPath) {
  if (!XenBackendCompiled()) GTEST_SKIP() << "xen backend not compiled";
  if (::access("/dev/xen", F_OK) != 0) GTEST_SKIP() << "/dev/xen absent: not running on Xen";
  // Inside dom0 or a domU with a peer: a server for our own domain and a client of it.
  Options o = XenOpts();
  auto s = Vchan::Server(EffectiveOwnDomain(o), 599, o);
  if (!s.ok()) GTEST_SKIP() << "cannot create a xen vchan here: " << s.error().message;
  auto c = Vchan::Client(EffectiveOwnDomain(o), 599, o);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE((*c)->Send("xen", 3).ok());
  char buf[3];
  ASSERT_TRUE((*s)->Recv(buf, 3).ok());
  EXPECT_EQ(std::string(buf, 3), "xen");
}

}  // namespace
}  // namespace odyssey::vchan
