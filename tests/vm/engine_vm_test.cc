// VM templates through the real odyssey CLI and odysseyd: `template build --kind vm`,
// `template ls` (kind, accelerator), `run --dispvm=<vm template> -- uname -r` answered by a
// pooled, snapshot-restored clone running the real qrexec-agent (with its own hostname),
// 20 sequential disposables that leave no QEMU or overlay behind, a QEMU killed mid-call
// (the call fails with a clear error, the engine destroys the clone, the pool refills) and a
// corrupted snapshot file (a clear error naming it; `template build --rebuild` fixes it).
// The guest image and the template snapshot are the VM tests' shared ones (tests/vm/vm_env.h,
// built or booted at most once for all VM test processes), seeded into each daemon's catalog,
// so only the rebuild test boots a VM. Pool size 1.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "base/io.h"
#include "snapshot/catalog.h"
#include "snapshot/snapshot_file.h"
#include "tests/engine/engine_test_util.h"
#include "tests/vm/engine_vm_env.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {
namespace {

namespace fs = std::filesystem;
using engine::testing::CliResult;
using engine::testing::TestDaemon;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kTemplate = kSharedVmTemplate;  // the shared image's and snapshot's name

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

// Pids of live QEMU processes whose command line mentions dir (this daemon's domains).
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

// Polls until pred() holds or the deadline passes; returns pred()'s last value.
template <typename Pred>
bool WaitFor(Pred pred, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
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
        {"backend", "process"}, {"pool_size", "1"}, {"max_domains", "8"}});
  }
  void TearDown() override {
    if (!daemon_) return;
    daemon_->Stop();
    EXPECT_TRUE(QemusUnder(daemon_->state()).empty()) << "QEMU left behind by odysseyd";
    if (HasFailure()) std::fprintf(stderr, "odysseyd log:\n%s\n", daemon_->Log().c_str());
    daemon_.reset();
  }

  // The daemon's VM catalog gets the shared snapshot (tests/vm/engine_vm_env.h).
  void SeedCatalog(bool private_copy = false) {
    Status s = SeedVmCatalog(VmEnv::Get(), daemon_->state(), private_copy);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }

  // The CLI against this daemon; image_cache: the guest image cache the builder uses.
  CliResult Cli(std::vector<std::string> args, const std::string& image_cache = "") {
    if (image_cache.empty()) return daemon_->Cli(std::move(args));
    args.insert(args.begin(), {ODYSSEY_CLI_PATH, "--no-autostart", "--socket", daemon_->socket()});
    return engine::testing::RunProgram(args, "", {"ODYSSEY_IMAGE_CACHE=" + image_cache});
  }

  CliResult Run(std::vector<std::string> argv) {
    std::vector<std::string> args = {"run", std::string("--dispvm=") + kTemplate, "--"};
    args.insert(args.end(), argv.begin(), argv.end());
    return Cli(args);
  }

  // `odyssey template build` with its progress checked.
  void BuildTemplate(const std::string& image_cache = "", bool rebuild = false) {
    std::vector<std::string> args = {"template", "build", kTemplate, "--kind", "vm"};
    if (rebuild) args.push_back("--rebuild");
    CliResult r = Cli(args, image_cache);
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

  // The template's pool after in-flight preparation finished.
  json Pool() {
    auto c = daemon_->Client();
    auto r = c.Request({{"op", "pool"}, {"template", kTemplate}, {"wait", true}});
    return r.ok() ? (*r)["pools"][0] : json();
  }

  bool NoOverlays() {
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(daemon_->state() + "/vm", ec))
      if (e.path().extension() == ".qcow2" || e.path().filename() == "restore.save") return false;
    const std::string domains = daemon_->state() + "/vm/domains";
    return !fs::exists(domains, ec) || fs::is_empty(domains, ec);
  }

  std::unique_ptr<TestDaemon> daemon_;
};

