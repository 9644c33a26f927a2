// Service lookup and environment for qrexec-agent: where a service's file is found (the
// Odyssey rpc directory first, then $QREXEC_SERVICE_PATH or the Qubes directories, first
// every SERVICE+ARG, then every SERVICE), what it is (executable or Unix socket), its
// per-service config ($QUBES_RPC_CONFIG_PATH) and the environment it runs with.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "qrexec/protocol.h"

namespace odyssey::qrexec {

inline constexpr const char* kDefaultOdysseyRpcDir = "/etc/odyssey/qubes-rpc";
inline constexpr const char* kDefaultRpcConfigDir = "/etc/qubes/rpc-config";

struct ServicePaths {
  std::vector<std::string> dirs;  // in search order
  std::string config_dir;         // per-service config files
};

// odyssey_dir: flag value, else $ODYSSEY_RPC_DIR, else kDefaultOdysseyRpcDir ("" = none).
// Then $QREXEC_SERVICE_PATH (colon-separated) if set, else /usr/local/etc/qubes-rpc and
// /etc/qubes-rpc. config_dir: $QUBES_RPC_CONFIG_PATH or kDefaultRpcConfigDir.
ServicePaths ResolveServicePaths(const std::optional<std::string>& odyssey_dir_flag);

struct FoundService {
  std::string path;
  bool is_socket = false;
};

// The first existing DIR/SERVICE+ARG, then DIR/SERVICE. nullopt: not found (exit 127).
std::optional<FoundService> FindService(const ServicePaths& paths, const std::string& service,
                                        const std::string& argument);

// Per-service config: first of CONFIG/SERVICE+ARG, CONFIG/SERVICE; only the keys Odyssey
// honours are parsed ("skip-service-descriptor", "exit-on-client-eof"); others ignored.
struct ServiceConfig {
  bool skip_service_descriptor = false;
  bool exit_on_client_eof = false;
};
ServiceConfig LoadServiceConfig(const ServicePaths& paths, const std::string& service,
                                const std::string& argument);

// Variables the agent never passes on from its own environment.
const std::vector<std::string>& ClearedAgentVariables();

// The environment of one service call: base (already without ClearedAgentVariables())
// plus QREXEC_REMOTE_DOMAIN, QREXEC_SERVICE_FULL_NAME and, if non-empty,
// QREXEC_SERVICE_ARGUMENT.
std::vector<std::string> ServiceEnvironment(const std::vector<std::string>& base,
                                            const Cmdline& cmd);

}  // namespace odyssey::qrexec
