#include "hal/libvirt/domain_xml.h"
#include "hal/libvirt/guest_identity.h"

#include <gtest/gtest.h>

namespace odyssey::hal::libvirt {
namespace {

TEST(DomainXmlTest, PortsSocketsAndEscaping) {
  DomainXmlParams p;
  p.name = "disp1";
  p.uuid = RandomUuid();
  p.kernel = "/img/vmlinuz";
  p.initrd = "/img/initrd.img";
  p.cmdline = "console=ttyS0 a<b";
  p.console_log = "/s/d/console.log";
  p.socket_dir = "/s/sockets";
  p.domid = 7;
  std::string xml = BuildDomainXml(p);
  EXPECT_NE(xml.find("type='qemu'>"), std::string::npos);
  EXPECT_NE(xml.find("<name>disp1</name>"), std::string::npos);
  EXPECT_NE(xml.find("path='/s/sockets/vchan.7.0.512.sock'"), std::string::npos);
  EXPECT_NE(xml.find("name='org.odyssey.vchan.512'"), std::string::npos);
  EXPECT_NE(xml.find("name='org.odyssey.vchan.516'"), std::string::npos);
  EXPECT_EQ(xml.find("vchan.517"), std::string::npos);
  EXPECT_NE(xml.find("a&lt;b"), std::string::npos);
  EXPECT_EQ(xml.find("<disk"), std::string::npos);
  p.disk = "/s/d/disk.qcow2";
  p.virt_type = "kvm";
  xml = BuildDomainXml(p);
  EXPECT_NE(xml.find("<source file='/s/d/disk.qcow2'/>"), std::string::npos);
  EXPECT_NE(xml.find("type='kvm'>"), std::string::npos);
}

TEST(DomainXmlTest, QemuExtrasAddedOnce) {
  DomainXmlParams p;
  p.name = "d";
  p.uuid = RandomUuid();
  std::string xml = BuildDomainXml(p);
  EXPECT_NE(xml.find("<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0' type='qemu'>"),
            std::string::npos);
  EXPECT_NE(xml.find("<qemu:del capability='cpu-unavailable-features'/>"), std::string::npos);
  EXPECT_EQ(xml.find("-incoming"), std::string::npos);
  // As libvirt saves it (namespace after type), then made a clone's: -incoming defer added,
  // nothing duplicated, still one document.
  std::string saved = "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
                      "  <name>t</name>\n  <qemu:capabilities>\n    <qemu:del capability='cpu-unavailable-features'/>\n"
                      "  </qemu:capabilities>\n</domain>\n";
  std::string clone = WithQemuExtras(saved, true);
  EXPECT_EQ(ReplaceAll(&clone, "xmlns:qemu=", "xmlns:qemu="), 1u);
  EXPECT_EQ(ReplaceAll(&clone, "<qemu:capabilities>", "<qemu:capabilities>"), 1u);
  EXPECT_NE(clone.find("<qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>"), std::string::npos);
  EXPECT_LT(clone.find("</qemu:commandline>"), clone.find("</domain>"));
  EXPECT_EQ(WithQemuExtras(clone, true), clone);
}

TEST(DomainXmlTest, UuidsAreVersion4AndDistinct) {
  std::string a = RandomUuid(), b = RandomUuid();
  ASSERT_EQ(a.size(), 36u);
  EXPECT_EQ(a[14], '4');
  EXPECT_NE(a, b);
}

TEST(DomainXmlTest, ReplaceAllCounts) {
  std::string s = "aXbXc";
  EXPECT_EQ(ReplaceAll(&s, "X", "XX"), 2u);
  EXPECT_EQ(s, "aXXbXXc");
  EXPECT_EQ(HostSocketPath("/d", 3, 513), "/d/vchan.3.0.513.sock");
}

TEST(GuestIdentityTest, FreshSeedPerCallAndCheckedHostname) {
  auto a = MakeIdentityRefresh("disp-12.x");
  auto b = MakeIdentityRefresh("disp-12.x");
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  EXPECT_EQ(a->command, std::string(kGuestIdentityTool) + " disp-12.x");
  EXPECT_EQ(a->seed.size(), kGuestIdentitySeedBytes);
  EXPECT_NE(a->seed, b->seed);
  for (const char* bad : {"", "-x", ".x", "a b", "a;reboot", "x$(id)", "0123456789012345678901234567890123456789012345678901234567890123"}) {
    auto r = MakeIdentityRefresh(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("invalid guest hostname"), std::string::npos);
  }
}

}  // namespace
}  // namespace odyssey::hal::libvirt
