// native_sandbox_probe: stands in for qrexec-agent inside a native domain in tests and
// benchmarks. Listens where the agent would (vchan port 512 of the socket backend), writes
// "hello\n" to each connection, then answers line commands:
//   probe        -> key=value lines describing what the sandbox lets it see and do, "end"
//   alloc MIB    -> touches MIB MiB of memory, "allocated"
//   fork N       -> tries N forks (children wait), "forked K"
//   exit CODE    -> exits (the domain ends with it)
//   read PATH    -> "content:<first line>" or "error:<errno name>"
//   touch PATH   -> "OK" or the errno name (the file stays)
// Built without sanitizers: it runs under the domain's seccomp filter (no ptrace for LSan).
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string ErrName(int err) {
  switch (err) {
    case 0: return "OK";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EROFS: return "EROFS";
    case ENOENT: return "ENOENT";
    case ENOSYS: return "ENOSYS";
    case EINVAL: return "EINVAL";
    case ENETUNREACH: return "ENETUNREACH";
    case EBADF: return "EBADF";
    case EFAULT: return "EFAULT";
    default: return "E" + std::to_string(err);
  }
}

std::string ReadFile(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string StatusField(const std::string& status, const std::string& key) {
  std::istringstream in(status);
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, key.size() + 1, key + ":") == 0) {
      std::string v = line.substr(key.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "?";
}

std::string TryWrite(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrName(errno);
  ::close(fd);
  ::unlink(path.c_str());
  return "OK";
}

std::string ErrnoOf(long rc) { return rc == 0 ? std::string("OK") : ErrName(errno); }

void Probe(std::string* out) {
  auto put = [&](const std::string& k, const std::string& v) { *out += k + "=" + v + "\n"; };
  put("uid", std::to_string(::getuid()));
  put("gid", std::to_string(::getgid()));
  put("pid", std::to_string(::getpid()));
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  put("hostname", host);
  int procs = 0;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) procs += (e->d_name[0] >= '0' && e->d_name[0] <= '9');
    ::closedir(d);
  }
  put("procs", std::to_string(procs));
  std::string status = ReadFile("/proc/self/status");
  for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"}) {
    put(k, StatusField(status, k));
  }
  std::string uid_map = ReadFile("/proc/self/uid_map");
  std::istringstream um(uid_map);
  std::string inside, outside, count;
  um >> inside >> outside >> count;
  put("uid_map", inside + ":" + outside + ":" + count);
  // Interfaces: names in /proc/net/dev after the two header lines.
  std::istringstream dev(ReadFile("/proc/net/dev"));
  std::string line, ifaces;
  for (int i = 0; std::getline(dev, line); ++i) {
    if (i < 2) continue;
    std::string name = line.substr(0, line.find(':'));
    name.erase(0, name.find_first_not_of(' '));
    ifaces += (ifaces.empty() ? "" : ",") + name;
  }
  put("ifaces", ifaces);
  // Loopback works: a TCP listener on 127.0.0.1 accepts a connection.
  {
    int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    std::string r = "ERR";
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 && ::listen(l, 1) == 0 &&
        ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
      int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      r = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? "OK" : ErrName(errno);
      ::close(c);
    } else {
      r = ErrName(errno);
    }
    ::close(l);
    put("loopback", r);
  }
  {
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(80);
    ::inet_pton(AF_INET, "1.1.1.1", &a.sin_addr);
    put("connect_external", ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 ? "OK" : ErrName(errno));
    ::close(c);
  }
  for (const char* p : {"/probe", "/etc/probe", "/usr/probe", "/usr/bin/probe", "/odyssey/probe",
                        "/proc/sys/kernel/probe", "/tmp/probe", "/home/user/probe"}) {
    put(std::string("write:") + p, TryWrite(p));
  }
  put("write:/etc/passwd", TryWrite("/etc/passwd"));
  put("sys:mount", ErrnoOf(::mount("none", "/tmp", "tmpfs", 0, nullptr)));
  put("sys:umount", ErrnoOf(::umount2("/proc", MNT_DETACH)));
  put("sys:ptrace", ErrnoOf(::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr)));
  put("sys:unshare_user", ErrnoOf(::unshare(CLONE_NEWUSER)));
  put("sys:unshare_net", ErrnoOf(::unshare(CLONE_NEWNET)));
  put("sys:bpf", ErrnoOf(::syscall(SYS_bpf, BPF_PROG_LOAD, nullptr, 0)));
  put("sys:keyctl", ErrnoOf(::syscall(SYS_keyctl, 0, 0, 0, 0, 0)));
  put("sys:perf_event_open", ErrnoOf(::syscall(SYS_perf_event_open, nullptr, 0, -1, -1, 0)));
  put("sys:finit_module", ErrnoOf(::syscall(SYS_finit_module, -1, "", 0)));
  put("sys:kexec_load", ErrnoOf(::syscall(SYS_kexec_load, 0, 0, nullptr, 0)));
  put("sys:setuid0", ErrnoOf(::setuid(0)));
  put("sys:chroot", ErrnoOf(::chroot("/tmp")));
  put("devnull", TryWrite("/dev/null"));
  std::string cg = ReadFile("/proc/self/cgroup");
  bool all_root = true;
  std::istringstream cgs(cg);
  while (std::getline(cgs, line)) {
    if (!line.empty() && line.substr(line.rfind(':') + 1) != "/") all_root = false;
  }
  put("cgroup_ns_root", all_root ? "yes" : "no");
}

