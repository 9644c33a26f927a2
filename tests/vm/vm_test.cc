// VM integration tests (libvirt embedded QEMU; TCG where KVM does not work): guest image,
// cold boot to HELLO, template save + restore, restored clones answering, clean teardown,
// QEMU dying mid-call, corrupted snapshots. One image and one template snapshot are shared
// by every test process (tests/vm/vm_env.h), so only the tests that must boot do.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "base/io.h"
#include "hal/libvirt/guest_identity.h"
#include "hal/libvirt/libvirt_hypervisor.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {
namespace {

namespace fs = std::filesystem;
using hal::DomainState;
using hal::libvirt::LibvirtDomain;
using hal::libvirt::WaitForAgentHello;

// Removes this process's domains and state dir when the test program ends.
class VmCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    VmEnv* env = VmEnv::IfCreated();
    if (!env) return;
    env->Cleanup();
    if (!env->state_dir().empty()) {
      std::error_code ec;
      fs::remove_all(env->state_dir(), ec);
    }
  }
};
[[maybe_unused]] ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new VmCleanup);

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VmEnv& env = VmEnv::Get();
    if (!env.skip_reason().empty()) GTEST_SKIP() << env.skip_reason();
    ASSERT_TRUE(env.setup_error().empty()) << env.setup_error();
  }
  VmEnv& env() { return VmEnv::Get(); }
  std::chrono::milliseconds hello_timeout() { return env().hv().options().hello_timeout; }

  // Clones the template snapshot, leaving it paused.
  std::unique_ptr<LibvirtDomain> Clone(const std::string& prefix) {
    auto snap = env().Snapshot();
    EXPECT_TRUE(snap.ok()) << snap.error().message;
    if (!snap.ok()) return nullptr;
    hal::DomainSpec spec;
    spec.name = env().UniqueName(prefix);
    spec.template_name = env().tmpl().name;
    auto dom = env().hv().CloneFromSnapshot(*snap, spec);
    EXPECT_TRUE(dom.ok()) << dom.error().message;
    if (!dom.ok()) return nullptr;
    return std::unique_ptr<LibvirtDomain>(static_cast<LibvirtDomain*>(dom->release()));
  }

  // Everything a destroyed domain must not leave behind.
  void ExpectGone(const std::string& name, const std::string& clone_dir, const std::string& socket) {
    EXPECT_FALSE(QemuRunning(name)) << "QEMU of " << name << " still running";
    EXPECT_FALSE(fs::exists(clone_dir)) << clone_dir;
    EXPECT_FALSE(fs::exists(socket)) << socket;
  }
};

TEST_F(VmTest, ImageIsBuiltCachedAndVerified) {
  const std::string dir = env().image_dir();
  for (const char* f : {"vmlinuz", "initrd.img", "manifest.txt", "SHA256SUMS"}) {
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  }
  std::string cmd = "cd '" + dir + "' && sha256sum --quiet -c SHA256SUMS";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  auto manifest = ReadFileToString(dir + "/manifest.txt");
  ASSERT_TRUE(manifest.ok());
  EXPECT_NE(manifest->find("kernel_package=linux-image-"), std::string::npos);
  EXPECT_NE(manifest->find("virtio_console"), std::string::npos);
}

TEST_F(VmTest, AcceleratorIsProbedAndCached) {
  auto accel = env().hv().Accelerator(env().tmpl());
  ASSERT_TRUE(accel.ok()) << accel.error().message;
  EXPECT_TRUE(*accel == "kvm" || *accel == "tcg") << *accel;
  if (::access("/dev/kvm", R_OK | W_OK) != 0) {
    EXPECT_EQ(*accel, "tcg");
  }
  auto again = env().hv().Accelerator(env().tmpl());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *accel);
}

