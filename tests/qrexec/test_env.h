// Test environment for qrexec integration tests: a private temp dir with its own socket
// vchan dir, daemon socket dir, service dirs per domain, and helpers to start the real
// binaries as child processes (killed by pid at teardown).
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

namespace odyssey::qrexec::testing {

struct ProcResult {
  int exit_code = -1;  // 128+sig if killed
  std::string out, err;
};

class QrexecEnv {
 public:
  QrexecEnv();
  ~QrexecEnv();

  const std::string& root() const { return root_; }
  std::string vchan_dir() const { return root_ + "/vchan"; }
  std::string socket_dir() const { return root_ + "/qubes"; }
  std::string rpc_dir(int domid) const;      // $QREXEC_SERVICE_PATH of that domain
  std::string odyssey_dir(int domid) const;  // --rpc-dir of that domain
  std::string agent_socket(int domid) const;
  std::string Bin(const std::string& name) const;

  // Writes an executable service file.
  void WriteService(const std::string& dir, const std::string& name, const std::string& script);
  void WriteFile(const std::string& path, const std::string& content, int mode = 0644);

  // Starts the agent of domid; extra args appended. Returns its pid.
  pid_t StartAgent(int domid, const std::vector<std::string>& extra = {},
                   const std::vector<std::string>& wrapper = {});
  // Starts the daemon of domid/name and waits until its client socket exists.
  pid_t StartDaemon(int domid, const std::string& name, const std::vector<std::string>& extra = {});
  // Runs a program to completion with stdin from a string (or a file if stdin_file set).
  ProcResult Run(const std::vector<std::string>& argv, const std::string& input,
                 const std::map<std::string, std::string>& env = {},
                 const std::string& stdin_file = "", const std::string& stdout_file = "");
  // Starts a program in the background with stdin/stdout/stderr files.
  pid_t Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              const std::string& in, const std::string& out, const std::string& err);
  // Environment every qrexec process of domid gets (QREXEC_NO_ROOT=1: commands run as the
  // agent's own user even when the tests run as root).
  std::map<std::string, std::string> DomainEnv(int domid) const;
  // Added to (and overriding) DomainEnv() for agents started after it is set.
  std::map<std::string, std::string> agent_env;

  // Starts a long-running program (stdin /dev/null, output to root/<log>), killed at teardown.
  pid_t StartBackground(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                        const std::string& log);
  bool Alive(pid_t pid);
  void Kill(pid_t pid);  // SIGKILL + reap
  int Wait(pid_t pid);

 private:
  std::string root_;
  std::vector<pid_t> pids_;
};

std::string ReadFile(const std::string& path);
uint64_t Fnv1a(const std::string& data);

}  // namespace odyssey::qrexec::testing
