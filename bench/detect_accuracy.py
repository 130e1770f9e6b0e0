"""Accuracy of incident detection against the simulator's ground truth, over seeds, for
both of our detectors and for ruptures' PELT (l2 on the ratio, and a binomial custom
cost) as the peer. Every detector's change points go through the same incident rule.

Scores per incident level (severe, mild): precision, recall and F1 of onsets and of ends
within 5 buckets (one-to-one matching), Jaccard overlap of unhealthy time; false
incidents per healthy host-day; incidents on chronic-noise hosts.

Usage: [RUPTURES_SEEDS=1] [PENALTY=2] [BOCPD=hazard,scale] python3 bench/detect_accuracy.py BINARY WORKDIR SEED [SEED ...]
"""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import ruptures as rpt

BIN, WORK, SEEDS = sys.argv[1], Path(sys.argv[2]), [int(s) for s in sys.argv[3:]]
# ruptures' pure-Python PELT takes minutes per seed: the peer runs on the first seeds only.
# PENALTY overrides our PELT's penalty (multiples of ln n), for choosing it on held-out seeds.
PENALTY = __import__("os").environ.get("PENALTY")
# BOCPD="hazard,scale" overrides the BOCPD settings, for calibrating them on held-out seeds.
BOCPD = __import__("os").environ.get("BOCPD")
RUPTURES_SEEDS = int(__import__("os").environ.get("RUPTURES_SEEDS", "1"))
KIND_OF = {"rate_limit": "429", "outage": "5xx", "flapping": "5xx", "timeouts": "timeout"}
COLUMN_OF = {"429": "e429", "5xx": "e5xx", "timeout": "timeouts"}
TOL = 5  # buckets
Z = 1.959963984540054


def run(*args):
    subprocess.run([BIN, "-q", *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def wilson_lower(k, n):
    if n <= 0:
        return 0.0
    p = k / n
    z2 = Z * Z
    return (p + z2 / (2 * n) - Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))) / (1 + z2 / n)


