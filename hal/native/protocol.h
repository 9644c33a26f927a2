// Control protocol between the host library (native_hypervisor.cc) and a template's zygote
// (zygote/zygote_main.cc), over a SOCK_SEQPACKET socketpair: one message per request or
// reply, file descriptors passed with SCM_RIGHTS. Both ends are ours and built from this
// header; the zygote still checks sizes and magic, since it runs in the sandbox's user
// namespace. Plain C++ with no dependency on base/ (the zygote is built unsanitized).
#pragma once

#include <cstdint>

namespace odyssey::hal::native::proto {

inline constexpr uint32_t kMagic = 0x4f445a47;  // "ODZG"
inline constexpr uint32_t kVersion = 1;
inline constexpr int kMaxCgroupFds = 8;
inline constexpr int kControlFd = 3;  // the zygote's end of the socketpair after exec

// Sent by the zygote once its per-template set-up is done (or failed).
struct ReadyMsg {
  uint32_t magic;
  uint32_t version;
  int32_t error;        // 0: ready; else errno of what failed
  char message[512];    // what failed, NUL-terminated
};

// Host -> zygote: make one clone. fds: [status pipe write end, cgroup.procs fds...,
// vchan mount fd if kFlagVchanMountFd].
struct CloneRequest {
  uint32_t magic;
  uint32_t version;
  char name[64];             // domain name = hostname, NUL-terminated
  char vchan_dir[1024];      // host directory bind-mounted at /run/vchan
  int32_t domid;             // VCHAN_DOMAIN inside
  uint32_t cgroup_fd_count;  // number of cgroup.procs fds after the status pipe
  uint64_t tmpfs_bytes;      // size of each writable tmpfs (overlay upper, /tmp, /home)
  uint32_t flags;            // kFlag*
  uint32_t reserved;
};
inline constexpr uint32_t kFlagNoLeakCheck = 1;  // ASAN_OPTIONS=detect_leaks=0 for the agent
// The last fd is a detached, idmapped mount of vchan_dir (host root's files appear owned by
// the agent's uid inside) to move to /run/vchan instead of bind-mounting vchan_dir.
inline constexpr uint32_t kFlagVchanMountFd = 2;

// Zygote -> host: fds: [pidfd of the clone's init] when error == 0.
struct CloneReply {
  uint32_t magic;
  int32_t pid;        // the clone's init, in the host pid namespace
  int32_t error;      // 0 or errno
  char message[256];  // what failed
};

}  // namespace odyssey::hal::native::proto
