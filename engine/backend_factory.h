// Picks the engine's backend from the config: "process" (namespaced helper processes, always
// built), a HAL URI such as "native:///" (when hal/ and qrexec/ are built), or "auto" (the
// HAL native backend when built, else process). When VM support is built (libvirt and the
// guest agent, ODYSSEY_HAVE_VM), templates of kind "vm" go to the VM backend
// (engine/vm_backend.h) whatever backend is configured. Also fills path defaults that depend
// on where the binaries and data files are.
#pragma once

#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"

namespace odyssey::engine {

Result<BackendPtr> MakeBackend(const Config& config);
// Defaults for the fields Config::ApplyDefaults() leaves to the engine's install layout.
std::string DefaultStubPath();
std::string DefaultPolicyDir();
std::vector<std::string> DefaultServicePath();
// Fills stub_path, policy_dir, service_path when empty.
void ApplyInstallDefaults(Config* config);
// Backends compiled in, for --help and `odyssey ping`.
std::string BuiltBackends();

}  // namespace odyssey::engine
