#!/usr/bin/env bash
# Runs the engine benchmarks in one go (Release build, no sanitizers) and prints the
# side-by-side table: pool hit / CLI / cold / sustained against bubblewrap's cold start.
# Usage: bench/engine/compare.sh [extra benchmark args]   (ODYSSEY_BENCH_BUILD=dir to reuse a build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${ODYSSEY_BENCH_BUILD:-build/bench-release}
jobs=${ODYSSEY_BENCH_JOBS:-2}
# An existing build dir keeps its settings (it must be Release with ODYSSEY_BUILD_BENCH=ON).
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DODYSSEY_BUILD_TESTS=OFF \
    -DODYSSEY_BUILD_BENCH=ON >/dev/null
fi
targets=(engine_bench odysseyd odyssey odyssey-sandbox-stub)
# The HAL backend (the default as root) also needs the agent and the zygote, when built here.
for t in qrexec-agent odyssey-native-zygote; do
  if ninja -C "$build" -t targets all 2>/dev/null | grep -q "^$t:"; then targets+=("$t"); fi
done
cmake --build "$build" -j "$jobs" --target "${targets[@]}" >/dev/null
out=$(mktemp /tmp/odyssey-bench-XXXXXX.json)
err=$(mktemp /tmp/odyssey-bench-XXXXXX.log)
trap 'rm -f "$out" "$err"' EXIT
"$build/bench/engine/engine_bench" --benchmark_out="$out" --benchmark_out_format=json "$@" \
  2> >(tee "$err" >&2) >&2
backend=$(sed -n 's/^engine_bench: odysseyd on backend //p' "$err" | head -n1)
python3 - "$out" "${backend:-?}" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
rows = {b["name"].split("/")[0]: b for b in data["benchmarks"] if "error_occurred" not in b}
def p(name, key="p50_ms"):
    b = rows.get(name)
    return b.get(key) if b else None
bwrap = p("BM_Baseline_BwrapTrue")
print()
print(f"{'scenario':44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'vs bwrap p50':>13}")
for name, label in [
    ("BM_PoolHit_EchoFirstByte", "pool hit: request -> first byte of echo"),
    ("BM_PoolHit_TrueExitCode", "pool hit: request -> exit code of true"),
    ("BM_PoolHit_CliTrue", "pool hit: `odyssey run -- true` (whole CLI)"),
    ("BM_PoolMiss_ColdTrue", "pool miss (cold): request -> exit of true"),
    ("BM_Baseline_BwrapTrue", "bwrap --unshare-all --ro-bind / / true"),
]:
    v = p(name)
    if v is None:
        print(f"{label:44} {'n/a':>8}")
        continue
    ratio = f"{bwrap / v:.1f}x faster" if bwrap and name != "BM_Baseline_BwrapTrue" else ""
    print(f"{label:44} {v:8.2f} {p(name,'p90_ms'):8.2f} {p(name,'p99_ms'):8.2f} {ratio:>13}")
t = rows.get("BM_PoolHit_TrueExitCode")
if t and "d_call_ms" in t:
    print(f"{'  odysseyd breakdown of the hit (medians)':44} take {t['d_take_ms']:.2f}, setup "
          f"{t['d_setup_ms']:.2f}, call {t['d_call_ms']:.2f} ms")
s = rows.get("BM_Sustained_DisposablesPerSecond")
if s:
    print(f"{'sustained, 2 clients, pool refilling':44} {s['items_per_second']:8.0f} disposables/s "
          f"(hits {s.get('pool_hits', 0):.0f}, misses {s.get('pool_misses', 0):.0f})")
ctx = data.get("context", {})
load = ", ".join(f"{x:.1f}" for x in ctx.get("load_avg", []))
print(f"\nodysseyd backend: {sys.argv[2]}; host: {ctx.get('num_cpus')} CPUs, load average {load} "
      f"(figures from a loaded machine are not comparable across runs; bwrap is the yardstick)")
PY
