// Helpers for the engine's integration tests: a hermetic odysseyd (temp state dir, own
// socket, own XDG_RUNTIME_DIR) started as a real process, and a runner for the odyssey CLI.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <sys/stat.h>

#include <cstring>

#include "base/io.h"
#include "base/unique_fd.h"
#include "engine/client.h"
#include "engine/process_backend.h"

namespace odyssey::engine::testing {

struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

inline std::string MakeTempDir(const char* tag) {
  std::string t = std::string("/tmp/odyssey-") + tag + "-XXXXXX";
  std::vector<char> buf(t.begin(), t.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) ::abort();
  return buf.data();
}

// Runs argv with stdin_data on stdin; collects stdout/stderr.
inline CliResult RunProgram(const std::vector<std::string>& args, const std::string& stdin_data = "",
                            const std::vector<std::string>& extra_env = {}) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) || ::pipe2(out, O_CLOEXEC) || ::pipe2(err, O_CLOEXEC)) ::abort();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) env_store.push_back(*e);
  for (auto& e : extra_env) env_store.push_back(e);
  std::vector<char*> argv, envp;
  std::vector<std::string> a = args;
  for (auto& s : a) argv.push_back(s.data());
  argv.push_back(nullptr);
  for (auto& s : env_store) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t pid;
  int rc = ::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  CliResult r;
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    ::close(err[0]);
    r.err = "spawn failed";
    return r;
  }
  std::thread writer([fd = in[1], data = stdin_data] {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    ::close(fd);
  });
  auto drain = [](int fd, std::string* s) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) s->append(buf, static_cast<size_t>(n));
    ::close(fd);
  };
  std::thread t1(drain, out[0], &r.out), t2(drain, err[0], &r.err);
  int status = 0;
  ::waitpid(pid, &status, 0);
  writer.join();
  t1.join();
  t2.join();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

using Conf = std::map<std::string, std::string>;

// A real odysseyd in the foreground, hermetic, destroyed with the object.
class TestDaemon {
 public:
  explicit TestDaemon(Conf config = {}, std::string dir = "")
      : dir_(dir.empty() ? MakeTempDir("engine") : dir), config_(std::move(config)) {
    std::filesystem::create_directories(dir_ + "/run");
    socket_ = config_.count("socket_path") ? config_["socket_path"] : dir_ + "/run/odysseyd.sock";
    state_ = config_.count("state_dir") ? config_["state_dir"] : dir_ + "/state";
    std::map<std::string, std::string> c = {
        {"socket_path", socket_},
        {"state_dir", state_},
        {"backend", "process"},
        {"pool_size", "2"},
        {"log_level", "debug"},
        {"log_file", dir_ + "/odysseyd.log"},
        {"service_path", std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services"},
        {"stub_path", ODYSSEY_STUB_PATH}};
    for (auto& [k, v] : config_) c[k] = v;
    std::ofstream f(dir_ + "/odysseyd.conf");
    for (auto& [k, v] : c) f << k << " = " << v << "\n";
  }
  ~TestDaemon() {
    Stop();
    if (!keep_) std::filesystem::remove_all(dir_);
  }

  // Starts odysseyd --foreground and waits until it answers ping. False if it exited.
  bool Start() {
    std::vector<std::string> args = {ODYSSEYD_PATH, "--foreground", "--config", dir_ + "/odysseyd.conf"};
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    std::string xdg = "XDG_RUNTIME_DIR=" + dir_ + "/run";
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e) env_store.push_back(*e);
    env_store.push_back(xdg);
    std::vector<char*> envp;
    for (auto& s : env_store) envp.push_back(s.data());
    envp.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    std::string errlog = dir_ + "/stderr.log";
    posix_spawn_file_actions_addopen(&fa, 2, errlog.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return false;
    for (;;) {
      auto c = AdminClient::Connect(socket_);
      if (c.ok() && c->Request({{"op", "ping"}}).ok()) return true;
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      ::usleep(20000);
    }
  }
  // SIGTERM and wait; returns the exit status.
  int Stop() {
    if (pid_ <= 0) return 0;
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }
  void Kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  AdminClient Client() {
    auto c = AdminClient::Connect(socket_);
    if (!c.ok()) ::abort();
    return std::move(*c);
  }
  // Runs the odyssey CLI against this daemon.
  CliResult Cli(std::vector<std::string> args, const std::string& stdin_data = "") {
    args.insert(args.begin(), {ODYSSEY_CLI_PATH, "--no-autostart", "--socket", socket_});
    return RunProgram(args, stdin_data);
  }
  // Helper processes (pool members and running disposables) of this daemon's state dir.
  int CountHelpers() {
    auto b = ProcessBackend::Create({ODYSSEY_STUB_PATH, state_, {}});
    if (!b.ok()) return -1;
    return b->get()->CountLive();
  }
  std::string Log() {
    std::ifstream f(dir_ + "/odysseyd.log");
    std::ifstream g(dir_ + "/stderr.log");
    return std::string(std::istreambuf_iterator<char>(f), {}) +
           std::string(std::istreambuf_iterator<char>(g), {});
  }
  // Waits until the pool of the default template finished preparing.
  nlohmann::json PoolWait() {
    auto c = Client();
    return c.Request({{"op", "pool"}, {"wait", true}}).value();
  }
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  const std::string& socket() const { return socket_; }
  const std::string& state() const { return state_; }
  void keep_dir() { keep_ = true; }

 private:
  std::string dir_, socket_, state_;
  std::map<std::string, std::string> config_;
  pid_t pid_ = -1;
  bool keep_ = false;
};

inline int CountFds(pid_t pid) {
  int n = 0;
  for ([[maybe_unused]] auto& e :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    ++n;
  return n;
}

}  // namespace odyssey::engine::testing
