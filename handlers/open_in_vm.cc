#include "handlers/open_in_vm.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>

#include "base/io.h"
#include "base/unique_fd.h"
#include "handlers/service_call.h"
#include "handlers/url.h"

namespace odyssey::handlers {
namespace {

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string BaseOf(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) return Error::Errno("fsync", dir);
  return OkStatus();
}

// A name beside path that does not exist yet: path+suffix, path+suffix.1, ...
std::string FreeName(const std::string& path, const std::string& suffix) {
  for (int i = 0;; ++i) {
    std::string p = path + suffix;
    if (i) p += '.' + std::to_string(i);  // not "." + to_string: GCC 12 -Wrestrict false positive
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) return p;
  }
}

// Keeps the original's content under a backup name: a hard link, or a synced copy.
Result<std::string> MakeBackup(const std::string& path) {
  std::string backup = FreeName(path, ".odyssey-backup");
  if (::link(path.c_str(), backup.c_str()) == 0) return backup;
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd out(::open(backup.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!in || !out) return Error::Errno("backup", backup);
  Status st = CopyFd(in.get(), out.get());
  if (st.ok() && ::fsync(out.get()) != 0) st = Error::Errno("fsync", backup);
  if (!st.ok()) return st.error();
  return backup;
}

}  // namespace

std::string SanitizeBasename(const std::string& name) {
  std::string out;
  for (char c : name) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' ||
              c == '@' || c == '-';
    out.push_back(ok ? c : '_');
  }
  if (out.empty() || out == "." || out == "..") out = "file";
  return out;
}

std::string OpenInVmHeader(const std::string& path, bool view_only) {
  std::string name = SanitizeBasename(BaseOf(path));
  if (name.size() > 200) name = name.substr(name.size() - 200);  // keep the extension
  std::string header = (view_only ? "view-only-" : "") + name;
  header.resize(256, '\0');
  return header;
}

