#!/usr/bin/env python3
"""Aggregates bench/report.sh's Google Benchmark JSON files into the table, results.csv,
report.md and the gnuplot data file. Stdlib only.

usage: aggregate.py OUT_DIR META_JSON
META_JSON: {"rows": [{"key", "label", "json", "bench", "skip"}], "machine": {...}, "command": "...",
            "scaling": engine_bench BM_Scale_* JSON or "", "vm_scaling": vm_bench BM_Scale_* JSON or ""}
Each benchmark reports p50_ms/p90_ms/p99_ms counters computed from its per-iteration times
(engine_bench, vm_bench); a row without them falls back to the per-iteration mean (p50 only).
Exit status 1 when a benchmark that ran reported an error (error_occurred)."""
import csv
import json
import os
import sys


def load_row(row):
    """Returns (p50, p90, p99, iterations, note, errored)."""
    if row.get("skip"):
        return None, None, None, 0, row["skip"], False
    path = row["json"]
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None, None, None, 0, f"no output from {row['bench']}", True
    try:
        data = json.load(open(path))
    except ValueError as e:
        return None, None, None, 0, f"unreadable JSON from {row['bench']}: {e}", True
    for b in data.get("benchmarks", []):
        if b.get("name", "").split("/iterations")[0] != row["bench"]:
            continue
        if b.get("error_occurred"):
            msg = b.get("error_message", "error")
            # An unusable environment (no QEMU/libvirt) is a skip, not a failure.
            env_skip = row.get("env_skip_ok", False) and "not installed" in msg
            return None, None, None, 0, f"{'skipped' if env_skip else 'ERROR'}: {msg}", not env_skip
        if "p50_ms" in b:
            return b["p50_ms"], b.get("p90_ms"), b.get("p99_ms"), b.get("iterations", 0), "", False
        unit = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        return b["real_time"] * unit, None, None, b.get("iterations", 0), "mean only", False
    return None, None, None, 0, f"{row['bench']} missing from {os.path.basename(path)}", True


SCALING_CSV = ["series", "x", "p50_ms", "p90_ms", "p99_ms", "pool_pss_MiB", "pss_MiB_per_member",
               "pool_rss_MiB", "rss_MiB_per_member", "refill_p50_ms", "disposables_per_s"]


def load_benchmarks(path, what):
    """The benchmark entries of a JSON file, or (None, note) when there is none."""
    if not path or not os.path.exists(path) or os.path.getsize(path) == 0:
        return None, f"no output from {what}"
    try:
        return json.load(open(path)).get("benchmarks", []), ""
    except ValueError as e:
        return None, f"unreadable JSON from {what}: {e}"


