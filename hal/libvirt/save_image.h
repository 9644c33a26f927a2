// libvirt's QEMU save image ("LibvirtQemudSave" header, domain XML, optional cookie, then
// QEMU's migration stream). libvirt refuses to restore an image under another UUID, so a
// clone is restored from a per-clone copy whose embedded XML already names the clone: the
// header region is rewritten and the migration stream copied in the kernel
// (copy_file_range; a reflink where the file system has them). The template's image is
// never modified. Only the fixed header is trusted after its checks; lengths are capped.
#pragma once

#include <cstdint>
#include <string>

#include "base/result.h"

namespace odyssey::hal::libvirt {

// The XML embedded in a save image at path.
Result<std::string> ReadSaveImageXml(const std::string& path);

// Writes dst: src with its embedded XML replaced by xml (which must fit in src's XML area,
// 64 KiB of slack by libvirt's convention) and the same migration stream.
Status CopySaveImageWithXml(const std::string& src, const std::string& dst, const std::string& xml);

}  // namespace odyssey::hal::libvirt
