#include "hal/libvirt/save_image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/io.h"
#include "base/unique_fd.h"

namespace odyssey::hal::libvirt {
namespace {

constexpr char kSaveMagic[16] = {'L', 'i', 'b', 'v', 'i', 'r', 't', 'Q', 'e', 'm', 'u', 'd', 'S', 'a', 'v', 'e'};
constexpr uint32_t kSaveVersion = 2;
constexpr uint32_t kMaxDataLen = 16u << 20;

// libvirt's virQEMUSaveHeader (host byte order).
struct SaveHeader {
  char magic[16];
  uint32_t version;
  uint32_t data_len;
  uint32_t was_running;
  uint32_t format;
  uint32_t cookie_offset;
  uint32_t unused[14];
};
static_assert(sizeof(SaveHeader) == 92, "libvirt's save image header is 92 bytes");

struct Parsed {
  SaveHeader header;
  std::string xml;
};

Result<Parsed> ReadHeader(int fd, const std::string& path) {
  Parsed p;
  if (Status st = ReadExact(fd, &p.header, sizeof p.header); !st.ok()) {
    return st.error().Wrap("reading save image header of " + path);
  }
  const SaveHeader& h = p.header;
  auto bad = [&](const std::string& why) { return Error{"save image " + path + ": " + why, EINVAL}; };
  if (std::memcmp(h.magic, kSaveMagic, sizeof h.magic) != 0) return bad("not a complete libvirt QEMU save image");
  if (h.version != kSaveVersion) return bad("version " + std::to_string(h.version) + " unsupported");
  if (h.format != 0) return bad("compressed images are not supported");
  if (h.data_len == 0 || h.data_len > kMaxDataLen) return bad("bad XML area length");
  if (h.cookie_offset >= h.data_len) return bad("bad cookie offset");
  std::string area(h.data_len, '\0');
  if (Status st = ReadExact(fd, area.data(), area.size()); !st.ok()) {
    return st.error().Wrap("reading save image XML of " + path);
  }
  const size_t xml_area = h.cookie_offset ? h.cookie_offset : h.data_len;
  p.xml = std::string(area.c_str(), strnlen(area.data(), xml_area));
  return p;
}

}  // namespace

Result<SaveImage> ReadSaveImage(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  auto p = ReadHeader(fd.get(), path);
  if (!p.ok()) return p.error();
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::Errno("fstat", path);
  const uint64_t stream_off = sizeof p->header + p->header.data_len;
  if (static_cast<uint64_t>(st.st_size) <= stream_off) {
    return Error{"save image " + path + " is truncated (no migration stream)", EINVAL};
  }
  return SaveImage{std::move(p->xml), stream_off};
}

}  // namespace odyssey::hal::libvirt