def native_scaling(path):
    """Native scaling from engine_bench's BM_Scale_* JSON: (text lines, markdown, csv rows, errored)."""
    benches, note = load_benchmarks(path, "engine_bench (scaling)")
    if benches is None:
        return [f"scaling: {note}"], [f"scaling: {note}"], [], True
    lines, rows, errored = [], [], False
    md = ["| pool size | hit p50 ms | p90 ms | p99 ms | n | pool PSS MiB | PSS MiB / member |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    md_tp = ["| concurrent clients | disposables/s |", "|---:|---:|"]
    lines.append(f"{'pool size':>9} {'hit p50 ms':>11} {'p90 ms':>8} {'p99 ms':>8} {'pool PSS MiB':>13} {'MiB/member':>11}")
    for b in benches:
        name = b.get("name", "")
        if b.get("error_occurred"):
            errored = True
            lines.append(f"{name}: ERROR {b.get('error_message')}")
            md.append(f"| {name} | ERROR: {b.get('error_message')} | | | | | |")
            continue
        arg = name.split("/")[1] if "/" in name else "?"
        if name.startswith("BM_Scale_PoolHitByPoolSize/"):
            lines.append(f"{arg:>9} {fmt(b.get('p50_ms')):>11} {fmt(b.get('p90_ms')):>8} {fmt(b.get('p99_ms')):>8} "
                         f"{fmt(b.get('pool_pss_MiB')):>13} {fmt(b.get('pss_MiB_per_member')):>11}")
            md.append(f"| {arg} | {fmt(b.get('p50_ms'))} | {fmt(b.get('p90_ms'))} | {fmt(b.get('p99_ms'))} | "
                      f"{b.get('iterations', 0)} | {fmt(b.get('pool_pss_MiB'))} | {fmt(b.get('pss_MiB_per_member'))} |")
            rows.append(dict(series="pool_hit_by_pool_size", x=arg, p50_ms=b.get("p50_ms"), p90_ms=b.get("p90_ms"),
                             p99_ms=b.get("p99_ms"), pool_pss_MiB=b.get("pool_pss_MiB"),
                             pss_MiB_per_member=b.get("pss_MiB_per_member")))
    lines.append("")
    lines.append(f"{'clients':>9} {'disposables/s':>14}")
    for b in benches:
        name = b.get("name", "")
        if name.startswith("BM_Scale_ThroughputByClients/") and not b.get("error_occurred"):
            arg = name.split("/")[1]
            lines.append(f"{arg:>9} {b.get('items_per_second', 0):>14.1f}")
            md_tp.append(f"| {arg} | {b.get('items_per_second', 0):.1f} |")
            rows.append(dict(series="throughput_by_clients", x=arg, disposables_per_s=b.get("items_per_second")))
    return lines, md + [""] + md_tp, rows, errored


def vm_scaling(path):
    """VM clone scaling from vm_bench's BM_Scale_VmPoolHitByClones JSON: (text lines, markdown,
    csv rows, errored).
    An unusable VM environment (QEMU/libvirt/busybox not installed) is a skip, not an error."""
    benches, note = load_benchmarks(path, "vm_bench (VM scaling)")
    if benches is None:
        return [f"VM scaling: {note}"], [f"VM scaling: {note}"], [], True
    lines = [f"{'clones':>6} {'hit p50 ms':>11} {'p90 ms':>8} {'p99 ms':>8} {'n':>3} {'pool PSS MiB':>13} "
             f"{'PSS/clone':>10} {'pool RSS MiB':>13} {'RSS/clone':>10} {'refill p50 ms':>14}"]
    md = ["| clones | hit p50 ms | p90 ms | p99 ms | n | pool PSS MiB | PSS MiB / clone | pool RSS MiB | "
          "RSS MiB / clone | refill p50 ms |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows, errored = [], False
    for b in benches:
        name = b.get("name", "")
        if not name.startswith("BM_Scale_VmPoolHitByClones/"):
            continue
        arg = name.split("/")[1]
        if b.get("error_occurred"):
            msg = b.get("error_message", "error")
            env_skip = "not installed" in msg
            errored |= not env_skip
            lines.append(f"{arg:>6} {'skipped' if env_skip else 'ERROR'}: {msg}")
            md.append(f"| {arg} | {'skipped' if env_skip else 'ERROR'}: {msg} | | | | | | | | |")
            continue
        cells = [fmt(b.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms")] + [str(b.get("iterations", 0))] + \
                [fmt(b.get(k)) for k in ("pool_pss_MiB", "pss_MiB_per_clone", "pool_rss_MiB", "rss_MiB_per_clone",
                                         "refill_p50_ms")]
        widths = [11, 8, 8, 3, 13, 10, 13, 10, 14]
        lines.append(f"{arg:>6} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))
        md.append(f"| {arg} | " + " | ".join(cells) + " |")
        rows.append(dict(series="vm_pool_hit_by_clones", x=arg, p50_ms=b.get("p50_ms"), p90_ms=b.get("p90_ms"),
                         p99_ms=b.get("p99_ms"), pool_pss_MiB=b.get("pool_pss_MiB"),
                         pss_MiB_per_member=b.get("pss_MiB_per_clone"), pool_rss_MiB=b.get("pool_rss_MiB"),
                         rss_MiB_per_member=b.get("rss_MiB_per_clone"), refill_p50_ms=b.get("refill_p50_ms")))
    if len(lines) == 1:
        lines.append(f"BM_Scale_VmPoolHitByClones missing from {os.path.basename(path)}")
        md.append(lines[-1])
        errored = True
    return lines, md, rows, errored


def fmt(v):
    return "n/a" if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def main():
    out, meta_path = sys.argv[1], sys.argv[2]
    meta = json.load(open(meta_path))
    results, failed = [], False
    for row in meta["rows"]:
        p50, p90, p99, iters, note, errored = load_row(row)
        failed |= errored
        results.append(dict(row, p50=p50, p90=p90, p99=p99, iters=iters, note=note))
    base = next((r["p50"] for r in results if r["key"] == "bwrap_cold"), None)
    for r in results:
        r["ratio"] = (r["p50"] / base) if (base and r["p50"]) else None

    header = f"{'scenario':34} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'n':>4} {'x bwrap':>8}  note"
    lines = [header, "-" * len(header)]
    for r in results:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"{r['label']:34} {fmt(r['p50']):>9} {fmt(r['p90']):>9} {fmt(r['p99']):>9} "
                     f"{r['iters']:>4} {ratio:>8}  {r['note']}")
    print("\n".join(lines))

    with open(os.path.join(out, "results.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "scenario", "benchmark", "p50_ms", "p90_ms", "p99_ms", "iterations",
                    "ratio_p50_to_bwrap", "note"])
        for r in results:
            w.writerow([r["key"], r["label"], r["bench"], r["p50"], r["p90"], r["p99"], r["iters"],
                        r["ratio"], r["note"]])

    with open(os.path.join(out, "latency.dat"), "w") as f:
        for r in results:
            if r["p50"]:
                f.write(f"\"{r['label']}\" {r['p50']} {r['p90'] or r['p50']} {r['p99'] or r['p50']}\n")

    m = meta["machine"]
    md = ["# Odyssey startup latency report", "",
          f"Command: `{meta['command']}`  ", f"Date: {m['date']}  ",
          f"Machine: {m['nproc']} CPUs, {m['model']}, kernel {m['kernel']}, load average "
          f"{m['loadavg']}  ",
          f"Build: `{m['build']}` ({m['build_type']}); QEMU accelerator: {m['accel']}  ",
          f"Mode: {'quick (CI: few iterations, timings indicative only)' if m['quick'] else 'full'}", "",
          "| scenario | p50 ms | p90 ms | p99 ms | n | p50 / bwrap p50 | note |",
          "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        md.append(f"| {r['label']} | {fmt(r['p50'])} | {fmt(r['p90'])} | {fmt(r['p99'])} | "
                  f"{r['iters']} | {ratio} | {r['note']} |")
    md += ["", "How the figures are computed: p50/p90/p99 are nearest-rank percentiles over the "
           "per-iteration wall times of one benchmark run (n iterations), reported as counters "
           "by the benchmark binaries themselves (engine_bench, vm_bench). With few iterations "
           "p90/p99 are the slowest samples, not stable tail estimates.", "",
           "Scenarios: native rows go through a real odysseyd on its default backend "
           "(hal native:/// as root) from the request to the first byte of `echo hi` (pool hit) "
           "or to the exit of `true` (pool miss, cold). bwrap: `bwrap --unshare-all --ro-bind / / "
           "true`, spawn to exit, in the same run (the baseline; ratio < 1 is faster than bwrap). "
           "QEMU rows come from vm_bench at the HAL level (libvirt embedded QEMU, no daemon): pool "
           "hit = resume of a paused clone prepared as the pool prepares one (agent HELLO done, identity "
           "refreshed) to the first byte of a "
           "`uname -r` call; restore = template snapshot to the agent's HELLO; cold boot = boot "
           "to HELLO.", "", "![latency](latency.png)", ""]
    csv_rows = []
    if meta.get("scaling"):
        lines, md_lines, rows, errored = native_scaling(meta["scaling"])
        failed |= errored
        csv_rows += rows
        print("\n" + "\n".join(lines))
        md += ["## Scaling (native, through odysseyd)", "",
               "Pool hit = request -> first byte of `echo hi` with the pool at its size (30 "
               "iterations per size); PSS is the pool's memory as odysseyd reports it; "
               "throughput = `true` calls (request -> exit), 10 per client, pool of 8 refilling.",
               ""] + md_lines + [""]
    if meta.get("vm_scaling"):
        lines, md_lines, rows, errored = vm_scaling(meta["vm_scaling"])
        failed |= errored
        csv_rows += rows
        print("\nVM clones (QEMU, HAL level)\n" + "\n".join(lines))
        md += ["## VM clone scaling (QEMU, HAL level)", "",
               "vm_bench `BM_Scale_VmPoolHitByClones/{1,4,8}`: a pool of N paused clones (each "
               "restored from the template snapshot, agent HELLO done, paused). Per iteration: "
               "PSS and RSS of every clone's QEMU process from /proc/PID/smaps_rollup with the "
               "pool full (pool = sum over the N clones, per clone = pool / N; means over the "
               "iterations), then one pool hit (resume -> first byte of `uname -r`) with the other "
               "N-1 clones paused, the used clone destroyed and the pool refilled (refill = restore "
               "-> HELLO -> pause, with the others present). n = pool hits per N; with few of them "
               "p90/p99 are the slowest samples.", ""] + md_lines + [""]
    if csv_rows:
        with open(os.path.join(out, "scaling.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SCALING_CSV, restval="")
            w.writeheader()
            w.writerows(csv_rows)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(md))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
