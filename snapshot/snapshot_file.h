// Template snapshot files: one format for every backend's saved state. A backend writes
// its own payload (libvirt: a QEMU save image; native: whatever its zygote needs) and seals
// it with a small header file next to it, PAYLOAD.osnap, holding a magic, a format version,
// the payload's size and SHA-256, and strict key=value metadata. Opening verifies all of
// it, so a truncated, edited or foreign file is refused with a message saying which file
// and what is wrong, and the caller rebuilds. This module never interprets the payload.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/result.h"

namespace odyssey::snapshot {

inline constexpr char kMagic[8] = {'O', 'D', 'Y', 'S', 'N', 'A', 'P', '\0'};
// Version 1: fixed header + payload size + SHA-256 + key=value metadata.
inline constexpr uint32_t kFormatVersion = 1;
// Payloads above this are refused (a 16 GiB guest is far beyond any template we build).
inline constexpr uint64_t kDefaultMaxPayloadBytes = 16ull << 30;
// Metadata above this is refused before it is read.
inline constexpr uint32_t kMaxMetadataBytes = 64 * 1024;
inline constexpr char kHeaderSuffix[] = ".osnap";

// What a sealed snapshot says about itself.
struct SnapshotInfo {
  std::string template_name;
  std::string backend;        // e.g. "libvirt-qemu"
  uint64_t payload_bytes = 0; // filled by Seal
  std::string sha256_hex;     // filled by Seal
  // Backend-specific facts needed to restore (names, paths, accelerator). Keys match
  // [a-z0-9_.]+, values contain no newline.
  std::map<std::string, std::string> fields;
};

// Path of the header that seals payload_path.
std::string HeaderPath(const std::string& payload_path);

// SHA-256 of a whole file as lowercase hex; refuses files larger than max_bytes.
Result<std::string> Sha256File(const std::string& path, uint64_t max_bytes = kDefaultMaxPayloadBytes);

// Hashes payload_path and writes its header atomically. Returns the completed info.
Result<SnapshotInfo> Seal(const std::string& payload_path, SnapshotInfo info);

// Reads and checks the header only (magic, version, lengths, metadata syntax); cheap.
Result<SnapshotInfo> ReadHeader(const std::string& payload_path,
                                uint64_t max_payload_bytes = kDefaultMaxPayloadBytes);

// ReadHeader plus the payload's size and SHA-256. The error names the file and what does
// not match; callers then Remove() it and rebuild.
Result<SnapshotInfo> Verify(const std::string& payload_path,
                            uint64_t max_payload_bytes = kDefaultMaxPayloadBytes);

// Deletes the payload and its header; missing files are not an error.
Status Remove(const std::string& payload_path);

}  // namespace odyssey::snapshot
