#include "engine/backend_factory.h"

#include <unistd.h>

#include <climits>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "engine/process_backend.h"

#ifdef ODYSSEY_HAVE_HAL
#include "engine/hal_backend.h"
#endif
#ifdef ODYSSEY_HAVE_VM
#include "engine/vm_backend.h"
#endif

namespace odyssey::engine {
namespace {

#ifdef ODYSSEY_HAVE_VM
// Templates of kind "vm" go to the VM backend, every other one to the engine's own.
class KindRouter : public Backend {
 public:
  KindRouter(BackendPtr native, BackendPtr vm) : native_(std::move(native)), vm_(std::move(vm)) {}
  std::string name() const override { return native_->name(); }
  Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) override {
    return Of(tmpl).Prepare(tmpl, name);
  }
  Result<TemplateFacts> CheckTemplate(const TemplateInfo& tmpl, bool rebuild) override {
    return Of(tmpl).CheckTemplate(tmpl, rebuild);
  }
  Result<int> ReapLeftovers() override {
    auto n = native_->ReapLeftovers();
    if (!n.ok()) return n;
    auto v = vm_->ReapLeftovers();
    if (!v.ok()) {
      spdlog::warn("reconciling VM leftovers: {}", v.error().message);
      return n;
    }
    return *n + *v;
  }
  int CountLive() override { return native_->CountLive() + vm_->CountLive(); }

 private:
  Backend& Of(const TemplateInfo& tmpl) { return tmpl.kind == "vm" ? *vm_ : *native_; }
  BackendPtr native_, vm_;
};
#endif

Result<BackendPtr> MakeNativeBackend(const Config& config);

}  // namespace

std::string DefaultStubPath() {
  std::string next = ExecutableDir() + "/odyssey-sandbox-stub";
  if (::access(next.c_str(), X_OK) == 0) return next;
#ifdef ODYSSEY_BUILD_STUB_PATH
  if (::access(ODYSSEY_BUILD_STUB_PATH, X_OK) == 0) return ODYSSEY_BUILD_STUB_PATH;
#endif
  return next;
}

std::string DefaultPolicyDir() {
  if (::access("/etc/odyssey/policy.d", F_OK) == 0) return "/etc/odyssey/policy.d";
  return std::string(ODYSSEY_ENGINE_DATA_DIR) + "/policy.d";
}

std::vector<std::string> DefaultServicePath() {
  return {std::string(ODYSSEY_SOURCE_DIR) + "/handlers/services", ODYSSEY_SERVICES_INSTALL_DIR,
          "/usr/local/etc/qubes-rpc", "/etc/qubes-rpc"};
}

void ApplyInstallDefaults(Config* config) {
  if (config->stub_path.empty()) config->stub_path = DefaultStubPath();
  if (config->policy_dir.empty()) config->policy_dir = DefaultPolicyDir();
  if (config->service_path.empty()) config->service_path = DefaultServicePath();
}

std::string BuiltBackends() {
#ifdef ODYSSEY_HAVE_HAL
  std::string b = "process, hal (native:/// and other HAL URIs)";
#else
  std::string b = "process (the HAL backends are not built into this odysseyd)";
#endif
#ifdef ODYSSEY_HAVE_VM
  b += "; templates of kind vm on libvirt (vm_uri, default qemu:///embed)";
#endif
  return b;
}

Result<BackendPtr> MakeBackend(const Config& in) {
  Config config = in;
  ApplyInstallDefaults(&config);
  auto native = MakeNativeBackend(config);
#ifdef ODYSSEY_HAVE_VM
  if (native.ok()) return BackendPtr(new KindRouter(std::move(*native), MakeVmBackend(config)));
#endif
  return native;
}

namespace {

Result<BackendPtr> MakeNativeBackend(const Config& config) {
  std::string b = config.backend;
#ifdef ODYSSEY_HAVE_HAL
  if (b == "auto") {
    std::string blocked;
    // odysseyd creates the socket's folder 0700 unless the socket is meant for others.
    std::string private_dir;
    std::string sock_dir = std::filesystem::path(config.socket_path).parent_path().string();
    if ((config.socket_mode & 0077) == 0 && !sock_dir.empty() &&
        ::access(sock_dir.c_str(), F_OK) != 0)
      private_dir = sock_dir;
    if (::geteuid() == 0 &&
        (blocked = UnsearchableAncestor(config.state_dir, private_dir)).empty()) {
      auto hal = MakeHalBackend(config, "native:///");
      if (hal.ok()) return hal;
      spdlog::warn("backend auto: the HAL native backend is unavailable ({}); using the process "
                   "backend", hal.error().message);
      b = "process";
    } else if (::geteuid() == 0) {
      spdlog::info("backend auto: {} (above the state dir {}) is not searchable by others, so "
                   "the HAL native backend's sandboxes could not reach their state; using the "
                   "process backend", blocked, config.state_dir);
      b = "process";
    } else {
      spdlog::info("backend auto: not root, so the HAL native backend (namespaces, cgroups) is "
                   "unavailable; using the process backend");
      b = "process";
    }
  }
  if (b != "process") return MakeHalBackend(config, b);
#else
  if (b == "auto") b = "process";
  if (b != "process")
    return Error{"backend '" + b + "' needs the HAL, which is not built into this odysseyd; use "
                 "backend = process (or auto)", ENOTSUP};
#endif
  return ProcessBackend::Create({config.stub_path, config.state_dir, config.service_path});
}

}  // namespace
}  // namespace odyssey::engine