TEST_F(VmTest, ColdBootToHelloAnswersAndDestroysCleanly) {
  hal::DomainSpec spec;
  spec.name = env().UniqueName("cold");
  auto started = env().hv().StartPaused(env().tmpl(), spec);
  ASSERT_TRUE(started.ok()) << started.error().message;
  std::unique_ptr<LibvirtDomain> dom(static_cast<LibvirtDomain*>(started->release()));
  EXPECT_EQ(dom->state(), DomainState::kPaused);
  const std::string clone_dir = fs::path(dom->console_log()).parent_path().string();
  const std::string socket = dom->control_socket();
  EXPECT_EQ(dom->vchan().socket_dir + "/vchan." + std::to_string(dom->vchan().domid) + ".0.512.sock", socket);
  ASSERT_TRUE(dom->Resume().ok());
  EXPECT_EQ(dom->state(), DomainState::kRunning);
  auto conn = ConnectAgent(*dom);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  auto release = CallAgent(**conn, "uname -r");
  ASSERT_TRUE(release.ok()) << release.error().message;
  EXPECT_NE(release->find("cloud-amd64"), std::string::npos) << *release;
  auto stats = dom->Stats();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_GT(stats->memory_bytes, 0u);
  ASSERT_TRUE(dom->Destroy().ok());
  ASSERT_TRUE(dom->Destroy().ok());  // idempotent
  EXPECT_EQ(dom->state(), DomainState::kShutOff);
  ExpectGone(spec.name, clone_dir, socket);
}

TEST_F(VmTest, SnapshotIsSealedAndRestoredCloneAnswers) {
  auto snap = env().Snapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  const std::string payload = env().hv().options().snapshot_dir + "/odyssey-test.libvirt-qemu.save";
  auto info = snapshot::Verify(payload);
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->template_name, "odyssey-test");
  EXPECT_TRUE(info->fields.count("accel"));

  auto dom = Clone("rest");
  ASSERT_NE(dom, nullptr);
  EXPECT_EQ(dom->state(), DomainState::kPaused);
  ASSERT_TRUE(dom->Resume().ok());
  auto conn = ConnectAgent(*dom);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  auto echo = CallAgent(**conn, "echo hello from the host");
  ASSERT_TRUE(echo.ok()) << echo.error().message;
  EXPECT_EQ(*echo, "hello from the host\n");
  auto release = CallAgent(**conn, "uname -r");
  ASSERT_TRUE(release.ok()) << release.error().message;
  EXPECT_NE(release->find("cloud-amd64"), std::string::npos);
  // Pause and resume again: the agent keeps its connection.
  ASSERT_TRUE(dom->Pause().ok());
  EXPECT_EQ(dom->state(), DomainState::kPaused);
  ASSERT_TRUE(dom->Resume().ok());
  auto again = CallAgent(**conn, "echo again; exit 3");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("exited with 3"), std::string::npos) << again.error().message;
  ASSERT_TRUE(dom->Destroy().ok());
}

// The pool's way: clones restored, resumed, HELLO exchanged, identity refreshed, paused; a
// hit is Resume() + one call. Each clone has its own hostname and RNG stream although all
// were restored from one memory image.
TEST_F(VmTest, PooledClonesGetTheirOwnIdentityAndAnswerAfterResume) {
  auto a = PrepareReadyClone(env(), "ida");
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = PrepareReadyClone(env(), "idb");
  ASSERT_TRUE(b.ok()) << b.error().message;
  std::string random[2];
  int i = 0;
  for (ReadyClone* c : {&*a, &*b}) {
    EXPECT_EQ(c->dom->state(), DomainState::kPaused);
    ASSERT_TRUE(c->dom->Resume().ok());
    auto host = CallAgent(*c->conn, "hostname");
    ASSERT_TRUE(host.ok()) << host.error().message;
    EXPECT_EQ(*host, c->dom->name() + "\n");
    auto rnd = CallAgent(*c->conn, "head -c 32 /dev/urandom | md5sum");
    ASSERT_TRUE(rnd.ok()) << rnd.error().message;
    random[i++] = *rnd;
  }
  EXPECT_NE(random[0], random[1]);
  // The identity tool refuses what it cannot use.
  auto bad = CallAgent(*a->conn, std::string(hal::libvirt::kGuestIdentityTool) + " x", "short seed");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("seed is 10 bytes"), std::string::npos) << bad.error().message;
  for (ReadyClone* c : {&*a, &*b}) {
    c->conn->Close();
    ASSERT_TRUE(c->dom->Destroy().ok());
  }
}

