// Evaluation latency of a 10-rule and a 1000-rule policy in one run, and their ratio.
// The matching rule is the last one (worst case: every rule is looked at), plus a
// no-match request (the implicit deny at the end).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>

#include "qrexec/policy/policy.h"
#include "qrexec/policy/testing/fixture_catalog.h"

using namespace odyssey::qrexec::policy;

namespace {

DomainCatalogPtr Catalog() {
  static DomainCatalogPtr catalog = ParseJsonCatalog(testing::kFixtureCatalogJson, "fixture").value();
  return catalog;
}

// n rules of varied shapes; rule n-1 is the one the benchmark's request matches.
PolicyPtr MakePolicy(int n) {
  static const char* sources[] = {"work", "@tag:personal", "@anyvm", "@type:TemplateVM", "@dispvm:default-dvm"};
  static const char* targets[] = {"vault", "@dispvm", "@tag:trusted", "@default", "@anyvm"};
  std::string text = "# generated\n";
  for (int i = 0; i < n - 1; ++i) {
    text += "qubes.Svc" + std::to_string(i) + " * " + sources[i % 5] + " " + targets[(i / 5) % 5] +
            (i % 3 ? " allow\n" : " deny\n");
  }
  text += "qubes.Target * work vault allow\n";
  auto policy = Policy::FromString(text, "bench.policy", "/nonexistent");
  if (!policy->ok() || static_cast<int>(policy->rule_count()) != n) {
    std::fprintf(stderr, "bench policy broken: %s\n", policy->error().c_str());
    std::abort();
  }
  return policy;
}

void BM_EvaluateLastRule(benchmark::State& state) {
  auto policy = MakePolicy(static_cast<int>(state.range(0)));
  auto catalog = Catalog();
  Request request{"work", "vault", "qubes.Target+x"};
  for (auto _ : state) {
    Decision d = policy->Evaluate(request, *catalog);
    benchmark::DoNotOptimize(d);
    if (d.action != Action::kAllow) state.SkipWithError("expected allow");
  }
}
BENCHMARK(BM_EvaluateLastRule)->Arg(10)->Arg(1000);

void BM_EvaluateNoMatch(benchmark::State& state) {
  auto policy = MakePolicy(static_cast<int>(state.range(0)));
  auto catalog = Catalog();
  Request request{"personal", "@dispvm", "qubes.Other+"};
  for (auto _ : state) {
    Decision d = policy->Evaluate(request, *catalog);
    benchmark::DoNotOptimize(d);
  }
}
BENCHMARK(BM_EvaluateNoMatch)->Arg(10)->Arg(1000);

// Console output as usual, plus each run's mean time per iteration for the ratios.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      if (run.run_type == Run::RT_Iteration && run.iterations > 0) {
        real_[run.benchmark_name()] = run.GetAdjustedRealTime();
        cpu_[run.benchmark_name()] = run.GetAdjustedCPUTime();
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void PrintRatios() const {
    for (const char* name : {"BM_EvaluateLastRule", "BM_EvaluateNoMatch"}) {
      Print(name, "cpu", cpu_);
      Print(name, "real", real_);
    }
  }

 private:
  static void Print(const char* name, const char* kind, const std::map<std::string, double>& times) {
    auto small = times.find(std::string(name) + "/10");
    auto large = times.find(std::string(name) + "/1000");
    if (small == times.end() || large == times.end() || small->second <= 0) return;
    std::printf("%s (%s time): 10 rules %.0f ns, 1000 rules %.0f ns, ratio 1000/10 = %.1f\n", name, kind,
                small->second, large->second, large->second / small->second);
  }

  std::map<std::string, double> real_;
  std::map<std::string, double> cpu_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
