#include "snapshot/catalog.h"

#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

namespace odyssey::snapshot {

bool IsValidTemplateName(const std::string& name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

Result<Catalog> Catalog::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error{"creating snapshot catalog " + dir + ": " + ec.message(), ec.value()};
  return Catalog(dir);
}

std::string Catalog::PayloadPath(const std::string& template_name, const std::string& backend) const {
  return dir_ + "/" + template_name + "." + backend + ".save";
}

Result<std::optional<SnapshotInfo>> Catalog::Find(const std::string& template_name,
                                                  const std::string& backend,
                                                  uint64_t max_payload_bytes) const {
  if (!IsValidTemplateName(template_name)) {
    return Error{"invalid template name '" + template_name + "'", EINVAL};
  }
  const std::string payload = PayloadPath(template_name, backend);
  struct stat st;
  if (::stat(HeaderPath(payload).c_str(), &st) != 0 && errno == ENOENT) {
    // An unsealed payload is a save in progress or one that crashed; a prepare overwrites it.
    return std::optional<SnapshotInfo>();
  }
  auto info = Verify(payload, max_payload_bytes);
  if (!info.ok()) {
    Status removed = Remove(payload);
    std::string what = info.error().message + "; removed it, prepare the template again to rebuild";
    if (!removed.ok()) what += " (removal failed: " + removed.error().message + ")";
    return Error{what, info.error().code};
  }
  if (info->template_name != template_name || info->backend != backend) {
    (void)Remove(payload);
    return Error{"snapshot " + payload + " belongs to template '" + info->template_name + "' (" +
                     info->backend + "); removed it",
                 EINVAL};
  }
  return std::optional<SnapshotInfo>(std::move(*info));
}

std::vector<SnapshotInfo> Catalog::List() const {
  std::vector<SnapshotInfo> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::string p = entry.path().string();
    const std::string suffix = kHeaderSuffix;
    if (p.size() <= suffix.size() || p.compare(p.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    auto info = ReadHeader(p.substr(0, p.size() - suffix.size()));
    if (info.ok()) out.push_back(std::move(*info));
  }
  return out;
}

}  // namespace odyssey::snapshot
