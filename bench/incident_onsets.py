"""One incident per outage: onsets of every incident `detect` reports (any kind) against
every incident of the simulator's ground truth (any kind), one-to-one within 5 buckets,
over seeds. Unlike bench/detect_accuracy.py, which scores each kind's detector apart,
this counts an outage reported twice (as 5xx and as breaker) as a false incident.

Usage: python3 bench/incident_onsets.py BINARY WORKDIR SEED [SEED ...]
"""
import json
import subprocess
import sys
from pathlib import Path

import polars as pl

BIN, WORK, SEEDS = sys.argv[1], Path(sys.argv[2]), [int(s) for s in sys.argv[3:]]
TOL_S = 300


def run(*args):
    subprocess.run([BIN, "-q", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def match(truth, found):
    """One-to-one: each truth onset takes the nearest free found onset within TOL_S."""
    used, m = set(), 0
    for t in truth:
        best = None
        for j, f in enumerate(found):
            if j not in used and abs(f - t) <= TOL_S and (best is None or abs(f - t) < abs(found[best] - t)):
                best = j
        if best is not None:
            used.add(best)
            m += 1
    return m


totals = {}
for seed in SEEDS:
    d = WORK / f"seed-{seed}"
    if not (d / "ds/metrics/incidents.parquet").exists():
        run("simulate", "--out", d / "sim", "--hours", 24, "--hosts", 12, "--rps", 2, "--seed", seed)
        run("export", "--out", d / "ds", "--telemetry", d / "sim/telemetry.sqlite")
        truth = json.loads((d / "sim/ground_truth.json").read_text())
        run("analyze", "--data", d / "ds", "--now", truth["end_s"], "--baseline", "1s")
    run("detect", "--metrics", d / "ds/metrics")
    truth = json.loads((d / "sim/ground_truth.json").read_text())
    inc = pl.read_parquet(d / "ds/metrics/incidents.parquet")
    for h in truth["hosts"]:
        found = sorted(r["start"].timestamp() for r in inc.filter(pl.col("host") == h["host"]).iter_rows(named=True))
        t = totals.setdefault(h["regime"], [0, 0, 0])
        tr = sorted(i["start_s"] for i in h["incidents"])
        t[0] += match(tr, found)
        t[1] += len(tr)
        t[2] += len(found)

print(f"seeds {SEEDS[0]}..{SEEDS[-1]} ({len(SEEDS)} seeds), 12 hosts x 24 h x 2 calls/s per host, onsets within {TOL_S // 60} buckets, one-to-one, every kind")
print("| host regime | truth | found | matched | precision | recall |")
print("|---|---:|---:|---:|---:|---:|")
all_ = [0, 0, 0]
for regime, (m, n, f) in sorted(totals.items()):
    all_ = [all_[0] + m, all_[1] + n, all_[2] + f]
    print(f"| {regime} | {n} | {f} | {m} | {m / f if f else 1:.2f} | {m / n if n else 1:.2f} |")
m, n, f = all_
print(f"| all | {n} | {f} | {m} | {m / f:.3f} | {m / n:.3f} |")