def incidents_from_cps(k, n, cps, min_excess=0.02, min_buckets=2):
    """The same rule as src/detect/mod.rs `incidents`."""
    bounds = [0, *cps, len(k)]
    segs = [(a, b, k[a:b].sum(), n[a:b].sum()) for a, b in zip(bounds, bounds[1:]) if b > a]
    with_calls = sorted((s for s in segs if s[3] > 0), key=lambda s: (s[2] / s[3], s[0]))
    total = sum(b - a for a, b, _, _ in with_calls)
    cov = kk = nn = 0
    for a, b, ks, ns in with_calls:
        cov += b - a
        kk += ks
        nn += ns
        if 2 * cov >= total:
            break
    bg = kk / nn if nn else 0.0
    elevated = [s[3] > 0 and s[2] / s[3] >= bg + min_excess and wilson_lower(s[2], s[3]) > bg for s in segs]
    out, i = [], 0
    while i < len(segs):
        if not elevated[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(segs) and elevated[j + 1]:
            j += 1
        if segs[j][1] - segs[i][0] >= min_buckets:
            out.append((segs[i][0], segs[j][1]))
        i = j + 1
    return out


class BinomialCost(rpt.base.BaseCost):
    model = "binomial"
    min_size = 1

    def fit(self, signal):
        self.signal = signal
        self.k = np.concatenate([[0.0], np.cumsum(signal[:, 0])])
        self.n = np.concatenate([[0.0], np.cumsum(signal[:, 1])])
        return self

    def error(self, start, end):
        k, n = self.k[end] - self.k[start], self.n[end] - self.n[start]
        if n <= 0:
            return 0.0
        c = 0.0
        if k > 0:
            c -= 2 * k * math.log(k / n)
        if n - k > 0:
            c -= 2 * (n - k) * math.log((n - k) / n)
        return c


def ruptures_cps(k, n, model):
    pen = float(PENALTY or 2) * math.log(len(k))
    if model == "binomial":
        algo = rpt.Pelt(custom_cost=BinomialCost(), min_size=1, jump=1).fit(np.column_stack([k, n]))
        return algo.predict(pen=pen)[:-1]
    ratio = np.where(n > 0, k / np.maximum(n, 1), 0.0)
    # l2 on a ratio needs a penalty on the ratio's scale: 4 ln n times its variance.
    algo = rpt.Pelt(model="l2", min_size=1, jump=1).fit(ratio)
    return algo.predict(pen=pen * max(ratio.var(), 1e-6))[:-1]


def match(truth, found):
    """One-to-one greedy matching of bucket positions within TOL: (truth, found) pairs."""
    pairs = sorted((abs(t - f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found) if abs(t - f) <= TOL)
    used_t, used_f, out = set(), set(), []
    for _, i, j in pairs:
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            out.append((i, j))
    return out


scores = {}  # (detector, level) -> counters


def add(det, level, key, v):
    scores.setdefault((det, level), {}).setdefault(key, 0)
    scores[(det, level)][key] += v


timing = {}
for seed in SEEDS:
    d = WORK / f"seed-{seed}"
    if not (d / "ds/metrics/host_timeseries.parquet").exists():
        run("simulate", "--out", d / "sim", "--hours", 24, "--hosts", 12, "--rps", 2, "--seed", seed)
        run("export", "--out", d / "ds", "--telemetry", d / "sim/telemetry.sqlite")
        truth = json.loads((d / "sim/ground_truth.json").read_text())
        run("analyze", "--data", d / "ds", "--now", truth["end_s"], "--baseline", "1s")
    truth = json.loads((d / "sim/ground_truth.json").read_text())
    ts = pl.read_parquet(d / "ds/metrics/host_timeseries.parquet").sort("host", "bucket")
    start_s = truth["end_s"] - 24 * 3600
    detections = {}
    for det in ("pelt-binomial", "bocpd"):
        t0 = time.perf_counter()
        extra = ["--penalty", PENALTY] if PENALTY and det == "pelt-binomial" else []
        if BOCPD and det == "bocpd":
            hazard, scale = BOCPD.split(",")
            extra = ["--bocpd-hazard", hazard, "--bocpd-prior-scale", scale]
        run("detect", "--metrics", d / "ds/metrics", "--detector", det, *extra)
        timing[det] = timing.get(det, 0) + time.perf_counter() - t0
        inc = pl.read_parquet(d / "ds/metrics/incidents.parquet")
        detections[det] = [
            (r["host"], r["kind"], int((r["start"].timestamp() - start_s) // 60), int((r["end"].timestamp() - start_s) // 60))
            for r in inc.iter_rows(named=True)
        ]
    for model in ("binomial", "l2") if seed in SEEDS[:RUPTURES_SEEDS] else ():
        det = f"ruptures-{model}"
        t0 = time.perf_counter()
        found = []
        for host in truth["hosts"]:
            h = ts.filter(pl.col("host") == host["host"])
            n = h["calls_net"].to_numpy().astype(float)
            for kind, column in COLUMN_OF.items():
                k = h[column].to_numpy().astype(float)
                for a, b in incidents_from_cps(k, n, ruptures_cps(k, n, model)):
                    found.append((host["host"], kind, a, b))
        timing[det] = timing.get(det, 0) + time.perf_counter() - t0
        detections[det] = found

    for det, found in detections.items():
        for host in truth["hosts"]:
            name, regime = host["host"], host["regime"]
            mine = [f for f in found if f[0] == name]
            if regime == "healthy":
                add(det, "healthy", "false_incidents", len(mine))
                add(det, "healthy", "host_days", 1)
            if regime == "chronic":
                add(det, "chronic", "incidents", len(mine))
                add(det, "chronic", "host_days", 1)
            for kind in set(KIND_OF.values()):
                tr = [i for i in host["incidents"] if KIND_OF[i["kind"]] == kind]
                found_k = [f for f in mine if f[1] == kind]
                t_on = [int((i["start_s"] - start_s) // 60) for i in tr]
                t_end = [int(math.ceil((i["end_s"] - start_s) / 60)) for i in tr]
                on_pairs = match(t_on, [f[2] for f in found_k])
                end_pairs = match(t_end, [f[3] for f in found_k])
                add(det, "all", "found", len(found_k))
                add(det, "all", "truth", len(tr))
                add(det, "all", "onset_matches", len(on_pairs))
                add(det, "all", "end_matches", len(end_pairs))
                for level in ("severe", "mild"):
                    idx = [j for j, i in enumerate(tr) if i["level"] == level]
                    add(det, level, "truth", len(idx))
                    add(det, level, "onset_matches", sum(1 for a, _ in on_pairs if a in idx))
                    tb = set(b for j in idx for b in range(t_on[j], t_end[j]))
                    fb = set(b for f in found_k for b in range(f[2], f[3])) if idx else set()
                    add(det, level, "inter", len(tb & fb))
                    add(det, level, "union", len(tb | fb))


def f1(m, truth, found):
    p = m / found if found else 0.0
    r = m / truth if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


print(f"seeds {SEEDS[0]}..{SEEDS[-1]} ({len(SEEDS)} seeds; ruptures on the first {RUPTURES_SEEDS}), 12 hosts x 24 h x 2 calls/s per host, onsets and ends within {TOL} buckets, one-to-one")
print("| detector | incidents | onset precision / recall / F1 | end F1 | severe: recall, Jaccard | mild: recall, Jaccard |")
print("|---|---|---|---|---|---|")
for det in ("pelt-binomial", "bocpd", "ruptures-binomial", "ruptures-l2"):
    a = scores.get((det, "all"))
    if not a:
        continue
    p, r, f = f1(a["onset_matches"], a["truth"], a["found"])
    _, _, fe = f1(a["end_matches"], a["truth"], a["found"])
    lv = []
    for level in ("severe", "mild"):
        s_ = scores[(det, level)]
        lv.append(f"{s_['onset_matches'] / max(s_['truth'], 1):.2f} of {s_['truth']}, {s_['inter'] / max(s_['union'], 1):.2f}")
    print(f"| {det} | {a['truth']} | {p:.2f} / {r:.2f} / {f:.2f} | {fe:.2f} | {lv[0]} | {lv[1]} |")
print()
print("| detector | false incidents per healthy host-day | incidents per chronic host-day | time per seed (12 hosts x 3 kinds) |")
print("|---|---|---|---|")
for det in ("pelt-binomial", "bocpd", "ruptures-binomial", "ruptures-l2"):
    if (det, "healthy") not in scores:
        continue
    h = scores[(det, "healthy")]
    c = scores[(det, "chronic")]
    runs = len(SEEDS) if det in ("pelt-binomial", "bocpd") else RUPTURES_SEEDS
    print(f"| {det} | {h['false_incidents'] / h['host_days']:.2f} | {c['incidents'] / c['host_days']:.2f} | {timing[det] / runs:.2f} s |")
