// Hypervisor::Open: the one place that maps a URI to a backend.
#include "hal/hypervisor.h"

#include "hal/native/native_hypervisor.h"
#ifdef ODYSSEY_HAVE_LIBVIRT
#include "hal/libvirt/libvirt_hypervisor.h"
#endif

namespace odyssey::hal {
namespace {

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// "qemu:///embed", "qemu+ssh://h/system", "xen:///system", "lxc:///" are libvirt's.
bool IsLibvirtUri(const std::string& uri) {
  for (const char* scheme : {"qemu", "xen", "lxc"}) {
    std::string s = scheme;
    if (StartsWith(uri, s + ":") || StartsWith(uri, s + "+")) return true;
  }
  return false;
}

}  // namespace

Result<std::unique_ptr<Hypervisor>> Hypervisor::Open(const std::string& uri,
                                                     const std::string& state_dir) {
  if (uri.empty() || StartsWith(uri, "native:")) {
    if (!uri.empty() && uri != "native:///" && uri != "native://" && uri != "native:") {
      return Error{"opening hypervisor '" + uri + "': the native backend takes only native:///",
                   EINVAL};
    }
    return native::OpenNative(state_dir);
  }
  if (IsLibvirtUri(uri)) {
#ifdef ODYSSEY_HAVE_LIBVIRT
    return libvirt::OpenLibvirt(uri, state_dir);
#else
    return Error{"opening hypervisor '" + uri +
                     "': this build has no libvirt backend (install libvirt-dev and rebuild)",
                 ENOTSUP};
#endif
  }
  return Error{"opening hypervisor '" + uri +
                   "': unknown URI scheme (use native:///, qemu:///…, xen:///…, lxc:///)",
               EINVAL};
}

}  // namespace odyssey::hal
