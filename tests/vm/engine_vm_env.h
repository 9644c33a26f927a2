// What engine_vm_test and engine_vm_bench share: an odysseyd state dir seeded with the VM
// tests' shared template snapshot (tests/vm/vm_env.h), so a daemon's VM template of that name
// restores clones at once instead of booting and saving its own snapshot.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include "base/io.h"
#include "engine/vm_backend.h"
#include "snapshot/snapshot_file.h"
#include "tests/vm/vm_env.h"

namespace odyssey::testing_vm {

// The name of the shared image's template (and of its snapshot in the catalog).
inline constexpr char kSharedVmTemplate[] = "odyssey-test";

// Seeds odysseyd's VM catalog (<state_dir>/vm/snapshots) with the shared snapshot (a symlink,
// or a private copy that the caller may corrupt), its accelerator and image identity, and
// libvirt's shared QEMU capability cache, so nothing is booted or probed again.
inline Status SeedVmCatalog(VmEnv& env, const std::string& state_dir, bool private_copy = false) {
  namespace fs = std::filesystem;
  const std::string name = kSharedVmTemplate;
  const std::string dir = state_dir + "/vm/snapshots";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Error{"creating " + dir + ": " + ec.message(), ec.value()};
  const std::string from = env.hv().options().snapshot_dir + "/" + name + ".libvirt-qemu.save";
  const std::string to = dir + "/" + name + ".libvirt-qemu.save";
  for (const auto& [f, t] : {std::pair{from, to}, std::pair{snapshot::HeaderPath(from), snapshot::HeaderPath(to)}}) {
    fs::path real = fs::canonical(f, ec);
    if (!ec) {
      if (private_copy) fs::copy_file(real, t, ec);
      else fs::create_symlink(real, t, ec);
    }
    if (ec) return Error{"seeding " + t + " from " + f + ": " + ec.message(), ec.value()};
  }
  auto accel = ReadFileToString(env.hv().options().snapshot_dir + "/" + name + ".accel", 16);
  if (accel.ok()) ODYSSEY_TRY(WriteFileAtomic(dir + "/" + name + ".accel", *accel));
  auto image = engine::VerifyGuestImage(env.image_dir());
  if (!image.ok()) return image.error();
  ODYSSEY_TRY(WriteFileAtomic(dir + "/" + name + ".image", *image));
  const fs::path caps = fs::path(env.image_dir()).parent_path().parent_path() / "libvirt-qemu-caps";
  fs::create_directories(state_dir + "/libvirt/cache", ec);
  fs::create_directory_symlink(caps, state_dir + "/libvirt/cache/qemu", ec);
  return OkStatus();
}

}  // namespace odyssey::testing_vm
