#include "qrexec/agent/services.h"

#include <sys/stat.h>

#include <cstdlib>

#include "base/io.h"

namespace odyssey::qrexec {
namespace {

std::vector<std::string> SplitColon(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t c = s.find(':', pos);
    if (c == std::string::npos) c = s.size();
    if (c > pos) out.push_back(s.substr(pos, c - pos));
    pos = c + 1;
  }
  return out;
}

bool ParseBool(const std::string& v) {
  return v == "1" || v == "true" || v == "True" || v == "yes";
}

}  // namespace

ServicePaths ResolveServicePaths(const std::optional<std::string>& odyssey_dir_flag) {
  ServicePaths p;
  std::string odyssey_dir;
  if (odyssey_dir_flag) odyssey_dir = *odyssey_dir_flag;
  else if (const char* e = std::getenv("ODYSSEY_RPC_DIR")) odyssey_dir = e;
  else odyssey_dir = kDefaultOdysseyRpcDir;
  if (!odyssey_dir.empty()) p.dirs.push_back(odyssey_dir);
  if (const char* e = std::getenv("QREXEC_SERVICE_PATH")) {
    for (auto& d : SplitColon(e)) p.dirs.push_back(d);
  } else {
    p.dirs.push_back("/usr/local/etc/qubes-rpc");
    p.dirs.push_back("/etc/qubes-rpc");
  }
  const char* c = std::getenv("QUBES_RPC_CONFIG_PATH");
  p.config_dir = c ? c : kDefaultRpcConfigDir;
  return p;
}

std::optional<FoundService> FindService(const ServicePaths& paths, const std::string& service,
                                        const std::string& argument) {
  const std::string names[2] = {service + "+" + argument, service};
  for (const auto& name : names) {
    for (const auto& dir : paths.dirs) {
      std::string path = dir + "/" + name;
      struct stat st;
      if (::stat(path.c_str(), &st) != 0) continue;
      if (S_ISSOCK(st.st_mode)) return FoundService{path, true};
      if (S_ISREG(st.st_mode)) return FoundService{path, false};
    }
  }
  return std::nullopt;
}

ServiceConfig LoadServiceConfig(const ServicePaths& paths, const std::string& service,
                                const std::string& argument) {
  ServiceConfig cfg;
  if (paths.config_dir.empty()) return cfg;
  for (const auto& name : {service + "+" + argument, service}) {
    auto text = ReadFileToString(paths.config_dir + "/" + name, 64 << 10);
    if (!text.ok()) continue;
    size_t pos = 0;
    while (pos < text->size()) {
      size_t nl = text->find('\n', pos);
      if (nl == std::string::npos) nl = text->size();
      std::string line = text->substr(pos, nl - pos);
      pos = nl + 1;
      size_t eq = line.find('=');
      if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
      auto trim = [](std::string s) {
        size_t a = s.find_first_not_of(" \t\"'"), b = s.find_last_not_of(" \t\"'");
        return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
      };
      std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
      if (key == "skip-service-descriptor") cfg.skip_service_descriptor = ParseBool(value);
      if (key == "exit-on-client-eof") cfg.exit_on_client_eof = ParseBool(value);
    }
    break;
  }
  return cfg;
}

const std::vector<std::string>& ClearedAgentVariables() {
  static const std::vector<std::string> vars = {
      "QREXEC_SERVICE_ARGUMENT", "QREXEC_REQUESTED_TARGET", "QREXEC_REQUESTED_TARGET_KEYWORD",
      "QREXEC_REMOTE_DOMAIN", "QREXEC_SERVICE_FULL_NAME"};
  return vars;
}

std::vector<std::string> ServiceEnvironment(const std::vector<std::string>& base,
                                            const Cmdline& cmd) {
  std::vector<std::string> env = base;
  if (cmd.is_service) {
    env.push_back("QREXEC_REMOTE_DOMAIN=" + cmd.source);
    env.push_back("QREXEC_SERVICE_FULL_NAME=" + cmd.service_full());
    if (!cmd.argument.empty()) env.push_back("QREXEC_SERVICE_ARGUMENT=" + cmd.argument);
  }
  return env;
}

}  // namespace odyssey::qrexec
