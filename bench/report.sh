#!/usr/bin/env bash
# Startup-latency report: native pool hit / native cold / bubblewrap cold (baseline) / QEMU pool
# hit / QEMU restore / QEMU cold boot, in one run; prints p50/p90/p99 and the ratio to bwrap,
# writes DIR/results.csv, DIR/report.md and DIR/latency.png; the full mode adds scaling (native
# pool 1/4/16/64, 1/2/4/8 clients; 1/4/8 VM clones) to report.md and DIR/scaling.csv.
# See bench/README.md (time budget of the full run there).
# Usage: bench/report.sh [--quick] [--out DIR] [--build DIR]
#   --build DIR  use the binaries of an existing build (not rebuilt; any build type, sanitized
#                binaries work); default: configure and build Release in build/bench-rel.
#   --quick      CI mode: few iterations, no QEMU cold boot; fails only when a benchmark crashes
#                or reports an error or an output file is missing, never on a timing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=0 out="" build=""
cmdline="bench/report.sh${*:+ $*}"
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --build) build=$2; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "report.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "$build" ]]; then
  build="$root/build/bench-rel"
  echo "[build] Release in $build"
  if [[ ! -f "$build/build.ninja" ]]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DODYSSEY_BUILD_BENCH=ON >/dev/null
  fi
  targets=(engine_bench vm_bench odysseyd odyssey odyssey-sandbox-stub)
  for t in qrexec-agent odyssey-native-zygote; do
    if ninja -C "$build" -t targets all 2>/dev/null | grep -q "^$t:"; then targets+=("$t"); fi
  done
  cmake --build "$build" -j "${ODYSSEY_BENCH_JOBS:-2}" --target "${targets[@]}" >/dev/null
fi
build=$(cd "$build" && pwd)
out=${out:-$build/bench-report}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/{results.csv,report.md,latency.png,latency.dat,scaling.csv}  # only this run's files
work=$(mktemp -d "${TMPDIR:-/tmp}/odyssey-report-XXXXXX")
trap 'rm -rf "$work"' EXIT
# Sanitized builds (CI): leaks are the tests' business; a bench run must not fail on them.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
export TMPDIR="$work"  # the binaries' own hermetic dirs go below this run's directory

engine="$build/bench/engine/engine_bench" vm="$build/bench/vm/vm_bench"
for b in "$engine" "$vm"; do
  [[ -x "$b" ]] || { echo "report.sh: $b is missing (build with -DODYSSEY_BUILD_BENCH=ON)" >&2; exit 1; }
done
if ((quick)); then eng_iters=15 vm_iters=1; else eng_iters=0 vm_iters=0; fi
steps=8 failed=0 started=$(date +%s) load_start=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()  # key|label|json|benchmark|skip
step=0
progress() { step=$((step + 1)); printf '[%d/%d] %s … (%ss)\n' "$step" "$steps" "$1" "$(($(date +%s) - started))"; }

# $1 key, $2 label, $3 benchmark name (as in the JSON), $4 binary, $5 filter, $6 iteration cap
run_bench() {
  local json="$work/$1.json" log="$work/$1.log" rc=0
  progress "$2"
  ODYSSEY_BENCH_MAX_ITERATIONS=$6 "$4" --benchmark_filter="$5" --benchmark_out="$json" \
    --benchmark_out_format=json >"$log" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "report.sh: $(basename "$4") exited with status $rc on '$5'; its output:" >&2
    tail -n 40 "$log" >&2
    failed=1
  fi
  rows+=("$1|$2|$json|$3|")
}

run_bench native_hit "native pool hit (echo, 1st byte)" BM_PoolHit_EchoFirstByte "$engine" \
  '^BM_PoolHit_EchoFirstByte/' "$eng_iters"
backend=$(sed -n 's/^engine_bench: odysseyd on backend //p' "$work/native_hit.log" | head -n1)
run_bench native_cold "native cold (pool miss, true)" BM_PoolMiss_ColdTrue "$engine" \
  '^BM_PoolMiss_ColdTrue/' "$eng_iters"
run_bench bwrap_cold "bwrap cold (baseline, true)" BM_Baseline_BwrapTrue "$engine" \
  '^BM_Baseline_BwrapTrue/' "$eng_iters"

# QEMU: one vm_bench process (the template snapshot is prepared once).
vm_filter='^BM_PoolHit/0/|^BM_RestoreToHello/'
((quick)) || vm_filter+='|^BM_ColdBootToHello/'
vjson="$work/vm.json" vlog="$work/vm.log"
progress "QEMU pool hit, restore$( ((quick)) || echo ', cold boot') (vm_bench; minutes under TCG)"
rc=0
ODYSSEY_BENCH_MAX_ITERATIONS=$vm_iters "$vm" --benchmark_filter="$vm_filter" \
  --benchmark_out="$vjson" --benchmark_out_format=json >"$vlog" 2>&1 || rc=$?
