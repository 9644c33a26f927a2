// Socket vchan against a raw socketpair, in one run: 64 KiB write throughput and 1-byte
// ping-pong latency. The peer is a thread in the same process. After the table it prints
// vchan/raw ratios against the targets (>= 80 % throughput, <= 1.5x latency).
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "hal/vchan/vchan.h"

namespace odyssey::vchan {
namespace {

constexpr size_t kChunk = 64 * 1024;

// A connected vchan pair in a private socket directory.
class VchanPair {
 public:
  VchanPair() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vchan-bench-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    dir_ = tmpl;
    Options so;
    so.backend = Backend::kSocket;
    so.socket_dir = dir_;
    so.own_domain = 0;
    Options co = so;
    co.own_domain = 1;
    auto s = Vchan::Server(1, 600, so);
    if (!s.ok()) return;
    auto c = Vchan::Client(0, 600, co);
    if (!c.ok()) return;
    server = std::move(*s);
    client = std::move(*c);
  }
  ~VchanPair() {
    server.reset();
    client.reset();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return server && client; }

  VchanPtr server;
  VchanPtr client;

 private:
  std::string dir_;
};

void RawThroughput(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  UniqueFd writer(sv[0]), reader(sv[1]);
  std::thread drain([fd = reader.get()] {
    std::vector<char> buf(kChunk);
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
  });
  std::vector<char> chunk(kChunk, 'r');
  for (auto _ : state) {
    const char* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      ssize_t n = ::write(writer.get(), p, left);
      if (n <= 0) break;
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  ::shutdown(writer.get(), SHUT_WR);
  drain.join();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
}

// use_send: all-or-nothing Send(); otherwise partial Write() in a loop.
void VchanThroughput(benchmark::State& state, bool use_send) {
  VchanPair pair;
  if (!pair.ok()) {
    state.SkipWithError("vchan pair failed");
    return;
  }
  std::thread drain([&] {
    std::vector<char> buf(kChunk);
    while (pair.server->Read(buf.data(), buf.size()).ok()) {
    }
  });
  std::vector<char> chunk(kChunk, 'v');
  for (auto _ : state) {
    if (use_send) {
      if (!pair.client->Send(chunk.data(), chunk.size()).ok()) break;
      continue;
    }
    const char* p = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      auto n = pair.client->Write(p, left);
      if (!n.ok()) break;
      p += *n;
      left -= *n;
    }
  }
  pair.client->Close();
  drain.join();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
}

void RawPingPong(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  UniqueFd a(sv[0]), b(sv[1]);
  std::thread echo([fd = b.get()] {
    char c;
    while (::read(fd, &c, 1) == 1 && ::write(fd, &c, 1) == 1) {
    }
  });
  char c = 'p';
  for (auto _ : state) {
    if (::write(a.get(), &c, 1) != 1 || ::read(a.get(), &c, 1) != 1) break;
  }
  ::shutdown(a.get(), SHUT_RDWR);
  echo.join();
}

void VchanPingPong(benchmark::State& state) {
  VchanPair pair;
  if (!pair.ok()) {
    state.SkipWithError("vchan pair failed");
    return;
  }
  std::thread echo([&] {
    char c;
    while (pair.server->Recv(&c, 1).ok() && pair.server->Send(&c, 1).ok()) {
    }
  });
  char c = 'p';
  for (auto _ : state) {
    if (!pair.client->Send(&c, 1).ok() || !pair.client->Recv(&c, 1).ok()) break;
  }
  pair.client->Close();
  echo.join();
}

BENCHMARK(RawThroughput)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(VchanThroughput, send, true)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(VchanThroughput, write, false)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(RawPingPong)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(VchanPingPong)->UseRealTime()->Unit(benchmark::kMicrosecond);

// Console output plus the vchan/raw ratios once every benchmark has run.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      // Plain runs, or the median when --benchmark_repetitions is used.
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      time_[r.run_name.function_name + r.run_name.args] = r.GetAdjustedRealTime();
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    auto ratio = [&](const char* what, const std::string& vchan, const std::string& raw,
                     bool throughput, double target) {
      if (!time_.count(vchan) || !time_.count(raw) || time_[vchan] <= 0) return;
      char line[200];
      if (throughput) {
        double pct = 100.0 * time_[raw] / time_[vchan];
        std::snprintf(line, sizeof line, "%-40s %6.1f %% of raw   (target >= %.0f %%)  %s\n",
                      what, pct, target, pct >= target ? "met" : "MISSED");
      } else {
        double x = time_[vchan] / time_[raw];
        std::snprintf(line, sizeof line, "%-40s %6.2fx raw      (target <= %.1fx)   %s\n", what,
                      x, target, x <= target ? "met" : "MISSED");
      }
      out << line;
    };
    out << "\nvchan vs raw socketpair, same run:\n";
    ratio("throughput, 64 KiB Send()", "VchanThroughput/send", "RawThroughput", true, 80);
    ratio("throughput, 64 KiB Write() (partial)", "VchanThroughput/write", "RawThroughput", true,
          80);
    ratio("latency, 1-byte ping-pong", "VchanPingPong", "RawPingPong", false, 1.5);
    out.flush();
  }

 private:
  std::map<std::string, double> time_;
};

}  // namespace
}  // namespace odyssey::vchan

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  odyssey::vchan::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
