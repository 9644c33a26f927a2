#include "hal/native/zygote/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>

namespace odyssey::hal::native::zygote {
namespace {

// Host directories the host template shows read-only (as bubblewrap's usual set).
constexpr const char* kHostEntries[] = {"usr", "etc", "bin", "sbin", "lib",
                                        "lib32", "lib64", "libx32", "opt"};
// Device nodes bound from the host's /dev.
constexpr const char* kDevNodes[] = {"null", "zero", "full", "random", "urandom", "tty"};

std::string RootOf(const TemplateLayout& layout) { return layout.staging + "/root"; }
std::string CloneDirOf(const TemplateLayout& layout) { return layout.staging + "/clone"; }

MaybeFailure Mount(const std::string& src, const std::string& dst, const char* type,
                   unsigned long flags, const std::string& data = {}) {
  if (::mount(src.c_str(), dst.c_str(), type, flags, data.empty() ? nullptr : data.c_str()) != 0) {
    return Errno("mount", (type ? std::string(type) : src) + " on " + dst);
  }
  return std::nullopt;
}

MaybeFailure MakeDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) return Errno("mkdir", path);
  return std::nullopt;
}

MaybeFailure MakeFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0444);
  if (fd < 0) {
    if (errno == EEXIST) return std::nullopt;
    return Errno("creat", path);
  }
  ::close(fd);
  return std::nullopt;
}

MaybeFailure MakeSymlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0 && errno != EEXIST) {
    return Errno("symlink", path);
  }
  return std::nullopt;
}

