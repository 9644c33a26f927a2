// VM templates through the real odyssey CLI and odysseyd: `template build --kind vm`,
// `template ls` (kind, accelerator), `run --dispvm=<vm template> -- uname -r` answered by a
// pooled, snapshot-restored clone running the real qrexec-agent, 20 sequential disposables
// that leave no QEMU or overlay behind, and a QEMU killed mid-call (the call fails, the pool
// refills). The guest image and the template snapshot are the VM tests' shared ones
// (tests/vm/vm_env.h), linked into the daemon's catalog so CI boots no extra VM.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <cstring>
#include <thread>

#include "base/io.h"
#include "engine/vm_backend.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"
#include "tests/engine/engine_test_util.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {
namespace {

namespace fs = std::filesystem;
using engine::testing::CliResult;
using engine::testing::TestDaemon;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kTemplate[] = "odyssey-test";  // the shared image's and snapshot's name

// Removes this process's own VM state (VmEnv) when the program ends.
class VmCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    VmEnv* env = VmEnv::IfCreated();
    if (!env) return;
    env->Cleanup();
    std::error_code ec;
    if (!env->state_dir().empty()) fs::remove_all(env->state_dir(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new VmCleanup);

// Pids of QEMU processes whose command line mentions dir (this daemon's domains).
std::vector<pid_t> QemusUnder(const std::string& dir, const std::string& also = "") {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    auto cmdline = ReadFileToString(entry.path().string() + "/cmdline", 1 << 20);
    if (!cmdline.ok() || cmdline->find("qemu-system") == std::string::npos) continue;
    if (cmdline->find(dir) == std::string::npos) continue;
    if (!also.empty() && cmdline->find(also) == std::string::npos) continue;
    out.push_back(std::stoi(pid));
  }
  return out;
}

class EngineVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    VmEnv& env = VmEnv::Get();
    if (!env.skip_reason().empty()) GTEST_SKIP() << env.skip_reason();
    ASSERT_TRUE(env.setup_error().empty()) << env.setup_error();
    auto snap = env.Snapshot();
    ASSERT_TRUE(snap.ok()) << snap.error().message;
    daemon_ = std::make_unique<TestDaemon>(engine::testing::Conf{
        {"backend", "process"}, {"pool_size", "2"}, {"max_domains", "32"}});
    SeedCatalog(env);
    ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  }
  void TearDown() override {
    if (!daemon_) return;
    daemon_->Stop();
    EXPECT_TRUE(QemusUnder(daemon_->state()).empty()) << "QEMU left behind by odysseyd";
    if (HasFailure()) std::fprintf(stderr, "odysseyd log:\n%s\n", daemon_->Log().c_str());
    daemon_.reset();
  }

  // The daemon's VM catalog gets the shared snapshot, its accelerator and image identity,
  // and libvirt's shared QEMU capability cache, so nothing is booted or probed again.
  void SeedCatalog(VmEnv& env) {
    const std::string dir = daemon_->state() + "/vm/snapshots";
    fs::create_directories(dir);
    const std::string from = env.hv().options().snapshot_dir + "/" + kTemplate + ".libvirt-qemu.save";
    const std::string to = dir + "/" + kTemplate + ".libvirt-qemu.save";
    fs::create_symlink(fs::canonical(from), to);
    fs::create_symlink(fs::canonical(snapshot::HeaderPath(from)), snapshot::HeaderPath(to));
    auto accel = ReadFileToString(env.hv().options().snapshot_dir + "/" + kTemplate + ".accel", 16);
    if (accel.ok()) {
      ASSERT_TRUE(WriteFileAtomic(dir + "/" + kTemplate + ".accel", *accel).ok());
    }
    auto image = engine::VerifyGuestImage(env.image_dir());
    ASSERT_TRUE(image.ok()) << image.error().message;
    ASSERT_TRUE(WriteFileAtomic(dir + "/" + kTemplate + ".image", *image).ok());
    const fs::path caps = fs::path(env.image_dir()).parent_path().parent_path() / "libvirt-qemu-caps";
    fs::create_directories(daemon_->state() + "/libvirt/cache");
    std::error_code ec;
    fs::create_directory_symlink(caps, daemon_->state() + "/libvirt/cache/qemu", ec);
  }

  CliResult Cli(std::vector<std::string> args) { return daemon_->Cli(std::move(args)); }

  void BuildTemplate() {
    CliResult r = Cli({"template", "build", kTemplate, "--kind", "vm"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    for (const char* step : {"[1/4]", "[2/4]", "[3/4]", "[4/4]", "build-image: [2/5]"})
      EXPECT_NE(r.err.find(step), std::string::npos) << step << " missing in:\n" << r.err;
  }

  std::string GuestKernel() {
    auto manifest = ReadFileToString(VmEnv::Get().image_dir() + "/manifest.txt");
    if (!manifest.ok()) return "";
    size_t at = manifest->find("kernel_version=");
    if (at == std::string::npos) return "";
    at += std::strlen("kernel_version=");
    return manifest->substr(at, manifest->find('\n', at) - at);
  }

  json Pools() {
    auto c = daemon_->Client();
    auto r = c.Request({{"op", "pool"}, {"template", kTemplate}, {"wait", true}});
    return r.ok() ? (*r)["pools"][0] : json();
  }

  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(EngineVmTest, BuildListRunAndTwentyDisposablesLeaveNothingBehind) {
  BuildTemplate();
  CliResult ls = Cli({"template", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  const std::string accel = ::access("/dev/kvm", R_OK | W_OK) == 0 ? "" : "tcg";
  bool listed = false;
  std::istringstream lines(ls.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(kTemplate, 0) != 0) continue;
    listed = true;
    EXPECT_NE(line.find(" vm "), std::string::npos) << line;
    EXPECT_NE(line.find(accel.empty() ? "kvm" : accel), std::string::npos) << line;
  }
  EXPECT_TRUE(listed) << ls.out;

  const std::string kernel = GuestKernel();
  ASSERT_FALSE(kernel.empty());
  EXPECT_EQ(Pools().value("ready", 0), 2) << Pools().dump();
  for (int i = 0; i < 20; ++i) {
    CliResult r = Cli({"run", std::string("--dispvm=") + kTemplate, "--", "uname", "-r"});
    ASSERT_EQ(r.exit_code, 0) << "run " << i << ": " << r.err;
    EXPECT_EQ(r.out, kernel + "\n") << "run " << i;
  }
  json pool = Pools();
  EXPECT_GE(pool.value("hits", 0), 1) << pool.dump();
  // Shrink the pool to nothing: every QEMU and every overlay of this daemon is gone.
  CliResult shrink = Cli({"pool", kTemplate, "--size", "0", "--wait"});
  ASSERT_EQ(shrink.exit_code, 0) << shrink.err;
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!QemusUnder(daemon_->state()).empty() && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(QemusUnder(daemon_->state()).empty());
  std::error_code ec;
  const std::string domains = daemon_->state() + "/vm/domains";
  EXPECT_TRUE(!fs::exists(domains, ec) || fs::is_empty(domains, ec));
  for (const auto& e : fs::recursive_directory_iterator(daemon_->state() + "/vm", ec))
    EXPECT_NE(e.path().extension(), ".qcow2") << e.path();
}

TEST_F(EngineVmTest, QemuKilledMidCallFailsTheCallAndThePoolRefills) {
  BuildTemplate();
  CliResult r;
  std::thread caller([&] { r = Cli({"run", std::string("--dispvm=") + kTemplate, "--", "sleep", "600"}); });
  // The running disposable is the one `odyssey ls` shows as running; kill its QEMU.
  pid_t victim = -1;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (victim < 0 && Clock::now() < deadline) {
    CliResult ls = Cli({"ls", "--json"});
    json doms = json::parse(ls.out, nullptr, false);
    if (doms.is_array()) {
      for (auto& d : doms) {
        if (d.value("state", "") != "running") continue;
        auto pids = QemusUnder(daemon_->state(), "guest=" + d.value("name", std::string()) + ",");
        if (!pids.empty()) victim = pids[0];
      }
    }
    if (victim < 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(victim, 0) << "no running VM disposable found";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  caller.join();
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_FALSE(r.err.empty());
  // The pool is full again and the next call works.
  json pool = Pools();
  EXPECT_EQ(pool.value("ready", 0), 2) << pool.dump();
  CliResult again = Cli({"run", std::string("--dispvm=") + kTemplate, "--", "echo", "alive"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "alive\n");
}

}  // namespace
}  // namespace odyssey::testing_vm
