// HalBackend: disposables from the HAL (hal::Hypervisor, e.g. native:/// namespaces or a
// libvirt URI) with calls made over qrexec (qrexec::AgentConnection). A pool member is a
// clone whose agent connection is already established (HELLO exchanged) and which was
// frozen afterwards; a call thaws it and runs "DEFAULT:COMMAND" or "DEFAULT:QUBESRPC …".
#pragma once

#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/config.h"

namespace odyssey::engine {

// uri: the HAL URI ("native:///", "qemu:///embed", …).
Result<BackendPtr> MakeHalBackend(const Config& config, const std::string& uri);

// Quotes argv for /bin/sh -c (what a non-root qrexec agent runs a command line with).
std::string ShellQuote(const std::vector<std::string>& argv);

// hal/native's sandboxes (mapped ids, never host root) must traverse every ancestor of
// the state dir: returns the first ancestor that others cannot search, or "" when fine.
// private_dir: a folder odysseyd will make 0700 later (the admin socket's), counted as
// unsearchable even if it does not exist yet.
std::string UnsearchableAncestor(const std::string& state_dir, const std::string& private_dir = "");

// The qrexec-agent run in HAL domains: $ODYSSEY_QREXEC_AGENT, else the one built with this tree.
std::string DefaultAgentPath();

}  // namespace odyssey::engine
