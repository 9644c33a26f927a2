// ProcessBackend: disposables as pre-forked helper processes (odyssey-sandbox-stub) in fresh
// pid, mount, uts, ipc and net namespaces (plus a user namespace when not root), with
// private /tmp and /home, the host tree read-only and no privileges left. A member has done
// all that set-up ahead and waits on its control socket; a call hands it argv and the
// caller's three descriptors. Used when hal/native is not built or when configured
// `backend = process`; the HAL backend supersedes it.
#pragma once

#include <string>
#include <vector>

#include "engine/backend.h"

namespace odyssey::engine {

struct ProcessBackendOptions {
  std::string stub_path;                  // odyssey-sandbox-stub
  std::string state_dir;                  // identifies our helpers in /proc
  std::vector<std::string> service_path;  // where services are looked up
};

class ProcessBackend : public Backend {
 public:
  static Result<BackendPtr> Create(const ProcessBackendOptions& options);
  std::string name() const override { return "process"; }
  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) override;
  Result<int> ReapLeftovers() override;
  int CountLive() override;

  // Pids of helpers whose command line names our state_dir (live or leftover).
  std::vector<int> FindHelpers() const;

 private:
  explicit ProcessBackend(ProcessBackendOptions o) : options_(std::move(o)) {}
  ProcessBackendOptions options_;
};

// The service executable for service+arg in path (first SERVICE+ARG, then SERVICE, per
// directory, as the qrexec agent does); empty if none.
std::string ResolveService(const std::vector<std::string>& path, const std::string& service,
                           const std::string& arg);
// Service names and arguments the engine accepts ([0-9A-Za-z._-], arg also '+' '@').
bool ValidServiceName(const std::string& s);
bool ValidServiceArg(const std::string& s);

}  // namespace odyssey::engine