// Remount flags a bind must keep (the kernel refuses to drop locked ones in a user ns).
unsigned long KeptFlags(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return 0;
  unsigned long f = 0;
  if (st.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) f |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

// Binds src at dst read-only (recursively; submounts keep their own flags).
MaybeFailure BindReadOnly(const std::string& src, const std::string& dst, unsigned long extra) {
  ZYGOTE_TRY(Mount(src, dst, nullptr, MS_BIND | MS_REC));
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | KeptFlags(dst) | extra;
  if (::mount(nullptr, dst.c_str(), nullptr, flags, nullptr) != 0) {
    return Errno("remount read-only", dst);
  }
  return std::nullopt;
}

// The services folder(s) at dst, read-only: one folder is bound; a colon list is a
// read-only overlay whose lower layers are the folders in order, so a service name resolves
// to the first folder that has it (the service path's lookup order) and every folder's
// other services stay visible. Overlay option syntax reserves ',' ':' '\\' in paths.
MaybeFailure MountServices(const std::string& dirs, const std::string& dst) {
  if (dirs.find(':') == std::string::npos) return BindReadOnly(dirs, dst, MS_NOSUID | MS_NODEV);
  if (dirs.find_first_of(",\\") != std::string::npos || dirs.front() == ':' || dirs.back() == ':' ||
      dirs.find("::") != std::string::npos) {
    return Failure{EINVAL, "services folders '" + dirs + "': an empty entry or a ',' or '\\' in a path"};
  }
  return Mount("overlay", dst, "overlay", MS_RDONLY | MS_NOSUID | MS_NODEV,
               "lowerdir=" + dirs + ",userxattr");
}

std::string TmpfsData(const char* mode, uint64_t bytes) {
  std::string d = std::string("mode=") + mode;
  if (bytes) d += ",size=" + std::to_string(bytes);
  return d;
}

// /dev skeleton inside root (which must be writable now): nodes bound from the host,
// mount points for pts and shm, the usual symlinks.
MaybeFailure PopulateDev(const std::string& root) {
  const std::string dev = root + "/dev";
  ZYGOTE_TRY(MakeDir(dev, 0755));
  for (const char* node : kDevNodes) {
    ZYGOTE_TRY(MakeFile(dev + "/" + node));
    ZYGOTE_TRY(Mount(std::string("/dev/") + node, dev + "/" + node, nullptr, MS_BIND));
  }
  ZYGOTE_TRY(MakeDir(dev + "/pts", 0755));
  ZYGOTE_TRY(MakeDir(dev + "/shm", 01777));
  ZYGOTE_TRY(MakeSymlink("pts/ptmx", dev + "/ptmx"));
  ZYGOTE_TRY(MakeSymlink("/proc/self/fd", dev + "/fd"));
  ZYGOTE_TRY(MakeSymlink("/proc/self/fd/0", dev + "/stdin"));
  ZYGOTE_TRY(MakeSymlink("/proc/self/fd/1", dev + "/stdout"));
  ZYGOTE_TRY(MakeSymlink("/proc/self/fd/2", dev + "/stderr"));
  return std::nullopt;
}

// Mount points every root needs, and the agent bound read-only at kAgentPathInside.
MaybeFailure PopulateMountPoints(const std::string& root, const TemplateLayout& layout) {
  for (const char* d : {"proc", "dev", "tmp", "home", "run", "odyssey"}) {
    ZYGOTE_TRY(MakeDir(root + "/" + d, 0755));
  }
  ZYGOTE_TRY(MakeFile(root + kAgentPathInside));
  if (!layout.services_dir.empty()) {
    ZYGOTE_TRY(MakeDir(root + kServicesDirInside, 0755));
    ZYGOTE_TRY(MountServices(layout.services_dir, root + kServicesDirInside));
  }
  if (!layout.gui_agent_path.empty()) {
    ZYGOTE_TRY(MakeFile(root + kGuiAgentPathInside));
    ZYGOTE_TRY(BindReadOnly(layout.gui_agent_path, root + kGuiAgentPathInside, MS_NOSUID | MS_NODEV));
  }
  return BindReadOnly(layout.agent_path, root + kAgentPathInside, MS_NOSUID | MS_NODEV);
}

// The host template's root: a small tmpfs with the host's system directories bound
// read-only and symlinks (merged /usr) copied; read-only itself once assembled.
MaybeFailure AssembleHostRoot(const TemplateLayout& layout) {
  const std::string root = RootOf(layout);
  ZYGOTE_TRY(Mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("0755", 1 << 20)));
  for (const char* entry : kHostEntries) {
    const std::string host = std::string("/") + entry;
    const std::string inside = root + host;
    struct stat st {};
    if (::lstat(host.c_str(), &st) != 0) continue;  // absent on this host: skip
    if (S_ISLNK(st.st_mode)) {
      char target[PATH_MAX];
      ssize_t n = ::readlink(host.c_str(), target, sizeof(target) - 1);
      if (n < 0) return Errno("readlink", host);
      target[n] = '\0';
      ZYGOTE_TRY(MakeSymlink(target, inside));
    } else if (S_ISDIR(st.st_mode)) {
      ZYGOTE_TRY(MakeDir(inside, 0755));
      ZYGOTE_TRY(BindReadOnly(host, inside, MS_NOSUID));
    }
  }
  ZYGOTE_TRY(PopulateDev(root));
  ZYGOTE_TRY(PopulateMountPoints(root, layout));
  if (::mount(nullptr, root.c_str(), nullptr,
              MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0) {
    return Errno("remount read-only", root);
  }
  return std::nullopt;
}

// Named template, per clone: overlay of the template tree (lower, read-only) and a fresh
// upper on a size-limited tmpfs; then the same skeleton as the host root.
MaybeFailure AssembleOverlayRoot(const TemplateLayout& layout, const CloneMounts& clone,
                                 std::string* root_out) {
  const std::string w = CloneDirOf(layout);
  ZYGOTE_TRY(Mount("tmpfs", w, "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("0755", clone.tmpfs_bytes)));
  for (const char* d : {"upper", "work", "root"}) ZYGOTE_TRY(MakeDir(w + "/" + d, 0755));
  const std::string root = w + "/root";
  ZYGOTE_TRY(Mount("overlay", root, "overlay", MS_NOSUID,
                   "lowerdir=" + layout.template_dir + ",upperdir=" + w + "/upper,workdir=" + w +
                       "/work,userxattr"));
  ZYGOTE_TRY(PopulateMountPoints(root, layout));
  ZYGOTE_TRY(Mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, TmpfsData("0755", 64 << 10)));
  ZYGOTE_TRY(PopulateDev(root));
  *root_out = root;
  return std::nullopt;
}

}  // namespace

MaybeFailure PrepareTemplate(const TemplateLayout& layout) {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return Errno("make mounts private", "/");
  }
  ZYGOTE_TRY(Mount("tmpfs", layout.staging, "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("0700", 1 << 20)));
  ZYGOTE_TRY(MakeDir(RootOf(layout), 0755));
  ZYGOTE_TRY(MakeDir(CloneDirOf(layout), 0755));
  if (layout.template_dir.empty()) return AssembleHostRoot(layout);
  struct stat st {};
  if (::stat(layout.template_dir.c_str(), &st) != 0) return Errno("stat template root", layout.template_dir);
  if (!S_ISDIR(st.st_mode)) return Failure{ENOTDIR, "template root " + layout.template_dir + " is not a directory"};
  return std::nullopt;
}

MaybeFailure MountCloneAndPivot(const TemplateLayout& layout, const CloneMounts& clone) {
  std::string root = RootOf(layout);
  const bool host = layout.template_dir.empty();
  if (!host) ZYGOTE_TRY(AssembleOverlayRoot(layout, clone, &root));
  ZYGOTE_TRY(Mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC));
  ZYGOTE_TRY(Mount("devpts", root + "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                   "newinstance,ptmxmode=0666,mode=0620"));
  ZYGOTE_TRY(Mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                   TmpfsData("1777", clone.tmpfs_bytes)));
  if (host) {
    ZYGOTE_TRY(Mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("1777", clone.tmpfs_bytes)));
    ZYGOTE_TRY(Mount("tmpfs", root + "/home", "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("0755", clone.tmpfs_bytes)));
  } else if (::chmod((root + "/tmp").c_str(), 01777) != 0) {
    return Errno("chmod", root + "/tmp");
  }
  ZYGOTE_TRY(Mount("tmpfs", root + "/run", "tmpfs", MS_NOSUID | MS_NODEV, TmpfsData("0755", 1 << 20)));
  const std::string home = root + "/home/user";
  ZYGOTE_TRY(MakeDir(home, 0700));
  if (::chown(home.c_str(), layout.inner_uid, layout.inner_gid) != 0) return Errno("chown", home);
  ZYGOTE_TRY(MakeDir(root + kVchanDirInside, 0755));
  if (clone.vchan_mount_fd >= 0) {
    // Prepared by the host (idmapped, nosuid, nodev, noexec); only needs attaching.
    if (::syscall(SYS_move_mount, clone.vchan_mount_fd, "", AT_FDCWD,
                  (root + kVchanDirInside).c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      return Errno("move_mount", root + kVchanDirInside);
    }
    ::close(clone.vchan_mount_fd);
  } else {
    ZYGOTE_TRY(Mount(clone.vchan_dir, root + kVchanDirInside, nullptr, MS_BIND));
    if (::mount(nullptr, (root + kVchanDirInside).c_str(), nullptr,
                MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC | KeptFlags(root + kVchanDirInside),
                nullptr) != 0) {
      return Errno("remount nosuid,nodev,noexec", root + kVchanDirInside);
    }
  }
  if (::chdir(root.c_str()) != 0) return Errno("chdir", root);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return Errno("pivot_root", root);
  if (::umount2(".", MNT_DETACH) != 0) return Errno("detach old root", root);
  if (::chdir("/") != 0) return Errno("chdir", "/");
  return std::nullopt;
}

}  // namespace odyssey::hal::native::zygote
