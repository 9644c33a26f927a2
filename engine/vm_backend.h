// VM templates (kind "vm") in the engine: the HalKind that puts them on hal/libvirt (embedded
// QEMU by default, Config::vm_uri). Everything else is the HalBackend's common path; this adds
// only what is VM-specific: a template is a guest image directory (guest/build-image.sh:
// vmlinuz, initrd.img, manifest.txt, SHA256SUMS) verified when it is added, with its
// accelerator probed (KVM with a short timeout, else TCG); the snapshot is booted once to the
// agent's HELLO and saved (then kept in the catalog, verified before use); a clone is
// restored PAUSED from it and gets its own identity (hostname, fresh entropy) before it is
// paused again; calls into libvirt that start or stop QEMU are serialised.
// A VM template never runs on anything but a VM.
#pragma once

#include <string>

#include "engine/backend.h"
#include "engine/config.h"

namespace odyssey::engine {

// The backend of templates of kind "vm". The libvirt connection is opened on first use (or
// at ReapLeftovers when an earlier run used VMs in this state dir).
BackendPtr MakeVmBackend(const Config& config);

// SHA-256 (hex) of image_dir/SHA256SUMS after checking every sum in it; an error names the
// file that does not match.
Result<std::string> VerifyGuestImage(const std::string& image_dir);

}  // namespace odyssey::engine