// One daemon for the whole life cycle (each TEST is a process of its own under ctest, and
// every process pays a daemon, a libvirt connection and a first restore).
TEST_F(EngineVmTest, RunTwentyDisposablesQemuKilledMidCallNothingLeftBehind) {
  SeedCatalog();
  ASSERT_TRUE(daemon_->Start()) << daemon_->Log();
  BuildTemplate();
  CliResult ls = Cli({"template", "ls"});
  ASSERT_EQ(ls.exit_code, 0) << ls.err;
  const bool kvm = ::access("/dev/kvm", R_OK | W_OK) == 0;
  bool listed = false;
  std::istringstream lines(ls.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(kTemplate, 0) != 0) continue;
    listed = true;
    EXPECT_NE(line.find(" vm "), std::string::npos) << line;
    if (kvm) {
      EXPECT_TRUE(line.find(" kvm ") != std::string::npos || line.find(" tcg ") != std::string::npos) << line;
    } else {
      EXPECT_NE(line.find(" tcg "), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(listed) << ls.out;

  // A pool hit through the real CLI prints the guest's kernel, not the host's.
  const std::string kernel = GuestKernel();
  ASSERT_FALSE(kernel.empty());
  ASSERT_EQ(Pool().value("ready", 0), 1) << Pool().dump();
  CliResult first = Run({"uname", "-r"});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.out, kernel + "\n");
  EXPECT_EQ(Pool().value("hits", 0), 1) << Pool().dump();

  // 20 sequential disposables, each with its own identity (hostname = the disposable).
  std::set<std::string> hostnames;
  for (int i = 0; i < 20; ++i) {
    CliResult r = Run({"uname", "-n"});
    ASSERT_EQ(r.exit_code, 0) << "run " << i << ": " << r.err;
    EXPECT_NE(r.out, "odyssey\n") << "run " << i << " kept the template's hostname";
    hostnames.insert(r.out);
  }
  EXPECT_EQ(hostnames.size(), 20u);
  // A QEMU killed mid-call: the call fails with a clear error, the engine destroys the dead
  // clone, the pool refills.
  ASSERT_EQ(Pool().value("ready", 0), 1);
  CliResult r;
  std::thread caller([&] { r = Run({"sleep", "600"}); });
  // The running disposable is the one `odyssey ls` shows as running; kill its QEMU.
  pid_t victim = -1;
  std::string victim_name;
  WaitFor([&] {
    CliResult listing = Cli({"ls", "--json"});
    json doms = json::parse(listing.out, nullptr, false);
    if (!doms.is_array()) return false;
    for (auto& d : doms) {
      if (d.value("state", "") != "running") continue;
      victim_name = d.value("name", std::string());
      auto pids = QemusUnder(daemon_->state(), "guest=" + victim_name + ",");
      if (!pids.empty()) victim = pids[0];
    }
    return victim > 0;
  }, std::chrono::seconds(60));
  ASSERT_GT(victim, 0) << "no running VM disposable found";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  caller.join();
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find(victim_name), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("died during the call"), std::string::npos) << r.err;
  // The engine destroyed the dead clone (no domain, no QEMU, no overlay of it) and the pool
  // is full again; the next call works.
  EXPECT_TRUE(WaitFor([&] {
    CliResult listing = Cli({"ls", "--json"});
    return listing.out.find("\"" + victim_name + "\"") == std::string::npos;
  }, std::chrono::seconds(30)));
  EXPECT_TRUE(WaitFor([&] { return !fs::exists(daemon_->state() + "/vm/domains/" + victim_name); },
                      std::chrono::seconds(30)));
  EXPECT_TRUE(QemusUnder(daemon_->state(), "guest=" + victim_name + ",").empty());
  json pool = Pool();
  EXPECT_EQ(pool.value("ready", 0), 1) << pool.dump();
  CliResult again = Run({"echo", "alive"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, "alive\n");

  // Shrink the pool to nothing: every QEMU and every overlay of this daemon is gone.
  CliResult shrink = Cli({"pool", kTemplate, "--size", "0", "--wait"});
  ASSERT_EQ(shrink.exit_code, 0) << shrink.err;
  EXPECT_TRUE(WaitFor([&] { return QemusUnder(daemon_->state()).empty(); }, std::chrono::seconds(30)));
  EXPECT_TRUE(WaitFor([&] { return NoOverlays(); }, std::chrono::seconds(10)));
  CliResult ls_after = Cli({"ls", "--json"});
  EXPECT_EQ(ls_after.out.find(kTemplate), std::string::npos) << ls_after.out;
}

TEST_F(EngineVmTest, CorruptedSnapshotIsNamedAndTemplateBuildRebuildFixesIt) {
  // A private image cache (a copy of the shared image, the shared .debs) so that --rebuild
  // rebuilds nothing another test process is reading.
  VmEnv& env = VmEnv::Get();
  const std::string cache = daemon_->dir() + "/images";
  const fs::path shared_image = env.image_dir();
  fs::create_directories(cache);
  fs::copy(shared_image, fs::path(cache) / shared_image.filename());
  fs::create_directory_symlink(shared_image.parent_path() / "debs", fs::path(cache) / "debs");
  // Flip one byte in the middle of the daemon's own copy of the snapshot.
  SeedCatalog(/*private_copy=*/true);
  const std::string payload = daemon_->state() + "/vm/snapshots/" + kTemplate + ".libvirt-qemu.save";
  {
    UniqueFd fd(::open(payload.c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_TRUE(fd);
    const off_t at = static_cast<off_t>(fs::file_size(payload) / 2);
    char c = 0;
    ASSERT_EQ(::pread(fd.get(), &c, 1, at), 1);
    c = static_cast<char>(c ^ 0x5a);
    ASSERT_EQ(::pwrite(fd.get(), &c, 1, at), 1);
  }
  ASSERT_TRUE(daemon_->Start()) << daemon_->Log();

  // template build fails at the snapshot step with the file named and the remedy given.
  CliResult build = Cli({"template", "build", kTemplate, "--kind", "vm"}, cache);
  EXPECT_NE(build.exit_code, 0) << build.err;
  EXPECT_NE(build.err.find(payload), std::string::npos) << build.err;
  EXPECT_NE(build.err.find("--rebuild"), std::string::npos) << build.err;
  // Calls fail the same way (no quiet rebuild, never another backend).
  CliResult run = Run({"uname", "-r"});
  EXPECT_NE(run.exit_code, 0) << run.out;
  EXPECT_NE(run.err.find(payload), std::string::npos) << run.err;
  EXPECT_TRUE(QemusUnder(daemon_->state()).empty());

  // --rebuild: the image is rebuilt, the template booted and saved again, and calls work.
  BuildTemplate(cache, /*rebuild=*/true);
  EXPECT_EQ(Pool().value("ready", 0), 1) << Pool().dump();
  CliResult again = Run({"uname", "-r"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, GuestKernel() + "\n");
  auto verified = snapshot::Verify(payload);
  EXPECT_TRUE(verified.ok()) << verified.error().message;
}

}  // namespace
}  // namespace odyssey::testing_vm
