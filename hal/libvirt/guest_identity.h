// The identity refresh of a VM clone restored from a template snapshot. Every clone wakes up
// with the template's kernel RNG state and hostname; before a clone takes its first call the
// host runs the guest image's /sbin/odyssey-identity (guest/identity_main.cc) through qrexec
// with fresh host randomness on stdin: it credits the seed to the kernel's pool, forces the
// CRNG to reseed and sets the clone's hostname. This header only builds that call (hal does
// not speak qrexec); the caller makes it on its agent connection. The pool does it while
// preparing a clone, after HELLO and before pausing it, so a pool hit never pays for it and no
// call ever runs on a clone whose RNG still matches its siblings'.
#pragma once

#include <string>

#include "base/result.h"

namespace odyssey::hal::libvirt {

// Where guest/build-image.sh installs the tool.
inline constexpr char kGuestIdentityTool[] = "/sbin/odyssey-identity";
// Bytes of seed the tool reads from stdin.
inline constexpr size_t kGuestIdentitySeedBytes = 64;

struct IdentityRefresh {
  std::string command;  // shell command for the agent ("DEFAULT:" + command)
  std::string seed;     // kGuestIdentitySeedBytes random bytes: the call's whole stdin
};

// The call giving a clone hostname and a fresh seed (getrandom). Fails on a hostname outside
// [A-Za-z0-9.-]{1,63} or when the host has no randomness to give.
Result<IdentityRefresh> MakeIdentityRefresh(const std::string& hostname);

}  // namespace odyssey::hal::libvirt
