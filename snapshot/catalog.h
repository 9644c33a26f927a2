// Catalog of template snapshots kept in one directory: <dir>/<template>.<backend>.save plus
// its sealed header. Which snapshot exists for which template, verified before use; a
// corrupted one is reported and deleted so that the next prepare rebuilds it. It never
// boots anything itself (backends do) and never interprets payloads.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "snapshot/snapshot_file.h"

namespace odyssey::snapshot {

class Catalog {
 public:
  // Uses dir (created if missing) as the catalog.
  static Result<Catalog> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // Where the payload of template_name's snapshot for backend lives (may not exist yet).
  std::string PayloadPath(const std::string& template_name, const std::string& backend) const;
  // The verified snapshot of template_name, nullopt if there is none, or an error naming
  // the file and the mismatch when it is corrupted (the files are then removed).
  Result<std::optional<SnapshotInfo>> Find(const std::string& template_name, const std::string& backend,
                                           uint64_t max_payload_bytes = kDefaultMaxPayloadBytes) const;
  // Headers of every snapshot in the catalog (payloads not hashed); unreadable ones skipped.
  std::vector<SnapshotInfo> List() const;

 private:
  explicit Catalog(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// Template names usable in file names: [A-Za-z0-9._-]{1,64}, not starting with '.'.
bool IsValidTemplateName(const std::string& name);

}  // namespace odyssey::snapshot
