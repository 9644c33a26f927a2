// Domain: one isolated compartment (native sandbox or VM) as the layers above hal/ see it.
// Backends implement it under hal/<backend>/; nothing above hal/ knows which one runs.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "base/result.h"
#include "hal/vchan/vchan.h"

namespace odyssey::hal {

enum class DomainState { kDefined, kPaused, kRunning, kShutOff, kCrashed };
std::string ToString(DomainState state);

// Resource usage, as far as the backend can tell (0 when unknown).
struct ResourceStats {
  uint64_t memory_bytes = 0;      // resident (native: cgroup memory.usage; VM: RSS of QEMU)
  uint64_t memory_pss_bytes = 0;  // proportional share, counting CoW-shared pages once
  uint64_t cpu_time_ns = 0;
  uint32_t pids = 0;
};

// How the host reaches the domain's qrexec agent over vchan (socket backend naming).
struct VchanEndpoint {
  int domid = -1;              // the domain's vchan domain id
  std::string socket_dir;      // where vchan.<domid>.0.<port>.sock live
  vchan::Options options() const {
    vchan::Options o;
    o.socket_dir = socket_dir;
    o.own_domain = 0;
    return o;
  }
};

// Parameters that make one clone unique.
struct DomainSpec {
  std::string name;            // unique, e.g. "disp1234"
  std::string template_name;
  uint64_t memory_limit_bytes = 512ull << 20;
  uint32_t pids_limit = 512;
  uint32_t cpu_weight = 100;
  bool network = false;        // false: loopback only
  std::map<std::string, std::string> labels;  // free-form (e.g. "label" -> "red")
};

// Owned by whoever created it; destroying the object does NOT destroy the domain
// (call Destroy()), so a crash of the owner leaves a leftover that reconciliation finds.
class Domain {
 public:
  virtual ~Domain() = default;
  virtual const std::string& name() const = 0;
  virtual DomainState state() = 0;
  // Paused -> Running. Cheap: the point of pools.
  virtual Status Resume() = 0;
  // Running -> Paused.
  virtual Status Pause() = 0;
  // Kills everything and frees every resource (processes, mounts, cgroups, sockets, disks).
  // Idempotent.
  virtual Status Destroy() = 0;
  virtual Result<ResourceStats> Stats() = 0;
  virtual VchanEndpoint vchan() const = 0;
};

using DomainPtr = std::unique_ptr<Domain>;

}  // namespace odyssey::hal
