#include "hal/libvirt/domain_xml.h"

#include <cstdio>
#include <random>

namespace odyssey::hal::libvirt {

std::string GuestPortName(int port) { return "org.odyssey.vchan." + std::to_string(port); }

std::string HostSocketPath(const std::string& socket_dir, int domid, int port) {
  return socket_dir + "/vchan." + std::to_string(domid) + ".0." + std::to_string(port) + ".sock";
}

std::vector<int> DomainPorts() {
  std::vector<int> ports{kControlPort};
  for (int i = 0; i < kDataPortCount; ++i) ports.push_back(kFirstDataPort + i);
  return ports;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string RandomUuid() {
  std::random_device rd;
  unsigned char b[16];
  for (auto& x : b) x = static_cast<unsigned char>(rd());
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);
  char out[37];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

size_t ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  if (from.empty()) return 0;
  size_t count = 0;
  for (size_t pos = s->find(from); pos != std::string::npos; pos = s->find(from, pos + to.size())) {
    s->replace(pos, from.size(), to);
    ++count;
  }
  return count;
}

std::string BuildDomainXml(const DomainXmlParams& p) {
  auto e = XmlEscape;
  std::string x;
  x += "<domain type='" + e(p.virt_type) + "'>\n";
  x += "  <name>" + e(p.name) + "</name>\n";
  x += "  <uuid>" + e(p.uuid) + "</uuid>\n";
  x += "  <memory unit='KiB'>" + std::to_string(p.memory_bytes >> 10) + "</memory>\n";
  x += "  <vcpu>" + std::to_string(p.vcpus) + "</vcpu>\n";
  x += "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n";
  x += "    <kernel>" + e(p.kernel) + "</kernel>\n";
  x += "    <initrd>" + e(p.initrd) + "</initrd>\n";
  x += "    <cmdline>" + e(p.cmdline) + "</cmdline>\n  </os>\n";
  x += "  <features><acpi/></features>\n";
  if (p.virt_type == "kvm") x += "  <cpu mode='host-passthrough'/>\n";
  x += "  <clock offset='utc'/>\n";
  x += "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n";
  x += "  <on_crash>destroy</on_crash>\n";
  x += "  <devices>\n";
  x += "    <emulator>" + e(p.emulator) + "</emulator>\n";
  if (!p.disk.empty()) {
    x += "    <disk type='file' device='disk'>\n";
    x += "      <driver name='qemu' type='qcow2'/>\n";
    x += "      <source file='" + e(p.disk) + "'/>\n";
    x += "      <target dev='vda' bus='virtio'/>\n    </disk>\n";
  }
  x += "    <controller type='usb' model='none'/>\n";
  x += "    <controller type='virtio-serial' index='0'/>\n";
  x += "    <serial type='file'>\n      <source path='" + e(p.console_log) + "'/>\n";
  x += "      <target port='0'/>\n    </serial>\n";
  for (int port : DomainPorts()) {
    x += "    <channel type='unix'>\n";
    x += "      <source mode='bind' path='" + e(HostSocketPath(p.socket_dir, p.domid, port)) + "'/>\n";
    x += "      <target type='virtio' name='" + GuestPortName(port) + "'/>\n    </channel>\n";
  }
  x += "    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n";
  x += "    <memballoon model='none'/>\n";
  x += "  </devices>\n</domain>\n";
  return WithQemuExtras(std::move(x), false);
}

std::string WithQemuExtras(std::string xml, bool incoming_defer) {
  const std::string ns = "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'";
  if (xml.find("xmlns:qemu=") == std::string::npos) {
    size_t open = xml.find("<domain ");
    if (open != std::string::npos) xml.insert(open + 8, ns + " ");
  }
  std::string extra;
  if (xml.find("<qemu:capabilities>") == std::string::npos) {
    extra += "  <qemu:capabilities>\n    <qemu:del capability='cpu-unavailable-features'/>\n"
             "  </qemu:capabilities>\n";
  }
  if (incoming_defer && xml.find("<qemu:arg value='-incoming'/>") == std::string::npos) {
    extra += "  <qemu:commandline>\n    <qemu:arg value='-incoming'/>\n    <qemu:arg value='defer'/>\n"
             "  </qemu:commandline>\n";
  }
  size_t close = xml.rfind("</domain>");
  if (close != std::string::npos) xml.insert(close, extra);
  return xml;
}

}  // namespace odyssey::hal::libvirt
