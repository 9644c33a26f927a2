#include "engine/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/io.h"

namespace odyssey::engine {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string Home() {
  std::string h = Env("HOME");
  return h.empty() ? "/tmp" : h;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

Result<uint64_t> ParseUnsigned(const std::string& v, const std::string& where) {
  if (v.empty() || v.find_first_not_of("0123456789") != std::string::npos || v.size() > 18)
    return Error{where + ": expected a non-negative integer, got '" + v + "'", EINVAL};
  return std::stoull(v);
}

std::vector<std::string> SplitColon(const std::string& v) {
  std::vector<std::string> out;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ':'))
    if (!item.empty()) out.push_back(item);
  return out;
}

// Sets one field from its textual value; where = "file:line: key".
Status SetField(const std::string& key, const std::string& value, const std::string& where,
                Config* c) {
  auto num = [&](auto* field, uint64_t max) -> Status {
    auto n = ParseUnsigned(value, where);
    if (!n.ok()) return n.error();
    if (*n > max) return Error{where + ": value " + value + " too large (max " +
                                   std::to_string(max) + ")", ERANGE};
    *field = static_cast<std::remove_pointer_t<decltype(field)>>(*n);
    return OkStatus();
  };
  if (key == "socket_path") c->socket_path = value;
  else if (key == "state_dir") c->state_dir = value;
  else if (key == "backend") c->backend = value;
  else if (key == "vm_uri") c->vm_uri = value;
  else if (key == "vm_accel") {
    if (value != "" && value != "kvm" && value != "tcg")
      return Error{where + ": vm_accel must be kvm, tcg or empty (probe), not '" + value + "'", EINVAL};
    c->vm_accel = value;
  }
  else if (key == "default_template") c->default_template = value;
  else if (key == "pool_size") return num(&c->pool_size, 256);
  else if (key == "max_domains") return num(&c->max_domains, 4096);
  else if (key == "call_timeout_s") return num(&c->call_timeout_s, 86400 * 7);
  else if (key == "memory_limit_bytes") return num(&c->memory_limit_bytes, 1ull << 40);
  else if (key == "max_request_bytes") return num(&c->max_request_bytes, 16u << 20);
  else if (key == "log_level") {
    static const char* kLevels[] = {"trace", "debug", "info", "warn", "error", "off"};
    for (const char* l : kLevels)
      if (value == l) { c->log_level = value; return OkStatus(); }
    return Error{where + ": log_level must be trace|debug|info|warn|error|off", EINVAL};
  } else if (key == "log_file") c->log_file = value;
  else if (key == "policy_dir") c->policy_dir = value;
  else if (key == "service_path") c->service_path = SplitColon(value);
  else if (key == "stub_path") c->stub_path = value;
  else if (key == "allowed_uids") {
    c->allowed_uids.clear();
    std::stringstream ss(value);
    std::string item;
    while (std::getline(ss, item, ',')) {
      auto n = ParseUnsigned(Trim(item), where);
      if (!n.ok()) return n.error();
      c->allowed_uids.push_back(static_cast<uint32_t>(*n));
    }
  } else if (key == "socket_mode") {
    if (value.empty() || value.find_first_not_of("01234567") != std::string::npos ||
        value.size() > 4)
      return Error{where + ": socket_mode must be octal, e.g. 0600", EINVAL};
    c->socket_mode = static_cast<uint32_t>(std::stoul(value, nullptr, 8));
  } else {
    return Error{where + ": unknown key (see engine/README.md for the list)", EINVAL};
  }
  return OkStatus();
}

}  // namespace

std::string ExecutableDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  return std::filesystem::path(buf).parent_path().string();
}

std::string DefaultSocketPath() {
  std::string env = Env("ODYSSEY_SOCKET");
  if (!env.empty()) return env;
  if (::geteuid() == 0) return "/run/odyssey/odysseyd.sock";
  std::string xdg = Env("XDG_RUNTIME_DIR");
  if (!xdg.empty()) return xdg + "/odyssey/odysseyd.sock";
  return "/tmp/odyssey-" + std::to_string(::geteuid()) + "/odysseyd.sock";
}