if ((rc != 0)); then
  echo "report.sh: vm_bench exited with status $rc; its output:" >&2; tail -n 40 "$vlog" >&2; failed=1
fi
accel=$(sed -n 's/^vm_bench: accelerator //p' "$vlog" | head -n1)
rows+=("qemu_hit|QEMU pool hit (uname, 1st byte)|$vjson|BM_PoolHit/0|")
progress "QEMU restore (done in the same vm_bench run)"
rows+=("qemu_restore|QEMU restore (snapshot to HELLO)|$vjson|BM_RestoreToHello|")
progress "QEMU cold boot"
if ((quick)); then
  echo "      skipped: --quick (a TCG cold boot alone can exceed the CI budget)"
  rows+=("qemu_cold|QEMU cold boot (to HELLO)|||skipped: --quick")
else
  rows+=("qemu_cold|QEMU cold boot (to HELLO)|$vjson|BM_ColdBootToHello|")
fi

progress "scaling: pool hit and PSS by pool size (1/4/16/64), disposables/s by clients (1/2/4/8)"
sjson=""
if ((quick)); then
  echo "      skipped: --quick"
else
  sjson="$work/scaling.json" rc=0
  "$engine" --benchmark_filter='^BM_Scale_' --benchmark_out="$sjson" --benchmark_out_format=json \
    >"$work/scaling.log" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "report.sh: engine_bench (scaling) exited with status $rc; its output:" >&2
    tail -n 40 "$work/scaling.log" >&2; failed=1
  fi
fi

progress "VM clone scaling: pool hit, PSS/RSS with 1/4/8 paused clones (vm_bench; minutes under TCG)"
vsjson=""
if ((quick)); then
  echo "      skipped: --quick"
else
  vsjson="$work/vm_scaling.json" rc=0
  "$vm" --benchmark_filter='^BM_Scale_' --benchmark_out="$vsjson" --benchmark_out_format=json \
    >"$work/vm_scaling.log" 2>&1 || rc=$?
  if ((rc != 0)); then
    echo "report.sh: vm_bench (VM scaling) exited with status $rc; its output:" >&2
    tail -n 40 "$work/vm_scaling.log" >&2; failed=1
  fi
fi

model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
sanitize=$(sed -n 's/^ODYSSEY_SANITIZE:BOOL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
[[ "$sanitize" == ON ]] && build_type+=", ASan/UBSan"
python3 - "$work/meta.json" "$quick" "$cmdline" "$build" "${build_type:-?}" "${accel:-n/a (vm_bench did not run a VM)}" \
  "${backend:-?}" "$model" "$(uname -r)" "at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)" "$(nproc)" \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$sjson" "$vsjson" "${rows[@]}" <<'PY'
import json, sys
(path, quick, cmd, build, btype, accel, backend, model, kernel, load, nproc, date, scaling,
 vm_scaling), rows = sys.argv[1:15], sys.argv[15:]
out = []
for r in rows:
    key, label, js, bench, skip = r.split("|")
    out.append(dict(key=key, label=label, json=js, bench=bench, skip=skip,
                    env_skip_ok=key.startswith("qemu")))
json.dump(dict(rows=out, scaling=scaling, vm_scaling=vm_scaling, command=cmd, machine=dict(
    quick=quick == "1", build=build, build_type=btype, accel=accel, backend=backend, model=model,
    kernel=kernel, loadavg=load, nproc=nproc, date=date)), open(path, "w"))
PY
echo
rc=0
python3 "$root/bench/report/aggregate.py" "$out" "$work/meta.json" || rc=$?
((rc == 0)) || failed=1
echo "native backend: ${backend:-?}; QEMU accelerator: ${accel:-n/a}; total $(($(date +%s) - started)) s"
title="Odyssey startup latency ($(nproc) CPUs, $(date -u '+%Y-%m-%d'))"
gnuplot -e "dat='$out/latency.dat'; out='$out/latency.png'; ttl='$title'" "$root/bench/report/latency.gp" || failed=1
outputs=(results.csv report.md latency.png)
((quick)) || outputs+=(scaling.csv)
for f in "${outputs[@]}"; do
  [[ -s "$out/$f" ]] || { echo "report.sh: $out/$f is missing" >&2; failed=1; }
done
echo "wrote ${outputs[*]/#/$out/}"
exit $failed
