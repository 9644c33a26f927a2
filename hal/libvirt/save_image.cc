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
  std::string cookie;  // empty if none
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
  if (h.cookie_offset) {
    const char* c = area.data() + h.cookie_offset;
    p.cookie = std::string(c, strnlen(c, h.data_len - h.cookie_offset));
  }
  return p;
}

}  // namespace

Result<std::string> ReadSaveImageXml(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error::Errno("open", path);
  auto p = ReadHeader(fd.get(), path);
  if (!p.ok()) return p.error();
  return p->xml;
}

Status CopySaveImageWithXml(const std::string& src, const std::string& dst, const std::string& xml) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Error::Errno("open", src);
  auto p = ReadHeader(in.get(), src);
  if (!p.ok()) return p.error();
  SaveHeader h = p->header;
  // New XML area: xml\0 [cookie\0] zeros, same total length so the stream offset is kept.
  std::string area = xml;
  area.push_back('\0');
  if (!p->cookie.empty()) {
    h.cookie_offset = static_cast<uint32_t>(area.size());
    area += p->cookie;
    area.push_back('\0');
  }
  if (area.size() > h.data_len) {
    return Error{"clone XML does not fit in the save image's XML area of " + src, EFBIG};
  }
  area.resize(h.data_len, '\0');
  struct stat st;
  if (::fstat(in.get(), &st) != 0) return Error::Errno("fstat", src);
  const off_t stream_off = static_cast<off_t>(sizeof h + h.data_len);
  if (st.st_size < stream_off) return Error{"save image " + src + " is truncated", EINVAL};

  UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out) return Error::Errno("open", dst);
  std::string head(reinterpret_cast<const char*>(&h), sizeof h);
  head += area;
  ODYSSEY_TRY(WriteAll(out.get(), head.data(), head.size()));
  off_t in_off = stream_off;
  size_t left = static_cast<size_t>(st.st_size - stream_off);
  while (left > 0) {
    ssize_t n = ::copy_file_range(in.get(), &in_off, out.get(), nullptr, left, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::Errno("copy_file_range", src + " -> " + dst);
    if (n == 0) return Error{"save image " + src + " shrank while copying", EIO};
    left -= static_cast<size_t>(n);
  }
  return OkStatus();
}

}  // namespace odyssey::hal::libvirt