std::string DefaultStateDir() {
  std::string env = Env("ODYSSEY_STATE_DIR");
  if (!env.empty()) return env;
  if (::geteuid() == 0) return "/var/lib/odyssey";
  std::string xdg = Env("XDG_STATE_HOME");
  if (!xdg.empty()) return xdg + "/odyssey";
  return Home() + "/.local/state/odyssey";
}

std::string DefaultConfigPath() {
  if (::geteuid() == 0) return "/etc/odyssey/odysseyd.conf";
  std::string xdg = Env("XDG_CONFIG_HOME");
  return (xdg.empty() ? Home() + "/.config" : xdg) + "/odyssey/odysseyd.conf";
}

void Config::ApplyDefaults() {
  if (socket_path.empty()) socket_path = DefaultSocketPath();
  if (state_dir.empty()) state_dir = DefaultStateDir();
}

Status ParseConfig(const std::string& text, const std::string& origin, Config* config) {
  std::string trimmed = Trim(text);
  if (!trimmed.empty() && trimmed[0] == '{') {
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object())
      return Error{origin + ": not a valid JSON object", EINVAL};
    for (auto& [key, val] : j.items()) {
      std::string value;
      if (val.is_string()) value = val.get<std::string>();
      else if (val.is_number_unsigned()) value = std::to_string(val.get<uint64_t>());
      else if (val.is_array()) {
        std::string sep = key == "allowed_uids" ? "," : ":";
        for (auto& item : val) {
          if (!value.empty()) value += sep;
          value += item.is_string() ? item.get<std::string>() : item.dump();
        }
      } else {
        return Error{origin + ": " + key + ": expected a string, number or array", EINVAL};
      }
      if (key == "socket_mode" && val.is_number_unsigned()) {
        config->socket_mode = val.get<uint32_t>();
        continue;
      }
      ODYSSEY_TRY(SetField(key, value, origin + ": " + key, config));
    }
    return OkStatus();
  }
  std::stringstream ss(text);
  std::string line;
  int lineno = 0;
  while (std::getline(ss, line)) {
    ++lineno;
    std::string t = Trim(line);
    if (t.empty() || t[0] == '#') continue;
    size_t eq = t.find('=');
    std::string where = origin + ":" + std::to_string(lineno);
    if (eq == std::string::npos) return Error{where + ": expected key = value", EINVAL};
    std::string key = Trim(t.substr(0, eq));
    ODYSSEY_TRY(SetField(key, Trim(t.substr(eq + 1)), where + ": " + key, config));
  }
  return OkStatus();
}

Result<Config> LoadConfig(const std::string& path, bool must_exist) {
  Config config;
  struct stat st;
  if (!path.empty() && ::stat(path.c_str(), &st) == 0) {
    auto text = ReadFileToString(path, 1 << 20);
    if (!text.ok()) return text.error().Wrap("reading config");
    ODYSSEY_TRY(ParseConfig(*text, path, &config));
  } else if (must_exist) {
    return Error{"config file " + path + " does not exist (omit --config to use defaults)",
                 ENOENT};
  }
  config.ApplyDefaults();
  return config;
}

std::string DefaultGuestAgentPath() {
  if (const char* e = std::getenv("ODYSSEY_GUEST_AGENT"); e && *e) return e;
#ifdef ODYSSEY_GUEST_AGENT_PATH
  if (::access(ODYSSEY_GUEST_AGENT_PATH, X_OK) == 0) return ODYSSEY_GUEST_AGENT_PATH;
#endif
  return "/usr/lib/odyssey/odyssey-guest-agent";
}

std::string DefaultImageBuilderPath() {
  if (const char* e = std::getenv("ODYSSEY_BUILD_IMAGE"); e && *e) return e;
  std::string src = std::string(ODYSSEY_SOURCE_DIR) + "/guest/build-image.sh";
  if (::access(src.c_str(), R_OK) == 0) return src;
  return "/usr/share/odyssey/guest/build-image.sh";
}

std::string DefaultGuestServicesDir() {
  if (const char* e = std::getenv("ODYSSEY_GUEST_SERVICES"); e && *e) return e;
  std::string src = std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services";
  if (::access(src.c_str(), R_OK) == 0) return src;
  return ODYSSEY_SERVICES_INSTALL_DIR;
}

}  // namespace odyssey::engine
