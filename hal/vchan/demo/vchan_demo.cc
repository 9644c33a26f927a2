// vchan-demo: forks a vchan server process and a client process, streams N MiB from the
// client to the server and times ping-pong round trips, then does the same over a raw
// socketpair in the same run, and prints both side by side.
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan {
namespace {

using Clock = std::chrono::steady_clock;

struct Config {
  uint64_t mib = 1024;
  int round_trips = 10000;
  size_t chunk = 64 * 1024;
  std::string socket_dir;  // empty: a private temporary directory
  int port = 513;
  int repeat = 3;          // alternating raw/vchan runs; best throughput, median RTTs
};

// What the measuring (client) process reports back through a pipe.
struct Figures {
  double seconds = 0;        // bulk transfer, first byte sent to last byte acknowledged
  double rtt_p50_us = 0;
  double rtt_p99_us = 0;
  int ok = 0;
};

// One side of a byte stream, so the same measuring code runs on vchan and on a raw fd.
struct Endpoint {
  std::function<bool(const void*, size_t)> send;
  std::function<bool(void*, size_t)> recv;
  std::function<bool(void*, size_t, size_t*)> read_some;
};

Endpoint FromVchan(Vchan& v) {
  return {[&v](const void* p, size_t n) { return v.Send(p, n).ok(); },
          [&v](void* p, size_t n) { return v.Recv(p, n).ok(); },
          [&v](void* p, size_t n, size_t* got) {
            auto r = v.Read(p, n);
            if (!r.ok()) return false;
            *got = *r;
            return true;
          }};
}

Endpoint FromFd(int fd) {
  auto send_all = [fd](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      c += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  auto recv_all = [fd](void* p, size_t n) {
    char* c = static_cast<char*>(p);
    while (n > 0) {
      ssize_t r = ::recv(fd, c, n, MSG_WAITALL);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      c += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  };
  auto read_some = [fd](void* p, size_t n, size_t* got) {
    for (;;) {
      ssize_t r = ::read(fd, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      *got = static_cast<size_t>(r);
      return true;
    }
  };
  return {send_all, recv_all, read_some};
}

// Receiving side: drains the bulk bytes, acknowledges, then echoes round trips.
int Sink(Endpoint e, const Config& cfg) {
  const uint64_t total = cfg.mib << 20;
  std::vector<char> buf(cfg.chunk);
  uint64_t got = 0;
  while (got < total) {
    size_t n = 0;
    if (!e.read_some(buf.data(), std::min<uint64_t>(buf.size(), total - got), &n)) return 1;
    got += n;
  }
  char b = 'a';
  if (!e.send(&b, 1)) return 2;
  for (int i = 0; i < cfg.round_trips; ++i) {
    if (!e.recv(&b, 1) || !e.send(&b, 1)) return 3;
  }
  return 0;
}

// Measuring side: streams the bulk bytes, waits for the ack, then times round trips.
Figures Source(Endpoint e, const Config& cfg) {
  Figures f;
  const uint64_t total = cfg.mib << 20;
  std::vector<char> buf(cfg.chunk, 'v');
  auto start = Clock::now();
  for (uint64_t sent = 0; sent < total;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - sent));
    if (!e.send(buf.data(), n)) return f;
    sent += n;
  }
  char b;
  if (!e.recv(&b, 1)) return f;
  f.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> rtt(static_cast<size_t>(cfg.round_trips));
  for (auto& r : rtt) {
    auto t0 = Clock::now();
    if (!e.send(&b, 1) || !e.recv(&b, 1)) return f;
    r = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
  }
  if (!rtt.empty()) {
    std::sort(rtt.begin(), rtt.end());
    f.rtt_p50_us = rtt[rtt.size() / 2];
    f.rtt_p99_us = rtt[std::min(rtt.size() - 1, rtt.size() * 99 / 100)];
  }
  f.ok = 1;
  return f;
}

pid_t Fork(const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(fn());
  return pid;
}

bool Reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Runs sink and source in two forked processes; source's figures come back by pipe.
Figures RunPair(const std::function<int()>& sink, const std::function<Figures()>& source) {
  int p[2];
  if (::pipe(p) != 0) return {};
  pid_t a = Fork(sink);
  pid_t b = Fork([&] {
    ::close(p[0]);
    Figures f = source();
    return ::write(p[1], &f, sizeof f) == static_cast<ssize_t>(sizeof f) && f.ok ? 0 : 1;
  });
  ::close(p[1]);
  Figures f;
  if (::read(p[0], &f, sizeof f) != static_cast<ssize_t>(sizeof f)) f = {};
  ::close(p[0]);
  bool ok_a = Reap(a), ok_b = Reap(b);
  if (!ok_a || !ok_b) f.ok = 0;
  return f;
}

// Best throughput (least disturbed run) and median round-trip figures of several runs.
Figures Combine(std::vector<Figures> runs) {
  Figures out;
  std::vector<double> p50, p99;
  for (const Figures& f : runs) {
    if (!f.ok) return {};
    if (out.seconds == 0 || f.seconds < out.seconds) out.seconds = f.seconds;
    p50.push_back(f.rtt_p50_us);
    p99.push_back(f.rtt_p99_us);
  }
  if (runs.empty()) return {};
  std::sort(p50.begin(), p50.end());
  std::sort(p99.begin(), p99.end());
  out.rtt_p50_us = p50[p50.size() / 2];
  out.rtt_p99_us = p99[p99.size() / 2];
  out.ok = 1;
  return out;
}

Figures RunRaw(const Config& cfg) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return {};
  UniqueFd a(sv[0]), b(sv[1]);
  return RunPair([&] { b.reset(); return Sink(FromFd(a.get()), cfg); },
                 [&] { a.reset(); return Source(FromFd(b.get()), cfg); });
}

Figures RunVchan(const Config& cfg, const std::string& dir) {
  constexpr int kServerDom = 0, kClientDom = 1;
  Options so;
  so.backend = Backend::kSocket;
  so.socket_dir = dir;
  so.own_domain = kServerDom;
  Options co = so;
  co.own_domain = kClientDom;
  co.connect_timeout = std::chrono::seconds(30);
  return RunPair(
      [&] {
        auto s = Vchan::Server(kClientDom, cfg.port, so);
        if (!s.ok()) {
          std::fprintf(stderr, "vchan-demo: server: %s\n", s.error().message.c_str());
          return 1;
        }
        return Sink(FromVchan(**s), cfg);
      },
      [&] {
        auto c = Vchan::Client(kServerDom, cfg.port, co);
        if (!c.ok()) {
          std::fprintf(stderr, "vchan-demo: client: %s\n", c.error().message.c_str());
          return Figures{};
        }
        return Source(FromVchan(**c), cfg);
      });
}

int Main(int argc, char** argv) {
  Config cfg;
  CLI::App app{
      "vchan-demo: stream data and ping-pong between two processes over the socket vchan,\n"
      "beside a raw socketpair measured in the same run."};
  app.add_option("--mib", cfg.mib, "MiB to stream from client to server")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 20));
  app.add_option("--round-trips", cfg.round_trips, "1-byte ping-pong round trips to time")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  app.add_option("--chunk", cfg.chunk, "bytes per write while streaming")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{64} << 20));
  app.add_option("--socket-dir", cfg.socket_dir,
                 "directory for the vchan socket (default: a fresh temporary directory)");
  app.add_option("--port", cfg.port, "vchan port")->capture_default_str()->check(CLI::Range(0, 65535));
  app.add_option("--repeat", cfg.repeat,
                 "runs of each, alternating raw and vchan (best throughput, median RTTs)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  CLI11_PARSE(app, argc, argv);

  std::string dir = cfg.socket_dir;
  bool own_dir = false;
  if (dir.empty()) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vchan-demo-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("vchan-demo: mkdtemp");
      return 1;
    }
    dir = tmpl;
    own_dir = true;
  }

  std::printf(
      "vchan-demo: %llu MiB in %zu-byte writes, %d round trips, two processes each, "
      "%d alternating runs\n",
      static_cast<unsigned long long>(cfg.mib), cfg.chunk, cfg.round_trips, cfg.repeat);
  // Alternate the two so that a busy machine slows both alike.
  std::vector<Figures> raws, vcs;
  for (int i = 0; i < cfg.repeat; ++i) {
    raws.push_back(RunRaw(cfg));
    vcs.push_back(RunVchan(cfg, dir));
  }
  Figures raw = Combine(raws);
  Figures vc = Combine(vcs);
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  if (!raw.ok || !vc.ok) {
    std::fprintf(stderr, "vchan-demo: a run failed (raw %s, vchan %s)\n",
                 raw.ok ? "ok" : "FAILED", vc.ok ? "ok" : "FAILED");
    return 1;
  }
  const double bytes = static_cast<double>(cfg.mib << 20);
  auto gib_s = [&](const Figures& f) { return bytes / f.seconds / (1 << 30); };
  std::printf("%-16s %14s %12s %12s\n", "", "throughput", "RTT p50", "RTT p99");
  std::printf("%-16s %10.2f GiB/s %9.1f us %9.1f us\n", "raw socketpair", gib_s(raw),
              raw.rtt_p50_us, raw.rtt_p99_us);
  std::printf("%-16s %10.2f GiB/s %9.1f us %9.1f us\n", "socket vchan", gib_s(vc), vc.rtt_p50_us,
              vc.rtt_p99_us);
  std::printf("%-16s %12.0f %% %11.2fx %11.2fx\n", "vchan vs raw", 100.0 * gib_s(vc) / gib_s(raw),
              vc.rtt_p50_us / raw.rtt_p50_us, vc.rtt_p99_us / raw.rtt_p99_us);
  return 0;
}

}  // namespace
}  // namespace odyssey::vchan

int main(int argc, char** argv) { return odyssey::vchan::Main(argc, argv); }
