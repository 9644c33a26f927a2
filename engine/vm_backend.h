// VM templates in the engine. WithVmTemplates() wraps the engine's backend so that templates
// of kind "vm" go to VMs through hal/libvirt (embedded QEMU by default, Config::vm_uri) and
// every other template to the wrapped backend, unchanged. A VM pool member is a clone
// restored PAUSED from the template's memory snapshot whose qrexec agent already said HELLO
// (AgentConnection over the virtio-serial sockets); a call resumes it and runs
// "DEFAULT:COMMAND" or a service. A VM template's root_dir is its guest image directory
// (guest/build-image.sh output: vmlinuz, initrd.img, manifest.txt, SHA256SUMS).
// It never runs a VM template on anything but a VM.
#pragma once

#include <string>

#include "engine/backend.h"
#include "engine/config.h"
#include "engine/state_store.h"

namespace odyssey::engine {

// native: the backend of every template that is not a VM. The libvirt connection is opened
// on first use (or at ReapLeftovers when an earlier run left a libvirt root behind).
BackendPtr WithVmTemplates(const Config& config, BackendPtr native);

// Before a VM template is added: verifies t->root_dir (an image directory whose SHA256SUMS
// hold), probes the accelerator (KVM with a short timeout, else TCG) and fills t->accel and
// t->image_sha256. A different image than the one the template's snapshot was made from, or
// rebuild, discards that snapshot so the next clone is made from a fresh one. backend must
// come from WithVmTemplates(). Blocking (the KVM probe may boot a VM).
Status CheckVmTemplate(Backend& backend, TemplateRecord* t, bool rebuild);

// SHA-256 (hex) of image_dir/SHA256SUMS after checking every sum in it; an error names the
// file that does not match.
Result<std::string> VerifyGuestImage(const std::string& image_dir);

}  // namespace odyssey::engine
