// libvirt's QEMU save image ("LibvirtQemudSave" header, domain XML, optional cookie, then
// QEMU's migration stream). Clones are not restored through libvirt's restore API (it
// refuses another UUID); the backend starts each clone from the image's XML and feeds QEMU
// the migration stream that starts at stream_offset. The image is never modified. Only the
// fixed header is trusted after its checks; lengths are capped.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"

namespace odyssey::hal::libvirt {

struct SaveImage {
  std::string xml;         // the domain XML libvirt embedded
  uint64_t stream_offset;  // where QEMU's migration stream starts in the file
};

// The embedded XML and stream offset of the save image at path; an error naming path when
// it is not an uncompressed libvirt QEMU save image or is truncated.
Result<SaveImage> ReadSaveImage(const std::string& path);

}  // namespace odyssey::hal::libvirt
