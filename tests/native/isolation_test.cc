// From inside a native domain: what it can see and do (the probe reports, we assert).
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tests/native/native_test_util.h"

namespace odyssey::hal::native::testing {
namespace {

class IsolationTest : public NativeTest {
 protected:
  // Clones a domain from the host template, resumes it and returns the probe's report.
  std::map<std::string, std::string> ProbeFresh(const std::string& name) {
    auto snap = hv_->PrepareSnapshot(HostTemplate());
    EXPECT_TRUE(snap.ok()) << snap.error().message;
    if (!snap.ok()) return {};
    auto dom = hv_->CloneFromSnapshot(*snap, Spec(name));
    EXPECT_TRUE(dom.ok()) << dom.error().message;
    if (!dom.ok()) return {};
    EXPECT_EQ((*dom)->state(), DomainState::kPaused);
    EXPECT_TRUE((*dom)->Resume().ok());
    UniqueFd fd = ConnectProbe((*dom)->vchan());
    EXPECT_TRUE(fd.valid());
    auto kv = ParseProbe(Command(fd.get(), "probe", true));
    EXPECT_TRUE((*dom)->Destroy().ok());
    return kv;
  }
};

TEST_F(IsolationTest, CannotSeeHostProcesses) {
  auto kv = ProbeFresh("iso-procs");
  // init (pid 1) and the probe (pid 2), nothing of the host.
  EXPECT_EQ(kv["pid"], "2");
  EXPECT_EQ(kv["procs"], "2");
  EXPECT_EQ(kv["cgroup_ns_root"], "yes");
}

TEST_F(IsolationTest, IsNotRootAndHasNoCapabilities) {
  auto kv = ProbeFresh("iso-caps");
  EXPECT_EQ(kv["uid"], "1000");
  EXPECT_EQ(kv["gid"], "1000");
  EXPECT_EQ(kv["uid_map"], "0:" + std::to_string(options_.ids.host_base) + ":65536");
  for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}) {
    EXPECT_EQ(kv[k], "0000000000000000") << k;
  }
  EXPECT_EQ(kv["NoNewPrivs"], "1");
  EXPECT_EQ(kv["sys:setuid0"], "EPERM");
}

TEST_F(IsolationTest, SeccompFilterRefusesDangerousSyscalls) {
  auto kv = ProbeFresh("iso-seccomp");
  EXPECT_EQ(kv["Seccomp"], "2");
  for (const char* k : {"sys:mount", "sys:umount", "sys:ptrace", "sys:unshare_user", "sys:unshare_net",
                        "sys:bpf", "sys:keyctl", "sys:perf_event_open", "sys:finit_module",
                        "sys:kexec_load", "sys:chroot"}) {
    EXPECT_EQ(kv[k], "EPERM") << k;
  }
}

TEST_F(IsolationTest, OnlyLoopbackNetworkAndOwnHostname) {
  auto kv = ProbeFresh("iso-net");
  EXPECT_EQ(kv["hostname"], "iso-net");
  EXPECT_EQ(kv["ifaces"], "lo");
  EXPECT_EQ(kv["loopback"], "OK");
  EXPECT_EQ(kv["connect_external"], "ENETUNREACH");
}

TEST_F(IsolationTest, CannotWriteHostFiles) {
  struct stat before {};
  ASSERT_EQ(::stat("/etc/passwd", &before), 0);
  auto kv = ProbeFresh("iso-files");
  for (const char* p : {"/probe", "/etc/probe", "/usr/probe", "/usr/bin/probe", "/odyssey/probe",
                        "/etc/passwd", "/proc/sys/kernel/probe"}) {
    std::string r = kv[std::string("write:") + p];
    EXPECT_TRUE(r == "EROFS" || r == "EACCES" || r == "EPERM" || r == "ENOENT") << p << " -> " << r;
  }
  // Private writable places exist, and are not the host's.
  EXPECT_EQ(kv["write:/tmp/probe"], "OK");
  EXPECT_EQ(kv["write:/home/user/probe"], "OK");
  EXPECT_EQ(kv["devnull"], "OK");
  struct stat after {};
  ASSERT_EQ(::stat("/etc/passwd", &after), 0);
  EXPECT_EQ(before.st_mtim.tv_sec, after.st_mtim.tv_sec);
  EXPECT_EQ(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);
}

