#include "tests/qrexec/test_env.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace odyssey::qrexec::testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

uint64_t Fnv1a(const std::string& data) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : data) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

QrexecEnv::QrexecEnv() {
  char tmpl[] = "/tmp/qrexec-it-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  root_ = tmpl;
  ::mkdir(vchan_dir().c_str(), 0755);
  ::mkdir(socket_dir().c_str(), 0755);
}

QrexecEnv::~QrexecEnv() {
  std::vector<pid_t> pids = pids_;  // Kill() edits pids_
  for (pid_t p : pids) Kill(p);
  std::string cmd = "rm -rf '" + root_ + "'";
  (void)!std::system(cmd.c_str());
}

std::string QrexecEnv::rpc_dir(int domid) const { return root_ + "/rpc" + std::to_string(domid); }
std::string QrexecEnv::odyssey_dir(int domid) const { return root_ + "/ody" + std::to_string(domid); }
std::string QrexecEnv::agent_socket(int domid) const {
  return root_ + "/agent" + std::to_string(domid) + ".sock";
}
std::string QrexecEnv::Bin(const std::string& name) const { return std::string(QREXEC_BIN_DIR) + "/" + name; }

void QrexecEnv::WriteFile(const std::string& path, const std::string& content, int mode) {
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), static_cast<mode_t>(mode));
}

void QrexecEnv::WriteService(const std::string& dir, const std::string& name, const std::string& script) {
  ::mkdir(dir.c_str(), 0755);
  WriteFile(dir + "/" + name, script, 0755);
}

std::map<std::string, std::string> QrexecEnv::DomainEnv(int domid) const {
  return {{"VCHAN_SOCKET_DIR", vchan_dir()},
          {"VCHAN_DOMAIN", std::to_string(domid)},
          {"QREXEC_SERVICE_PATH", rpc_dir(domid)},
          {"QUBES_RPC_CONFIG_PATH", root_ + "/cfg" + std::to_string(domid)},
          {"QREXEC_NO_ROOT", "1"},
          {"ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1"}};
}

pid_t QrexecEnv::Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                       const std::string& in, const std::string& out, const std::string& err) {
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    if (!env.count(kv.substr(0, kv.find('=')))) envs.push_back(kv);
  }
  for (auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> a, e;
  for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  for (auto& s : envs) e.push_back(const_cast<char*>(s.c_str()));
  e.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    int i = ::open(in.empty() ? "/dev/null" : in.c_str(), O_RDONLY);
    int o = ::open(out.empty() ? "/dev/null" : out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int r = ::open(err.empty() ? "/dev/null" : err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(i, 0);
    ::dup2(o, 1);
    ::dup2(r, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(a[0], a.data(), e.data());
    ::_exit(127);
  }
  return pid;
}

pid_t QrexecEnv::StartAgent(int domid, const std::vector<std::string>& extra,
                            const std::vector<std::string>& wrapper) {
  std::vector<std::string> argv = wrapper;
  argv.push_back(Bin("qrexec-agent"));
  argv.push_back("--agent-socket=" + agent_socket(domid));
  argv.push_back("--rpc-dir=" + odyssey_dir(domid));
  for (auto& x : extra) argv.push_back(x);
  ::mkdir(rpc_dir(domid).c_str(), 0755);
  ::mkdir(odyssey_dir(domid).c_str(), 0755);
  auto env = DomainEnv(domid);
  for (auto& [k, v] : agent_env) env[k] = v;
  pid_t pid = Spawn(argv, env, "", "", root_ + "/agent" + std::to_string(domid) + ".log");
  pids_.push_back(pid);
  return pid;
}

pid_t QrexecEnv::StartDaemon(int domid, const std::string& name, const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {Bin("qrexec-daemon"), "--socket-dir=" + socket_dir()};
  for (auto& x : extra) argv.push_back(x);
  argv.push_back(std::to_string(domid));
  argv.push_back(name);
  auto env = DomainEnv(0);
  pid_t pid = Spawn(argv, env, "", "", root_ + "/daemon" + std::to_string(domid) + ".log");
  pids_.push_back(pid);
  // Readiness: the daemon creates its socket once the agent answered HELLO.
  std::string sock = socket_dir() + "/qrexec." + name;
  for (int i = 0; i < 6000; ++i) {
    struct stat st;
    if (::lstat(sock.c_str(), &st) == 0) break;
    if (!Alive(pid)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pid;
}

pid_t QrexecEnv::StartBackground(const std::vector<std::string>& argv,
                                 const std::map<std::string, std::string>& env, const std::string& log) {
  pid_t pid = Spawn(argv, env, "", "", root_ + "/" + log);
  pids_.push_back(pid);
  return pid;
}

ProcResult QrexecEnv::Run(const std::vector<std::string>& argv, const std::string& input,
                          const std::map<std::string, std::string>& env, const std::string& stdin_file,
                          const std::string& stdout_file) {
  static int counter = 0;
  std::string base = root_ + "/run" + std::to_string(::getpid()) + "_" + std::to_string(++counter);
  std::string in = stdin_file.empty() ? base + ".in" : stdin_file;
  if (stdin_file.empty()) WriteFile(in, input);
  std::string out = stdout_file.empty() ? base + ".out" : stdout_file;
  pid_t pid = Spawn(argv, env, in, out, base + ".err");
  ProcResult r;
  r.exit_code = Wait(pid);
  if (stdout_file.empty()) r.out = ReadFile(out);
  r.err = ReadFile(base + ".err");
  return r;
}

bool QrexecEnv::Alive(pid_t pid) {
  int st;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == pid) {
    pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
    return false;
  }
  return r == 0;
}

void QrexecEnv::Kill(pid_t pid) {
  if (::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
  pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
}

int QrexecEnv::Wait(pid_t pid) {
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

}  // namespace odyssey::qrexec::testing
