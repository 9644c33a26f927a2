// Backend: how the engine gets disposables, seen from the pool. A Member is one prepared
// disposable (set up ahead of time, waiting); Call() resumes it and runs one command or
// service with the caller's descriptors, then the member is destroyed. Implementations:
// ProcessBackend (namespaced pre-forked helper processes, always available) and HalBackend
// (any hal::Hypervisor + qrexec agent connection, when those modules are built: hal/native
// sandboxes, and libvirt VMs for templates of kind "vm").
#pragma once

#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace odyssey::engine {

struct TemplateInfo {
  std::string name;
  std::string kind = "native";  // "native" | "vm"
  std::string root_dir;  // native: empty = the host's own tree, read-only; vm: the guest image
};

// What a backend found out about a template it accepted.
struct TemplateFacts {
  std::string accel;         // vm: "kvm" | "tcg"
  std::string image_sha256;  // vm: SHA-256 of the guest image's SHA256SUMS (its identity)
};

// Where a Call()'s time went, as far as the backend can tell (ms; < 0: not measured).
struct CallTimings {
  double resume_ms = -1;  // resuming (thawing) the prepared member
};

// One call. Exactly one of argv (a command) or service (a qrexec service) is set.
struct CallSpec {
  std::vector<std::string> argv;   // command and arguments, looked up in the domain's PATH
  std::string service;             // e.g. "qubes.OpenURL"
  std::string service_arg;         // without '+'; may be empty
  std::string source = "dom0";     // QREXEC_REMOTE_DOMAIN for services
  UniqueFd stdin_fd, stdout_fd, stderr_fd;  // the caller's, passed straight through
  CallTimings* timings = nullptr;  // filled by Call() when set (odysseyd's phases_ms)
};

struct MemberUsage {
  uint64_t memory_bytes = 0;      // resident
  uint64_t memory_pss_bytes = 0;  // proportional, CoW-shared pages counted once
  uint32_t processes = 0;
};

// Where the host reaches a member's vchan servers over the socket vchan (the GUI agent's
// port 6000 lives there); domid < 0 when the backend has no vchan.
struct VchanAddress {
  int domid = -1;
  std::string socket_dir;
};

class Member {
 public:
  virtual ~Member() = default;
  virtual const std::string& name() const = 0;
  virtual const std::string& template_name() const = 0;
  // Backend handle recorded in the state store (process backend: helper pid).
  virtual int64_t handle() const = 0;
  // Resumes the member and runs spec to completion. Blocking. Returns the exit code
  // (128+N when killed by signal N). Called at most once.
  virtual Result<int> Call(CallSpec spec) = 0;
  // Makes a running Call() return soon (the domain is killed). Thread-safe, idempotent.
  virtual void Kill() = 0;
  // Frees every resource of the member. Idempotent; safe after Kill().
  virtual Status Destroy() = 0;
  virtual MemberUsage Usage() = 0;
  virtual VchanAddress vchan_address() const { return {}; }
};
using MemberPtr = std::unique_ptr<Member>;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // Prepares one member of tmpl named name, ready for Call(). May run on any thread.
  virtual Result<MemberPtr> Prepare(const TemplateInfo& tmpl, const std::string& name) = 0;
  // Destroys everything a killed earlier run left behind; returns how many were found.
  virtual Result<int> ReapLeftovers() = 0;
  // Counts live resources this backend owns (for leak checks and `odyssey stats`).
  virtual int CountLive() = 0;
  // Checks tmpl before it is added (or added again) and says what it found; rebuild
  // discards whatever the backend made of it earlier (vm: the snapshot). Blocking: a VM
  // template's image is hashed and its accelerator may be probed by booting it.
  virtual Result<TemplateFacts> CheckTemplate(const TemplateInfo& tmpl, bool rebuild) {
    (void)rebuild;
    if (tmpl.kind == "native") return TemplateFacts{};
    return Error{"template kind '" + tmpl.kind + "' is not supported by the " + name() + " backend" +
                     (tmpl.kind == "vm" ? " (this odysseyd was built without VM support: it needs "
                                          "libvirt's development files and the guest agent, guest/)"
                                        : ""),
                 EINVAL};
  }
};
using BackendPtr = std::unique_ptr<Backend>;

}  // namespace odyssey::engine
