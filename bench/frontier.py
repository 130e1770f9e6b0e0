"""What could any breaker setting have done? The closed loop's fleet (12 hosts, 2 calls/s,
24 h, quotas per minute and per hour) is simulated for nights 1 to N under a grid of
(fail_max, reset_timeout_s), every host at the grid point at once (the simulator's hosts
are independent), and under the original breakers.yaml. Per host with incidents, from
the nights' ground truth:

- the baseline: failed attempts let into incidents (of which in severe incidents),
  calls blocked outside incidents, successful requests;
- the best grid point that keeps the issue's side conditions (successes not lower,
  blocked outside incidents not above baseline), and its failed attempts as a ratio;
- the grid point with the fewest failed attempts, whatever it costs, and its cost;
- the grid point that reaches the issue's target (0.5x, 0.7x for a flapping host) with
  the fewest successes lost, if one does.

The simulator's truth, not the replay: this is the frontier the advice works inside,
the most any breakers.yaml with one (fail_max, reset_timeout_s) per host could do. The
timeout hosts are left out: no breaker counts their failures (timeouts are not breaker
failures for the documented crawler).

    python3 bench/frontier.py BIN WORKDIR [NIGHTS]
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FLEET = ["--hosts", "12", "--rps", "2", "--hours", "24", "--quota-windows", "minute,hour"]
FAIL_MAX = [1, 2, 3, 4, 5, 6, 8]
RESET_S = [15, 30, 45, 60, 90, 120, 240, 480]
TARGET = {"flapping": 0.7}


def simulate(bin_, out, breakers, night):
    subprocess.run([str(a) for a in [bin_, "-q", "simulate", "--out", out, "--night", night, *FLEET,
                                     "--config", breakers,
                                     "--ratelimits", ROOT / "data-samples/ratelimits.yaml"]],
                   check=True, capture_output=True)
    return {h["host"]: h for h in json.loads((Path(out) / "ground_truth.json").read_text())["hosts"]}


def totals(bin_, work, breakers, nights):
    """Per host, the outcome summed over the nights."""
    out = {}
    for k in range(1, nights + 1):
        for host, h in simulate(bin_, work / "sim", breakers, k).items():
            o = h["outcome"]
            row = out.setdefault(host, {"regime": h["regime"], "incidents": 0,
                                        "failed": 0, "severe": 0, "blocked": 0, "ok": 0})
            row["incidents"] += len(h["incidents"])
            for key, v in (("failed", o["failed_attempts_in_incidents"]),
                           ("severe", o["failed_in_severe_incidents"]),
                           ("blocked", o["blocked_outside_incidents"]),
                           ("ok", o["successes"])):
                row[key] += v
    return out


def main():
    bin_, work = Path(sys.argv[1]), Path(sys.argv[2])
    nights = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    work.mkdir(parents=True, exist_ok=True)
    original = ROOT / "data-samples/breakers.yaml"
    cfg = yaml.safe_load(original.read_text())
    base = totals(bin_, work, original, nights)
    hosts = [h for h, r in base.items()
             if r["incidents"] and r["regime"] != "timeouts" and h in cfg.get("hosts", {})]
    grid = {}
    for f in FAIL_MAX:
        for r in RESET_S:
            variant = yaml.safe_load(original.read_text())
            for h in hosts:
                variant["hosts"][h]["fail_max"] = f
                variant["hosts"][h]["reset_timeout_s"] = r
            path = work / "variant.yaml"
            path.write_text(yaml.safe_dump(variant))
            grid[(f, r)] = totals(bin_, work, path, nights)

    def x(a, b):
        return f"x{a / b:.2f}" if b else "-"

    def point(h, p, b):
        t = grid[p][h]
        return (f"{p[0]}/{p[1]}: {x(t['failed'], b['failed'])}, blocked {x(t['blocked'], b['blocked'])}, "
                f"successes {t['ok'] - b['ok']:+,}")

    print(f"Nights 1 to {nights}, grid fail_max {FAIL_MAX} x reset_timeout_s {RESET_S}\n")
    print("| host | regime | current | failed attempts into incidents (severe) | blocked outside "
          "| best within the side conditions | fewest failed attempts | the target at least cost |")
    print("|---|---|---|---:|---:|---|---|---|")
    for h in hosts:
        b = base[h]
        own = {**cfg.get("defaults", {}), **cfg["hosts"][h]}
        cur = f"{own.get('fail_max', 5)}/{own.get('reset_timeout_s', 60):g}"
        kept = [p for p in grid if grid[p][h]["ok"] >= b["ok"] and grid[p][h]["blocked"] <= b["blocked"]]
        best = min(kept, key=lambda p: grid[p][h]["failed"], default=None)
        fewest = min(grid, key=lambda p: (grid[p][h]["failed"], -grid[p][h]["ok"]))
        goal = TARGET.get(b["regime"], 0.5) * b["failed"]
        reach = [p for p in grid if grid[p][h]["failed"] <= goal]
        cheapest = max(reach, key=lambda p: grid[p][h]["ok"], default=None)
        print(f"| {h} | {b['regime']} | {cur} | {b['failed']:,} ({b['severe']:,}) | {b['blocked']:,} "
              f"| {point(h, best, b) if best else 'none'} | {point(h, fewest, b)} "
              f"| {point(h, cheapest, b) if cheapest else 'none on the grid'} |")


if __name__ == "__main__":
    main()
