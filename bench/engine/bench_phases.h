// DaemonPhases: collects the daemon's own breakdown of each call (the exit event's
// phases_ms: loop, handoff, take, setup, resume, agent, ...) and reports each phase's median
// as a benchmark counter d_<phase>_ms. Shared by engine_bench and engine_vm_bench.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace odyssey::engine::bench {

struct DaemonPhases {
  std::map<std::string, std::vector<double>> ms;
  void Add(const nlohmann::json& exit) {
    if (!exit.contains("phases_ms") || !exit["phases_ms"].is_object()) return;
    for (auto& [k, v] : exit["phases_ms"].items())
      if (v.is_number()) ms[k].push_back(v.get<double>());
  }
  void Report(benchmark::State& state) {
    for (auto& [k, v] : ms) {
      if (v.empty()) continue;
      std::sort(v.begin(), v.end());
      state.counters["d_" + k + "_ms"] = v[v.size() / 2];
    }
  }
};

}  // namespace odyssey::engine::bench