TEST_F(IsolationTest, NamedTemplateIsCopyOnWrite) {
  // A directory tree template: the (static) probe sees it read-only underneath and writes go
  // to its own overlay upper, never to the tree.
  std::string root = state_dir_ + "/tmpl";  // removed with the state dir
  std::filesystem::create_directories(root + "/etc");
  std::filesystem::create_directories(root + "/data");
  std::ofstream(root + "/etc/marker") << "template-marker\n";
  ::chmod(root.c_str(), 0755);
  // Overlay copy-up in a user namespace keeps owners, so what a domain may change must be
  // owned by an id mapped inside (here the in-domain user, uid 1000).
  ASSERT_EQ(::chown((root + "/data").c_str(), options_.ids.host_base + 1000, options_.ids.host_base + 1000), 0);
  TemplateSpec t;
  t.name = "tree";
  t.root_dir = root;
  t.agent_path = ProbePath();
  auto snap = hv_->PrepareSnapshot(t);
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  auto dom = hv_->CloneFromSnapshot(*snap, Spec("tree1"));
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  ASSERT_TRUE((*dom)->Resume().ok());
  UniqueFd fd = ConnectProbe((*dom)->vchan());
  ASSERT_TRUE(fd.valid());
  EXPECT_EQ(Command(fd.get(), "read /etc/marker"), "content:template-marker");
  EXPECT_EQ(Command(fd.get(), "touch /etc/new-file"), "EACCES");  // root's dir, we are not root
  EXPECT_EQ(Command(fd.get(), "touch /data/new-file"), "OK");
  EXPECT_EQ(Command(fd.get(), "read /data/new-file"), "content:");
  EXPECT_EQ(Command(fd.get(), "touch /tmp/new-file"), "OK");
  EXPECT_FALSE(std::filesystem::exists(root + "/data/new-file"));
  EXPECT_FALSE(std::filesystem::exists(root + "/tmp"));
  auto kv = ParseProbe(Command(fd.get(), "probe", true));
  EXPECT_EQ(kv["Seccomp"], "2");
  EXPECT_EQ(kv["hostname"], "tree1");
  EXPECT_TRUE((*dom)->Destroy().ok());
}

TEST_F(IsolationTest, MemoryLimitIsEnforced) {
  auto snap = hv_->PrepareSnapshot(HostTemplate());
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  DomainSpec spec = Spec("iso-mem");
  spec.memory_limit_bytes = 64ull << 20;
  auto dom = hv_->CloneFromSnapshot(*snap, spec);
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  ASSERT_TRUE((*dom)->Resume().ok());
  UniqueFd fd = ConnectProbe((*dom)->vchan());
  ASSERT_TRUE(fd.valid());
  EXPECT_EQ(Command(fd.get(), "alloc 16"), "allocated");  // under the limit: fine
  EXPECT_EQ(Command(fd.get(), "alloc 256"), "");           // beyond: killed, EOF
  EXPECT_TRUE(WaitShutOff(**dom));
  EXPECT_TRUE((*dom)->Destroy().ok());
}

TEST_F(IsolationTest, PidsLimitIsEnforced) {
  auto snap = hv_->PrepareSnapshot(HostTemplate());
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  DomainSpec spec = Spec("iso-pids");
  spec.pids_limit = 16;
  auto dom = hv_->CloneFromSnapshot(*snap, spec);
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  ASSERT_TRUE((*dom)->Resume().ok());
  UniqueFd fd = ConnectProbe((*dom)->vchan());
  ASSERT_TRUE(fd.valid());
  std::string reply = Command(fd.get(), "fork 64");
  ASSERT_EQ(reply.rfind("forked ", 0), 0u) << reply;
  int forked = std::stoi(reply.substr(7));
  EXPECT_GT(forked, 0);
  EXPECT_LE(forked, 14);  // 16 minus init and the probe
  EXPECT_TRUE((*dom)->Destroy().ok());
}

}  // namespace
}  // namespace odyssey::hal::native::testing
