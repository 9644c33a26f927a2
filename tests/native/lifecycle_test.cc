// Native domains' life cycle: paused clones, resume/pause, stats, destroy leaving nothing,
// many domains in a row and at once, and leftovers of a killed owner.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <thread>
#include <vector>

#include "tests/native/native_test_util.h"

extern char** environ;

namespace odyssey::hal::native::testing {
namespace {

class LifecycleTest : public NativeTest {};

TEST_F(LifecycleTest, CloneIsPausedResumePauseStatsDestroy) {
  LeakCounts before = Count();
  auto snap = hv_->PrepareSnapshot(HostTemplate());
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  EXPECT_EQ((*snap)->template_name(), "host");
  auto dom = hv_->CloneFromSnapshot(*snap, Spec("life1"));
  ASSERT_TRUE(dom.ok()) << dom.error().message;
  Domain& d = **dom;
  EXPECT_EQ(d.name(), "life1");
  EXPECT_EQ(d.state(), DomainState::kPaused);
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_EQ(d.state(), DomainState::kRunning);
  UniqueFd fd = ConnectProbe(d.vchan());
  ASSERT_TRUE(fd.valid());
  auto stats = d.Stats();
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_GT(stats->memory_bytes, 0u);
  EXPECT_EQ(stats->pids, 2u);  // init + probe
  ASSERT_TRUE(d.Pause().ok());
  EXPECT_EQ(d.state(), DomainState::kPaused);
  ASSERT_TRUE(d.Resume().ok());
  EXPECT_EQ(Command(fd.get(), "read /etc/hostname").rfind("content:", 0), 0u);
  ASSERT_TRUE(d.Destroy().ok());
  EXPECT_EQ(d.state(), DomainState::kShutOff);
  EXPECT_TRUE(d.Destroy().ok());  // idempotent
  EXPECT_FALSE(d.Resume().ok());
  snap->reset();
  dom->reset();
  EXPECT_EQ(Count(), before) << "before: " << before.Describe() << " after: " << Count().Describe();
}

TEST_F(LifecycleTest, DuplicateAndBadNamesAreRefused) {
  auto snap = hv_->PrepareSnapshot(HostTemplate());
  ASSERT_TRUE(snap.ok()) << snap.error().message;
  auto a = hv_->CloneFromSnapshot(*snap, Spec("dup"));
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = hv_->CloneFromSnapshot(*snap, Spec("dup"));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.error().message.find("dup"), std::string::npos) << b.error().message;
  for (const char* bad : {"", "../x", "a/b", "-x", "with space"}) {
    EXPECT_FALSE(hv_->CloneFromSnapshot(*snap, Spec(bad)).ok()) << bad;
  }
  EXPECT_TRUE((*a)->Destroy().ok());
}

TEST_F(LifecycleTest, MissingAgentIsAClearError) {
  TemplateSpec t = HostTemplate();
  t.agent_path = state_dir_ + "/no-such-agent";
  auto snap = hv_->PrepareSnapshot(t);
  ASSERT_FALSE(snap.ok());
  EXPECT_NE(snap.error().message.find("no-such-agent"), std::string::npos) << snap.error().message;
}

TEST_F(LifecycleTest, ColdStartPausedWorks) {
  LeakCounts before = Count();
  {
    auto dom = hv_->StartPaused(HostTemplate(), Spec("cold1"));
    ASSERT_TRUE(dom.ok()) << dom.error().message;
    EXPECT_EQ((*dom)->state(), DomainState::kPaused);
    ASSERT_TRUE((*dom)->Resume().ok());
    EXPECT_TRUE(ConnectProbe((*dom)->vchan()).valid());
    EXPECT_TRUE((*dom)->Destroy().ok());
  }
  EXPECT_EQ(Count(), before) << Count().Describe();
}

TEST_F(LifecycleTest, TwoHundredSequentialDomainsLeakNothing) {
  LeakCounts before = Count();
  {
    auto snap = hv_->PrepareSnapshot(HostTemplate());
    ASSERT_TRUE(snap.ok()) << snap.error().message;
    for (int i = 0; i < 200; ++i) {
      auto dom = hv_->CloneFromSnapshot(*snap, Spec("seq" + std::to_string(i)));
      ASSERT_TRUE(dom.ok()) << i << ": " << dom.error().message;
      ASSERT_TRUE((*dom)->Resume().ok());
      ASSERT_TRUE(ConnectProbe((*dom)->vchan()).valid()) << i;
      ASSERT_TRUE((*dom)->Destroy().ok()) << i;
    }
  }
  EXPECT_EQ(Count(), before) << Count().Describe();
}

TEST_F(LifecycleTest, ThirtyTwoConcurrentDomainsLeakNothing) {
  LeakCounts before = Count();
  {
    auto snap = hv_->PrepareSnapshot(HostTemplate());
    ASSERT_TRUE(snap.ok()) << snap.error().message;
    const int with_zygote = Count().processes;
    constexpr int kCount = 32;
    std::vector<DomainPtr> domains(kCount);
    std::vector<std::string> errors(kCount);
    std::vector<std::thread> threads;
    for (int i = 0; i < kCount; ++i) {
      threads.emplace_back([&, i] {
        auto dom = hv_->CloneFromSnapshot(*snap, Spec("par" + std::to_string(i)));
        if (!dom.ok()) {
          errors[i] = dom.error().message;
          return;
        }
        domains[i] = std::move(*dom);
      });
    }
    for (auto& t : threads) t.join();
    threads.clear();
    for (int i = 0; i < kCount; ++i) ASSERT_TRUE(domains[i]) << i << ": " << errors[i];
    EXPECT_EQ(Count().processes, with_zygote + 2 * kCount);
    for (int i = 0; i < kCount; ++i) {
      threads.emplace_back([&, i] {
        if (!domains[i]->Resume().ok()) errors[i] = "resume failed";
        else if (!ConnectProbe(domains[i]->vchan()).valid()) errors[i] = "no hello";
        else if (auto s = domains[i]->Destroy(); !s.ok()) errors[i] = s.error().message;
      });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < kCount; ++i) EXPECT_EQ(errors[i], "") << i;
  }
  EXPECT_EQ(Count(), before) << Count().Describe();
}

TEST_F(LifecycleTest, LeftoversOfAKilledOwnerAreFoundAndCleaned) {
  LeakCounts before = Count();
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  std::string base = std::to_string(options_.ids.host_base);
  std::string owner = ODYSSEY_TEST_OWNER;
  std::string probe = ProbePath();
  char* argv[] = {owner.data(), state_dir_.data(), probe.data(), base.data(), nullptr};
  pid_t pid;
  ASSERT_EQ(::posix_spawn(&pid, owner.c_str(), &actions, nullptr, argv, environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  std::string line = Command(out[0], "");
  ::close(out[0]);
  ASSERT_EQ(line, "ready");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);

  LeakCounts after_kill = Count();
  // Two domains (init + probe each) survive their owner; its zygote exits or is exiting.
  EXPECT_GE(after_kill.processes, before.processes + 4);
  EXPECT_LE(after_kill.processes, before.processes + 5);
  auto left = hv_->ListLeftovers();
  ASSERT_TRUE(left.ok()) << left.error().message;
  int cgroups = 0, domains = 0;
  for (auto& l : *left) {
    cgroups += l.kind == "cgroup";
    domains += l.kind == "domain";
  }
  EXPECT_EQ(cgroups, 4);  // two domains, the zygote and the owner's freezer pin
  EXPECT_EQ(domains, 2);
  for (auto& l : *left) EXPECT_TRUE(hv_->DestroyLeftover(l).ok()) << l.kind << " " << l.id;
  EXPECT_EQ(Count(), before) << Count().Describe();
  EXPECT_FALSE(hv_->DestroyLeftover({"cgroup", "not-ours"}).ok());
  EXPECT_FALSE(hv_->DestroyLeftover({"domain", "../../etc"}).ok());
}

TEST(HypervisorOpenTest, DispatchesByUri) {
  if (::geteuid() != 0) GTEST_SKIP() << "the native backend needs root";
  char tmpl[] = "/tmp/odyssey-open-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  auto native = Hypervisor::Open("native:///", tmpl);
  ASSERT_TRUE(native.ok()) << native.error().message;
  EXPECT_EQ((*native)->uri(), "native:///");
  EXPECT_TRUE(Hypervisor::Open("", tmpl).ok());
  auto bogus = Hypervisor::Open("bogus:///", tmpl);
  ASSERT_FALSE(bogus.ok());
  EXPECT_NE(bogus.error().message.find("bogus"), std::string::npos);
  EXPECT_FALSE(Hypervisor::Open("native:///other", tmpl).ok());
  EXPECT_EQ(ToString(DomainState::kPaused), "paused");
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace odyssey::hal::native::testing
