#include "snapshot/snapshot_file.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "base/io.h"
#include "base/unique_fd.h"

namespace odyssey::snapshot {
namespace {

// On-disk header, little-endian, followed by metadata_len bytes of "key=value\n" lines.
struct RawHeader {
  char magic[8];
  uint32_t version;
  uint32_t metadata_len;
  uint64_t payload_bytes;
  uint8_t sha256[32];
};
static_assert(sizeof(RawHeader) == 56, "snapshot header layout is part of the file format");

std::string ToHex(const uint8_t* p, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 15]);
  }
  return out;
}

bool FromHex(const std::string& hex, uint8_t* out, size_t n) {
  if (hex.size() != n * 2) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < n; ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool IsValidKey(const std::string& key) {
  if (key.empty() || key.size() > 128) return false;
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.')) return false;
  }
  return true;
}

bool IsValidValue(const std::string& value) {
  return value.size() <= 4096 && value.find('\n') == std::string::npos &&
         value.find('\0') == std::string::npos;
}

Result<std::string> FormatMetadata(const SnapshotInfo& info) {
  std::string out;
  auto add = [&](const std::string& k, const std::string& v) -> Status {
    if (!IsValidKey(k) || !IsValidValue(v)) {
      return Error{"snapshot metadata: invalid key or value for '" + k + "'", EINVAL};
    }
    out += k + "=" + v + "\n";
    return OkStatus();
  };
  ODYSSEY_TRY(add("template", info.template_name));
  ODYSSEY_TRY(add("backend", info.backend));
  for (const auto& [k, v] : info.fields) ODYSSEY_TRY(add("field." + k, v));
  if (out.size() > kMaxMetadataBytes) return Error{"snapshot metadata too large", EFBIG};
  return out;
}

// Strict parse: every line key=value, known top-level keys once, fields prefixed "field.".
Status ParseMetadata(const std::string& untrusted_text, SnapshotInfo* info, const std::string& path) {
  auto bad = [&](const std::string& why) {
    return Error{"snapshot header " + path + ": bad metadata: " + why, EINVAL};
  };
  if (!untrusted_text.empty() && untrusted_text.back() != '\n') return bad("unterminated line");
  bool have_template = false, have_backend = false;
  size_t pos = 0;
  while (pos < untrusted_text.size()) {
    size_t end = untrusted_text.find('\n', pos);
    std::string line = untrusted_text.substr(pos, end - pos);
    pos = end + 1;
    size_t eq = line.find('=');
    if (eq == std::string::npos) return bad("line without '='");
    std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (!IsValidKey(key) || !IsValidValue(value)) return bad("invalid key or value");
    if (key == "template") {
      if (have_template) return bad("duplicate template");
      info->template_name = value;
      have_template = true;
    } else if (key == "backend") {
      if (have_backend) return bad("duplicate backend");
      info->backend = value;
      have_backend = true;
    } else if (key.rfind("field.", 0) == 0 && key.size() > 6) {
      if (!info->fields.emplace(key.substr(6), value).second) return bad("duplicate " + key);
    } else {
      return bad("unknown key " + key);
    }
  }
  if (!have_template || !have_backend) return bad("template or backend missing");
  return OkStatus();
}

struct EvpCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

}  // namespace

std::string HeaderPath(const std::string& payload_path) { return payload_path + kHeaderSuffix; }

Result<std::string> Sha256File(const std::string& path, uint64_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  std::unique_ptr<EVP_MD_CTX, EvpCtxDeleter> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return Error{"sha256 init failed for " + path, EIO};
  }
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::Errno("read", path);
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
    if (total > max_bytes) {
      return Error{path + ": larger than the " + std::to_string(max_bytes) + "-byte cap", EFBIG};
    }
    EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n));
  }
  uint8_t digest[32];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1 || len != sizeof digest) {
    return Error{"sha256 final failed for " + path, EIO};
  }
  return ToHex(digest, sizeof digest);
}

