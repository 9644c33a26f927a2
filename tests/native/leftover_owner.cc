// leftover_owner STATE_DIR AGENT UID_BASE: prepares the host template, clones two domains
// (one resumed), prints "ready" and waits to be SIGKILLed, leaving leftovers behind.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "hal/native/native_hypervisor.h"

int main(int argc, char** argv) {
  using namespace odyssey::hal;
  if (argc != 4) return 2;
  native::NativeOptions options;
  options.ids.host_base = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
  auto hv = native::OpenNative(argv[1], options);
  if (!hv.ok()) return 3;
  TemplateSpec t;
  t.name = "host";
  t.agent_path = argv[2];
  auto snap = (*hv)->PrepareSnapshot(t);
  if (!snap.ok()) return 4;
  DomainSpec spec;
  spec.name = "owned1";
  auto a = (*hv)->CloneFromSnapshot(*snap, spec);
  spec.name = "owned2";
  auto b = (*hv)->CloneFromSnapshot(*snap, spec);
  if (!a.ok() || !b.ok() || !(*a)->Resume().ok()) return 5;
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) ::pause();
}
