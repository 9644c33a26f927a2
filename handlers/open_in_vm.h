// Host side of qubes.OpenInVM: sends a file to a domain, and when the viewer there changed
// it, writes the new content back safely. The original is replaced atomically, only after
// the new content is fsync'd; when write-back fails the original is kept as a backup and
// the edited content is kept beside it, so nothing is ever lost.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "base/result.h"
#include "handlers/disposable_runner.h"

namespace odyssey::handlers {

struct OpenOptions {
  Target target = Target::Disposable();
  bool view_only = false;                      // send "view-only-NAME"; take nothing back
  uint64_t max_return_bytes = 1ull << 30;      // cap on an edited file coming back
  int stderr_fd = -1;                          // where the service's stderr goes
  // Test hook: runs just before the original is replaced; an error aborts write-back as a
  // failing rename or fsync would.
  std::function<Status()> before_replace;
};

struct OpenResult {
  int exit_code = 0;
  bool written_back = false;     // the original now holds the edited content
  uint64_t bytes_returned = 0;   // what the service sent back (ignored when view-only)
};

// The 256-byte qubes.OpenInVM header for path: NUL-padded sanitized basename, optionally
// prefixed "view-only-".
std::string OpenInVmHeader(const std::string& path, bool view_only);
// Characters outside [0-9A-Za-z._+@-] become '_'; "", "." and ".." become "file".
std::string SanitizeBasename(const std::string& name);

// Opens path in options.target through qubes.OpenInVM and writes back any edit. Errors
// say what happened to the original and where a backup or the edited content was kept.
Result<OpenResult> OpenFileInDomain(DisposableRunner& runner, const std::string& path,
                                    const OpenOptions& options);

// Host side of qubes.OpenURL: validates the URL (http, https, ftp only) and sends it.
// stdout_fd >= 0: the service's report (untrusted) is shown there, capped at 64 KiB, with
// control characters replaced; otherwise it is discarded.
Result<int> OpenUrlInDomain(DisposableRunner& runner, const std::string& url, const Target& target,
                            int stderr_fd = -1, int stdout_fd = -1);

}  // namespace odyssey::handlers
