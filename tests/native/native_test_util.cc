#include "tests/native/native_test_util.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace odyssey::hal::native::testing {
namespace fs = std::filesystem;

std::string ProbePath() { return ODYSSEY_TEST_PROBE; }

std::string LeakCounts::Describe() const {
  std::ostringstream s;
  s << "processes=" << processes << " leftovers=" << leftovers << " files=" << files
    << " mounts=" << mounts;
  return s.str();
}

void NativeTest::SetUp() {
  if (::geteuid() != 0) GTEST_SKIP() << "the native backend needs root";
  if (::access("/proc/self/ns/user", F_OK) != 0) GTEST_SKIP() << "no user namespaces";
  if (::access("/sys/fs/cgroup/freezer", F_OK) != 0) GTEST_SKIP() << "no cgroup v1 freezer";
  char tmpl[] = "/tmp/odyssey-native-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  state_dir_ = tmpl;
  // A host uid range of our own: process counts then see only this test's domains.
  options_.ids.host_base = 0x70000000u + static_cast<uint32_t>(::getpid() % 4000 + 1) * 65536u;
  auto hv = OpenNative(state_dir_, options_);
  ASSERT_TRUE(hv.ok()) << hv.error().message;
  hv_ = std::move(*hv);
}

void NativeTest::TearDown() {
  hv_.reset();
  if (!state_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(state_dir_, ec);
  }
}

TemplateSpec NativeTest::HostTemplate() const {
  TemplateSpec t;
  t.name = "host";
  t.agent_path = ProbePath();
  return t;
}

DomainSpec NativeTest::Spec(const std::string& name) const {
  DomainSpec s;
  s.name = name;
  s.template_name = "host";
  s.memory_limit_bytes = 128ull << 20;
  s.pids_limit = 64;
  return s;
}

LeakCounts NativeTest::Count() const {
  LeakCounts c;
  const uint32_t lo = options_.ids.host_base, hi = lo + options_.ids.count;
  for (auto& e : fs::directory_iterator("/proc")) {
    std::string name = e.path().filename();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(e.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      // Zombies hold nothing but a pid; they are their parent's (or pid 1's) to reap.
      if (line.rfind("State:", 0) == 0 && line.find('Z') != std::string::npos) break;
      if (line.rfind("Uid:", 0) == 0) {
        uint64_t uid = std::strtoull(line.c_str() + 4, nullptr, 10);
        if (uid >= lo && uid < hi) ++c.processes;
        break;
      }
    }
  }
  auto fresh = OpenNative(state_dir_, options_);
  if (fresh.ok()) {
    auto left = (*fresh)->ListLeftovers();
    c.leftovers = left.ok() ? static_cast<int>(left->size()) : -1;
  }
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(state_dir_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (!it->is_directory(ec)) ++c.files;
  }
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) c.mounts += line.find(state_dir_) != std::string::npos;
  return c;
}

bool NativeTest::WaitShutOff(Domain& domain) const {
  for (int i = 0; i < 3000; ++i) {
    if (domain.state() == DomainState::kShutOff) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

UniqueFd ConnectProbe(const VchanEndpoint& ep) {
  std::string path = ep.socket_dir + "/vchan." + std::to_string(ep.domid) + ".0.512.sock";
  for (int attempt = 0; attempt < 2000; ++attempt) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
      if (Command(fd.get(), "") == "hello") return fd;
      return UniqueFd();
    }
    if (errno != ENOENT && errno != ECONNREFUSED) return UniqueFd();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return UniqueFd();
}

std::string Command(int fd, const std::string& line, bool multi_line) {
  if (!line.empty()) {
    std::string msg = line + "\n";
    if (::send(fd, msg.data(), msg.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(msg.size())) return {};
  }
  std::string out, current;
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n <= 0) return multi_line ? out : std::string();
    if (c != '\n') {
      current += c;
      continue;
    }
    if (!multi_line) return current;
    if (current == "end") return out;
    out += current + "\n";
    current.clear();
  }
}

std::map<std::string, std::string> ParseProbe(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto eq = line.find('=');
    if (eq != std::string::npos) kv[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return kv;
}

}  // namespace odyssey::hal::native::testing