TEST_F(VmTest, TenSequentialClonesLeaveNoQemuOrFilesBehind) {
  for (int i = 0; i < 10; ++i) {
    auto dom = Clone("seq");
    ASSERT_NE(dom, nullptr) << "clone " << i;
    const std::string name = dom->name();
    const std::string clone_dir = fs::path(dom->console_log()).parent_path().string();
    const std::string socket = dom->control_socket();
    EXPECT_TRUE(QemuRunning(name));
    ASSERT_TRUE(dom->Resume().ok());
    auto conn = ConnectAgent(*dom);
    ASSERT_TRUE(conn.ok()) << "clone " << i << ": " << conn.error().message;
    auto echo = CallAgent(**conn, "echo call " + std::to_string(i));
    ASSERT_TRUE(echo.ok()) << echo.error().message;
    EXPECT_EQ(*echo, "call " + std::to_string(i) + "\n");
    ASSERT_TRUE(dom->Destroy().ok());
    ExpectGone(name, clone_dir, socket);
  }
  auto leftovers = env().hv().ListLeftovers();
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(leftovers->empty());
  std::error_code ec;
  EXPECT_TRUE(fs::is_empty(env().state_dir() + "/domains", ec));
}

TEST_F(VmTest, QemuKilledMidCallFailsCleanly) {
  auto dom = Clone("kill");
  ASSERT_NE(dom, nullptr);
  ASSERT_TRUE(dom->Resume().ok());
  auto conn = ConnectAgent(*dom);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  int pid = dom->qemu_pid();
  ASSERT_GT(pid, 0);
  // Kill QEMU while a call runs: the call sees the channel close instead of hanging.
  std::thread killer([pid] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(pid, SIGKILL);
  });
  auto reply = CallAgent(**conn, "sleep 600");
  killer.join();
  EXPECT_FALSE(reply.ok());
  const std::string name = dom->name();
  const std::string clone_dir = fs::path(dom->console_log()).parent_path().string();
  const std::string socket = dom->control_socket();
  // The process may take a moment to die after SIGKILL (it unmaps guest memory first).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (dom->state() == DomainState::kRunning && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_NE(dom->state(), DomainState::kRunning);
  ASSERT_TRUE(dom->Destroy().ok());
  ExpectGone(name, clone_dir, socket);
  // A new clone still works after the crash.
  auto next = Clone("after");
  ASSERT_NE(next, nullptr);
  ASSERT_TRUE(next->Resume().ok());
  ASSERT_TRUE(WaitForAgentHello(next->control_socket(), hello_timeout()).ok());
  ASSERT_TRUE(next->Destroy().ok());
}

// QEMU reads a clone's memory straight from the sealed snapshot file. If that file is cut
// short after it was verified, QEMU's load fails: the clone fails with an error naming the
// file, and no QEMU, socket or clone directory is left behind.
TEST_F(VmTest, TruncatedStreamFailsTheCloneCleanly) {
  auto snap = env().Snapshot();
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  const std::string payload = env().hv().options().snapshot_dir + "/odyssey-test.libvirt-qemu.save";
  const std::string saved = payload + ".keep";
  fs::rename(payload, saved);  // the file or the link to the shared cache; put back below
  fs::copy_file(saved, payload);
  fs::resize_file(payload, fs::file_size(payload) / 2);
  hal::DomainSpec spec;
  spec.name = env().UniqueName("trunc");
  auto dom = env().hv().CloneFromSnapshot(*snap, spec);
  fs::remove(payload);
  fs::rename(saved, payload);
  ASSERT_FALSE(dom.ok());
  const std::string& msg = dom.error().message;
  EXPECT_NE(msg.find("migration stream of " + payload), std::string::npos) << msg;
  EXPECT_NE(msg.find(spec.name), std::string::npos) << msg;
  EXPECT_FALSE(QemuRunning(spec.name));
  EXPECT_FALSE(fs::exists(env().state_dir() + "/domains/" + spec.name));
  auto leftovers = env().hv().ListLeftovers();
  ASSERT_TRUE(leftovers.ok());
  EXPECT_TRUE(leftovers->empty());
  // The intact snapshot still clones.
  auto next = Clone("afttrunc");
  ASSERT_NE(next, nullptr);
  ASSERT_TRUE(next->Destroy().ok());
}

