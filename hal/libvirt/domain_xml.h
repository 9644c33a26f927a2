// Domain XML for Odyssey's VMs: generated from a template plus the parameters that make one
// domain unique (name, UUID, socket paths, overlay). Pure string building; never talks to
// libvirt. Every value put into the XML is escaped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace odyssey::hal::libvirt {

// vchan ports exposed as virtio-serial channels: qrexec control plus a few data ports.
inline constexpr int kControlPort = 512;
inline constexpr int kFirstDataPort = 513;
inline constexpr int kDataPortCount = 4;

struct DomainXmlParams {
  std::string name;
  std::string uuid;
  std::string virt_type = "qemu";  // "kvm" or "qemu" (TCG)
  uint64_t memory_bytes = 256ull << 20;
  unsigned vcpus = 1;
  std::string kernel, initrd, cmdline;
  std::string disk;               // qcow2 overlay, empty for none
  std::string console_log;        // serial console output file
  std::string socket_dir;         // vchan sockets: <socket_dir>/vchan.<domid>.0.<port>.sock
  int domid = 1;
  std::string emulator = "/usr/bin/qemu-system-x86_64";
};

// The guest-side name of a vchan port: org.odyssey.vchan.<port>.
std::string GuestPortName(int port);
// Host socket of a port in the socket-vchan scheme (the guest is the vchan server).
std::string HostSocketPath(const std::string& socket_dir, int domid, int port);
// Every port the domain gets, control first.
std::vector<int> DomainPorts();
std::string BuildDomainXml(const DomainXmlParams& p);
// xml (a whole <domain> document, ours or as libvirt saved it) with Odyssey's QEMU-specific
// additions, each added only if missing:
//  - <qemu:capabilities><qemu:del capability='cpu-unavailable-features'/>: libvirt 9.0 then
//    reads the started guest CPU with two qom-get calls (feature-words, filtered-features)
//    instead of one qom-get per CPU property (~400 monitor round trips with QEMU 7.2);
//  - with incoming_defer, <qemu:commandline> -incoming defer: QEMU waits for a migration
//    stream given later on the monitor (how a clone is loaded from a template snapshot).
std::string WithQemuExtras(std::string xml, bool incoming_defer);
// XML-escapes &, <, >, ' and ".
std::string XmlEscape(const std::string& s);
// A random RFC 4122 version-4 UUID.
std::string RandomUuid();
// Replaces every occurrence of from by to; returns how many were replaced.
size_t ReplaceAll(std::string* s, const std::string& from, const std::string& to);

}  // namespace odyssey::hal::libvirt