void Reply(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

void Serve(int fd) {
  Reply(fd, "hello\n");
  std::string buf;
  char chunk[256];
  for (;;) {
    size_t nl;
    while ((nl = buf.find('\n')) == std::string::npos) {
      ssize_t n = ::read(fd, chunk, sizeof(chunk));
      if (n <= 0) return;
      buf.append(chunk, static_cast<size_t>(n));
    }
    std::string cmd = buf.substr(0, nl);
    buf.erase(0, nl + 1);
    std::istringstream in(cmd);
    std::string verb;
    long arg = 0;
    in >> verb >> arg;
    if (verb == "probe") {
      std::string out;
      Probe(&out);
      Reply(fd, out + "end\n");
    } else if (verb == "alloc") {
      size_t bytes = static_cast<size_t>(arg) << 20;
      char* p = static_cast<char*>(std::malloc(bytes));
      for (size_t i = 0; p && i < bytes; i += 4096) p[i] = 1;
      Reply(fd, p ? "allocated\n" : "malloc failed\n");
      std::free(p);
    } else if (verb == "fork") {
      std::vector<pid_t> kids;
      for (long i = 0; i < arg; ++i) {
        pid_t pid = ::fork();
        if (pid == 0) {
          ::pause();
          ::_exit(0);
        }
        if (pid < 0) break;
        kids.push_back(pid);
      }
      for (pid_t k : kids) ::kill(k, SIGKILL);
      for (pid_t k : kids) ::waitpid(k, nullptr, 0);
      Reply(fd, "forked " + std::to_string(kids.size()) + "\n");
    } else if (verb == "read" || verb == "touch") {
      std::string path = cmd.substr(cmd.find(' ') + 1);
      if (verb == "touch") {
        int f = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        Reply(fd, (f < 0 ? ErrName(errno) : std::string("OK")) + "\n");
        if (f >= 0) ::close(f);
      } else {
        std::ifstream file(path);
        std::string first;
        if (!file) {
          Reply(fd, "error:" + ErrName(errno) + "\n");
        } else {
          std::getline(file, first);
          Reply(fd, "content:" + first + "\n");
        }
      }
    } else if (verb == "exit") {
      ::_exit(static_cast<int>(arg));
    } else {
      Reply(fd, "unknown\n");
    }
  }
}

}  // namespace

int main() {
  const char* dir = std::getenv("VCHAN_SOCKET_DIR");
  const char* dom = std::getenv("VCHAN_DOMAIN");
  if (!dir || !dom) return 2;
  std::string path = std::string(dir) + "/vchan." + dom + ".0.512.sock";
  int l = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ::unlink(path.c_str());
  // Bind under a temporary name and rename, so the socket appears only once it listens.
  std::string tmp = path + ".tmp";
  sockaddr_un taddr = addr;
  std::snprintf(taddr.sun_path, sizeof(taddr.sun_path), "%s", tmp.c_str());
  ::unlink(tmp.c_str());
  if (::bind(l, reinterpret_cast<sockaddr*>(&taddr), sizeof(taddr)) != 0 || ::listen(l, 8) != 0 ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    return 3;
  }
  for (;;) {
    int c = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) {
      if (errno == EINTR) continue;
      return 4;
    }
    Serve(c);
    ::close(c);
  }
}