TEST_F(VmTest, CorruptedSnapshotGivesClearErrorThenRebuilds) {
  ASSERT_TRUE(env().Snapshot().ok());
  // Make this process's copy a real file (it may be a link to the shared cache) and flip a
  // byte in the middle of the memory image.
  const std::string payload = env().hv().options().snapshot_dir + "/odyssey-test.libvirt-qemu.save";
  const std::string header = snapshot::HeaderPath(payload);
  for (const std::string& p : {payload, header}) {
    std::string real = fs::canonical(p).string();
    if (real == p) continue;
    fs::remove(p);
    fs::copy_file(real, p);
  }
  const auto size = fs::file_size(payload);
  {
    std::fstream f(payload, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size / 2));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.put(static_cast<char>(c ^ 0x5a));
  }
  auto opened = env().hv().OpenSnapshot(env().tmpl());
  ASSERT_FALSE(opened.ok());
  const std::string& msg = opened.error().message;
  EXPECT_NE(msg.find("odyssey-test"), std::string::npos) << msg;
  EXPECT_NE(msg.find("corrupted"), std::string::npos) << msg;
  EXPECT_NE(msg.find(payload), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(payload));

  // The next prepare rebuilds it, and clones of the rebuilt snapshot answer.
  std::string note;
  auto rebuilt = env().hv().OpenOrPrepareSnapshot(env().tmpl(), &note);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.error().message;
  ASSERT_TRUE(snapshot::Verify(payload).ok());
  hal::DomainSpec spec;
  spec.name = env().UniqueName("rebuilt");
  auto dom = env().hv().CloneFromSnapshot(*rebuilt, spec);
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  auto* ldom = static_cast<LibvirtDomain*>(dom->get());
  ASSERT_TRUE(ldom->Resume().ok());
  auto fd = WaitForAgentHello(ldom->control_socket(), hello_timeout());
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  ASSERT_TRUE(ldom->Destroy().ok());
}

TEST_F(VmTest, DomainsNobodyOwnsAreLeftoversAndGetDestroyed) {
  hal::DomainSpec spec;
  spec.name = env().UniqueName("orphan");
  auto started = env().hv().StartPaused(env().tmpl(), spec);  // paused before the kernel runs
  ASSERT_TRUE(started.ok()) << started.error().message;
  started->reset();  // dropping the object leaves the domain running (the HAL contract)
  EXPECT_TRUE(QemuRunning(spec.name));
  auto leftovers = env().hv().ListLeftovers();
  ASSERT_TRUE(leftovers.ok()) << leftovers.error().message;
  bool found = false;
  for (const auto& l : *leftovers) {
    if (l.kind == "domain" && l.id == spec.name) found = true;
  }
  ASSERT_TRUE(found);
  for (const auto& l : *leftovers) ASSERT_TRUE(env().hv().DestroyLeftover(l).ok()) << l.id;
  EXPECT_FALSE(QemuRunning(spec.name));
  auto after = env().hv().ListLeftovers();
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(after->empty());
}

TEST_F(VmTest, DiskTemplateDomainsGetTheirOwnOverlay) {
  const std::string base = env().state_dir() + "/base.qcow2";
  std::string cmd = "qemu-img create -q -f qcow2 '" + base + "' 16M";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  hal::TemplateSpec tmpl = env().tmpl();
  tmpl.disk = base;
  hal::DomainSpec spec;
  spec.name = env().UniqueName("disk");
  auto started = env().hv().StartPaused(tmpl, spec);  // paused before the kernel runs
  ASSERT_TRUE(started.ok()) << started.error().message;
  auto* dom = static_cast<LibvirtDomain*>(started->get());
  const std::string overlay = fs::path(dom->console_log()).parent_path().string() + "/disk.qcow2";
  ASSERT_TRUE(fs::exists(overlay));
  cmd = "qemu-img info -U '" + overlay + "' | grep -q 'backing file: " + base + "'";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << "overlay is not backed by " << base;
  ASSERT_TRUE(dom->Destroy().ok());
  EXPECT_FALSE(fs::exists(overlay));
  EXPECT_TRUE(fs::exists(base));
  EXPECT_FALSE(QemuRunning(spec.name));
}

TEST_F(VmTest, RefusesForeignSnapshotsAndBadNames) {
  hal::DomainSpec spec;
  spec.name = "ok-name";
  auto dom = env().hv().CloneFromSnapshot(nullptr, spec);
  ASSERT_FALSE(dom.ok());
  EXPECT_NE(dom.error().message.find("not a libvirt snapshot"), std::string::npos);
  spec.name = "../escape";
  auto started = env().hv().StartPaused(env().tmpl(), spec);
  ASSERT_FALSE(started.ok());
  EXPECT_NE(started.error().message.find("invalid domain name"), std::string::npos);
}

}  // namespace
}  // namespace odyssey::testing_vm