Result<SnapshotInfo> Seal(const std::string& payload_path, SnapshotInfo info) {
  struct stat st;
  if (::stat(payload_path.c_str(), &st) != 0) return Error::Errno("stat", payload_path);
  auto sha = Sha256File(payload_path);
  if (!sha.ok()) return sha.error().Wrap("sealing snapshot " + payload_path);
  info.payload_bytes = static_cast<uint64_t>(st.st_size);
  info.sha256_hex = *sha;
  auto meta = FormatMetadata(info);
  if (!meta.ok()) return meta.error().Wrap("sealing snapshot " + payload_path);

  RawHeader h{};
  std::memcpy(h.magic, kMagic, sizeof h.magic);
  h.version = kFormatVersion;
  h.metadata_len = static_cast<uint32_t>(meta->size());
  h.payload_bytes = info.payload_bytes;
  FromHex(info.sha256_hex, h.sha256, sizeof h.sha256);
  std::string content(reinterpret_cast<const char*>(&h), sizeof h);
  content += *meta;
  ODYSSEY_TRY(WriteFileAtomic(HeaderPath(payload_path), content, 0600));
  return info;
}

Result<SnapshotInfo> ReadHeader(const std::string& payload_path, uint64_t max_payload_bytes) {
  const std::string path = HeaderPath(payload_path);
  auto untrusted = ReadFileToString(path, sizeof(RawHeader) + kMaxMetadataBytes);
  if (!untrusted.ok()) return untrusted.error().Wrap("reading snapshot header");
  const std::string& data = *untrusted;
  auto bad = [&](const std::string& why) { return Error{"snapshot header " + path + ": " + why, EINVAL}; };
  if (data.size() < sizeof(RawHeader)) return bad("truncated (" + std::to_string(data.size()) + " bytes)");
  RawHeader h;
  std::memcpy(&h, data.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof h.magic) != 0) return bad("bad magic, not an Odyssey snapshot");
  if (h.version != kFormatVersion) {
    return bad("format version " + std::to_string(h.version) + " unsupported (want " +
               std::to_string(kFormatVersion) + ")");
  }
  if (h.metadata_len > kMaxMetadataBytes || data.size() != sizeof h + h.metadata_len) {
    return bad("metadata length does not match the file");
  }
  if (h.payload_bytes > max_payload_bytes) {
    return bad("payload of " + std::to_string(h.payload_bytes) + " bytes exceeds the cap of " +
               std::to_string(max_payload_bytes));
  }
  SnapshotInfo info;
  ODYSSEY_TRY(ParseMetadata(data.substr(sizeof h), &info, path));
  info.payload_bytes = h.payload_bytes;
  info.sha256_hex = ToHex(h.sha256, sizeof h.sha256);
  return info;
}

Result<SnapshotInfo> Verify(const std::string& payload_path, uint64_t max_payload_bytes) {
  auto info = ReadHeader(payload_path, max_payload_bytes);
  if (!info.ok()) return info.error();
  struct stat st;
  if (::stat(payload_path.c_str(), &st) != 0) return Error::Errno("stat", payload_path);
  if (static_cast<uint64_t>(st.st_size) != info->payload_bytes) {
    return Error{"snapshot " + payload_path + " is corrupted: size " + std::to_string(st.st_size) +
                     " bytes, header says " + std::to_string(info->payload_bytes),
                 EINVAL};
  }
  auto sha = Sha256File(payload_path, max_payload_bytes);
  if (!sha.ok()) return sha.error().Wrap("verifying snapshot");
  if (*sha != info->sha256_hex) {
    return Error{"snapshot " + payload_path + " is corrupted: sha256 " + *sha + " does not match " +
                     info->sha256_hex + " in its header",
                 EINVAL};
  }
  return info;
}

Status Remove(const std::string& payload_path) {
  for (const std::string& p : {payload_path, HeaderPath(payload_path)}) {
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) return Error::Errno("unlink", p);
  }
  return OkStatus();
}

}  // namespace odyssey::snapshot