Result<OpenResult> OpenFileInDomain(DisposableRunner& runner, const std::string& path,
                                    const OpenOptions& options) {
  UniqueFd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (!in) return Error::Errno("open", path);
  struct stat before;
  if (::fstat(in.get(), &before) != 0) return Error::Errno("fstat", path);
  if (!S_ISREG(before.st_mode)) return Error{path + ": not a regular file", EINVAL};

  // The edited file, if any, is received into a temporary file beside the original so the
  // final rename stays on one filesystem.
  UniqueFd tmp_fd;
  std::string tmp_path;
  if (!options.view_only) {
    tmp_path = DirOf(path) + "/." + BaseOf(path) + ".odyssey-return.XXXXXX";
    int fd = ::mkostemp(tmp_path.data(), O_CLOEXEC);
    if (fd < 0) return Error::Errno("mkostemp", tmp_path);
    tmp_fd.reset(fd);
  }
  struct TmpGuard {
    std::string* path;
    ~TmpGuard() {
      if (!path->empty()) ::unlink(path->c_str());
    }
  } guard{&tmp_path};

  OpenResult result;
  std::string header = OpenInVmHeader(path, options.view_only);
  CallIo io;
  io.stderr_fd = options.stderr_fd;
  io.write_stdin = [&](int fd) -> Status {
    ODYSSEY_TRY(WriteAll(fd, header.data(), header.size()));
    return CopyFd(in.get(), fd);
  };
  io.read_stdout = [&](int fd) -> Status {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::Errno("read", "qubes.OpenInVM output");
      if (n == 0) return OkStatus();
      result.bytes_returned += static_cast<uint64_t>(n);
      if (options.view_only) continue;  // view-only: whatever comes back is ignored
      if (result.bytes_returned > options.max_return_bytes)
        return Error{"the edited file coming back exceeds the cap of " +
                         std::to_string(options.max_return_bytes) + " bytes",
                     EFBIG};
      ODYSSEY_TRY(WriteAll(tmp_fd.get(), buf, static_cast<size_t>(n)));
    }
  };
  auto outcome = CallService(runner, options.target, "qubes.OpenInVM", "", std::move(io));
  if (!outcome.ok()) return outcome.error();
  result.exit_code = outcome->exit_code;
  std::string unchanged = "; " + path + " is unchanged";
  if (!outcome->stdout_status.ok()) return outcome->stdout_status.error().Wrap("qubes.OpenInVM" + unchanged);
  if (outcome->exit_code != 0)
    return Error{"qubes.OpenInVM in " + options.target.Describe() + " failed with exit code " +
                     std::to_string(outcome->exit_code) + unchanged,
                 EPROTO};
  if (!outcome->stdin_status.ok()) return outcome->stdin_status.error().Wrap("sending " + path);
  if (options.view_only || result.bytes_returned == 0) return result;

  // Write-back. 1: the new content is on disk, with the original's permissions.
  if (::fchmod(tmp_fd.get(), before.st_mode & 07777) != 0 || ::fsync(tmp_fd.get()) != 0)
    return Error::Errno("fsync", tmp_path).Wrap("write-back" + unchanged);
  tmp_fd.reset();
  // 2: the original did not change on the host meanwhile; else keep both.
  struct stat now;
  bool changed = ::stat(path.c_str(), &now) != 0 || now.st_ino != before.st_ino ||
                 now.st_size != before.st_size || now.st_mtim.tv_sec != before.st_mtim.tv_sec ||
                 now.st_mtim.tv_nsec != before.st_mtim.tv_nsec;
  // 3: a backup of the original, then the atomic replace, then the directory entry synced.
  Result<std::string> backup = changed ? Result<std::string>(Error{path + " changed on the host while it was open", EBUSY})
                                       : MakeBackup(path);
  Status replaced = backup.ok() ? OkStatus() : Status(backup.error());
  if (replaced.ok() && options.before_replace) replaced = options.before_replace();
  if (replaced.ok() && ::rename(tmp_path.c_str(), path.c_str()) != 0)
    replaced = Error::Errno("rename", tmp_path + " -> " + path);
  if (replaced.ok()) {
    tmp_path.clear();
    replaced = SyncDir(DirOf(path));
  }
  if (!replaced.ok()) {
    // Keep the edited content under a visible name; the original stays in place (the
    // rename never happened) and its backup stays too.
    std::string kept = tmp_path;
    if (!tmp_path.empty()) {
      std::string edited = FreeName(path, ".odyssey-edited");
      if (::rename(tmp_path.c_str(), edited.c_str()) == 0) kept = edited;
      tmp_path.clear();
    }
    std::string msg = "write-back of " + path + " failed (" + replaced.error().message + ")";
    if (!kept.empty()) msg += "; the edited content is in " + kept;
    if (backup.ok()) msg += "; the original is kept in " + backup.value();
    return Error{msg, replaced.error().code};
  }
  ::unlink(backup.value().c_str());
  (void)SyncDir(DirOf(path));
  result.written_back = true;
  return result;
}

Result<int> OpenUrlInDomain(DisposableRunner& runner, const std::string& url, const Target& target,
                            int stderr_fd, int stdout_fd) {
  auto parsed = ParseUrl(url);
  if (!parsed.ok()) return parsed.error().Wrap("Invalid URL");
  if (parsed->scheme != "http" && parsed->scheme != "https" && parsed->scheme != "ftp")
    return Error{"Invalid URL: qubes.OpenURL opens only http, https and ftp URLs, not '" +
                     parsed->scheme + ":'",
                 EINVAL};
  std::string line = url + "\n";
  CallIo io;
  io.stderr_fd = stderr_fd;
  io.write_stdin = [&](int fd) { return WriteAll(fd, line.data(), line.size()); };
  if (stdout_fd >= 0) {
    // The service's report is untrusted text for a terminal: capped, and control
    // characters other than newline and tab shown as '?'.
    io.read_stdout = [stdout_fd](int fd) -> Status {
      std::string untrusted_text;
      Status st = ReadAllCapped(fd, 64 * 1024, &untrusted_text);
      for (char& c : untrusted_text) {
        unsigned char u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\n' && c != '\t') || u == 0x7f) c = '?';
      }
      (void)WriteAll(stdout_fd, untrusted_text.data(), untrusted_text.size());
      return st.ok() ? OkStatus() : st.error().Wrap("qubes.OpenURL output");
    };
  }
  auto outcome = CallService(runner, target, "qubes.OpenURL", "", std::move(io));
  if (!outcome.ok()) return outcome.error();
  if (!outcome->stdout_status.ok()) return outcome->stdout_status.error();
  return outcome->exit_code;
}

}  // namespace odyssey::handlers
