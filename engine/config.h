// Engine configuration: where odysseyd keeps its socket and state, which backend it uses,
// pool sizes and limits. Every field has a default, so no file is needed at all; a file
// (JSON object or simple `key = value` lines) overrides fields one by one. Unknown keys
// and malformed values are refused with file:line, never guessed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace odyssey::engine {

struct Config {
  std::string socket_path;        // admin socket; default: see DefaultSocketPath()
  std::string state_dir;          // sqlite store, lock file, backend state
  std::string backend = "auto";   // "auto" | "process" | a HAL URI such as "native:///"
  // Backend of templates of kind "vm": a libvirt URI; empty: qemu:///embed?root=<state_dir>/libvirt.
  std::string vm_uri;
  std::string vm_accel;           // "kvm" | "tcg" forces VM templates' accelerator; empty: probe
  std::string default_template = "host";  // the default disposable template
  uint32_t pool_size = 2;         // target paused members per template (0 = no pool)
  uint32_t max_domains = 64;      // running + pooled disposables, all templates
  uint32_t call_timeout_s = 0;    // default per-call timeout; 0 = none
  uint64_t memory_limit_bytes = 512ull << 20;  // per disposable (backends that enforce it)
  size_t max_request_bytes = 64 * 1024;        // one admin request line
  std::string log_level = "info";  // trace|debug|info|warn|error|off
  std::string log_file;            // empty: stderr (foreground) or state_dir/odysseyd.log
  std::string policy_dir;          // policy.d directory; empty: engine's shipped default
  std::vector<std::string> service_path;  // where service executables are looked up
  std::string stub_path;           // process backend helper; empty: next to odysseyd
  std::vector<uint32_t> allowed_uids;  // besides the daemon's own uid and root
  uint32_t socket_mode = 0600;

  // Fills the empty path fields from the environment (XDG_RUNTIME_DIR, HOME, uid).
  void ApplyDefaults();
};

// $ODYSSEY_SOCKET, else /run/odyssey/odysseyd.sock for root, else
// $XDG_RUNTIME_DIR/odyssey/odysseyd.sock (or /tmp/odyssey-UID/odysseyd.sock without one).
std::string DefaultSocketPath();
// Directory of the running executable.
std::string ExecutableDir();
// $ODYSSEY_STATE_DIR, else /var/lib/odyssey for root, else $XDG_STATE_HOME/odyssey or ~/.local/state/odyssey.
std::string DefaultStateDir();
// /etc/odyssey/odysseyd.conf for root, else ~/.config/odyssey/odysseyd.conf.
std::string DefaultConfigPath();

// The static agent put into guest images: $ODYSSEY_GUEST_AGENT, else the one built with
// this tree, else /usr/lib/odyssey/odyssey-guest-agent.
std::string DefaultGuestAgentPath();
// guest/build-image.sh: $ODYSSEY_BUILD_IMAGE, else the source tree's, else the installed one.
std::string DefaultImageBuilderPath();
// qrexec services put into guest images: $ODYSSEY_GUEST_SERVICES, else the source tree's
// handlers/services, else the installed handlers/services (ODYSSEY_SERVICES_INSTALL_DIR).
std::string DefaultGuestServicesDir();


// Parses config text (JSON object if it starts with '{', else key = value lines) on top of
// *config. origin names the file in error messages.
Status ParseConfig(const std::string& text, const std::string& origin, Config* config);
// Loads path if it exists (a missing file at the default path is not an error; a missing
// file the user named is). Then ApplyDefaults().
Result<Config> LoadConfig(const std::string& path, bool must_exist);

}  // namespace odyssey::engine
