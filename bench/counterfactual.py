"""Does the replay predict what another policy would have done? One simulated night
(the closed loop's fleet: 12 hosts, 2 calls/s, 24 h, quotas per minute and per hour)
under the original breakers.yaml is replayed under other policies for each host with
incidents; the same night is then simulated under each of those policies (the same
hosts, noise and incident times), and its ground truth says what the policy did. Per
host and policy: opens, calls blocked outside incidents and failed attempts let into
incidents, as the replay predicted them from the baseline's telemetry and as the night
had them, each also as a ratio to the current policy's. A replay that ranks policies
right has the ratios on the same side of 1 as the truth. Hosts under a server quota are
left out: the truth counts a quota's 429s and cooldowns outside every incident, the
replay inside the incidents it detects.

The units differ a little: the truth counts blocked calls and failed attempts against
the simulator's incident windows, the replay against the incidents it detected, so the
ratios are the comparison, not the counts.

    python3 bench/counterfactual.py BIN WORKDIR
"""

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
FLEET = ["--hosts", "12", "--rps", "2", "--hours", "24", "--quota-windows", "minute,hour"]
# Each policy as a change of the host's own (fail_max, reset_timeout_s).
POLICIES = [
    ("current", lambda f, r: (f, r)),
    ("fail_max - 1", lambda f, r: (f - 1, r)),
    ("reset x2", lambda f, r: (f, r * 2)),
    ("reset x4", lambda f, r: (f, r * 4)),
    ("fail_max - 1, reset x2", lambda f, r: (f - 1, r * 2)),
    ("fail_max + 1", lambda f, r: (f + 1, r)),
    ("fail_max + 1, reset x1.6", lambda f, r: (f + 1, round(r * 1.6))),
]


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True).stdout


def simulate(bin_, out, breakers):
    run(bin_, "-q", "simulate", "--out", out, "--night", "1", *FLEET, "--config", breakers,
        "--ratelimits", ROOT / "data-samples/ratelimits.yaml")
    return {h["host"]: h for h in json.loads((out / "ground_truth.json").read_text())["hosts"]}


def main():
    bin_, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    original = ROOT / "data-samples/breakers.yaml"
    cfg = yaml.safe_load(original.read_text())
    base = simulate(bin_, work / "base", original)
    # Hosts with incidents and no server quota: a quota's 429s and their cooldowns are
    # outside every incident in the truth, but detected as incidents by the replay.
    hosts = [h for h, t in base.items()
             if t["incidents"] and not t.get("quotas") and h in cfg.get("hosts", {})]
    current = {h: (cfg["hosts"][h]["fail_max"], cfg["hosts"][h]["reset_timeout_s"]) for h in hosts}
    telemetry = sorted((work / "base").glob("telemetry*.sqlite"))
    targs = []
    for f in telemetry:
        targs += ["--telemetry", f]
    rows = {}
    for name, change in POLICIES:
        variant = yaml.safe_load(original.read_text())
        for h in hosts:
            f, r = change(*current[h])
            variant["hosts"][h]["fail_max"] = max(f, 1)
            variant["hosts"][h]["reset_timeout_s"] = r
        path = work / "variant.yaml"
        path.write_text(yaml.safe_dump(variant))
        truth = simulate(bin_, work / "variant", path)
        for h in hosts:
            f, r = change(*current[h])
            f = max(f, 1)
            replayed = json.loads(run(bin_, "-q", "replay", *targs, "--config", original,
                                      "--policy", f"fail_max={f},reset_timeout_s={r}", "--host", h,
                                      "--json"))[0]
            t = truth[h]
            rows[(h, name)] = {
                "policy": f"{f}/{r:g}",
                "replay": (replayed["opens"], replayed["false_trips"], replayed["failures_let_through"]),
                "truth": (t["opens"], t["outcome"]["blocked_outside_incidents"],
                          t["outcome"]["failed_attempts_in_incidents"]),
            }

    def ratio(v, c):
        return f"x{v / c:.2f}" if c else ("x1.00" if v == c else "new")

    print("| host | regime | policy | opens replay / truth | blocked outside incidents replay / truth "
          "| failed attempts let in replay / truth | ranks right |")
    print("|---|---|---|---|---|---|---|")
    agree = total = 0
    for h in hosts:
        cur = rows[(h, "current")]
        for name, _ in POLICIES:
            row = rows[(h, name)]
            cells = []
            right = []
            for i in range(3):
                rv, tv = row["replay"][i], row["truth"][i]
                rc, tc = cur["replay"][i], cur["truth"][i]
                if name == "current":
                    cells.append(f"{rv:,} / {tv:,}")
                else:
                    cells.append(f"{rv:,} / {tv:,} ({ratio(rv, rc)} / {ratio(tv, tc)})")
                    if i > 0:
                        # The direction of the change against the current policy.
                        same = (rv > rc) == (tv > tc) or (rv == rc and tv == tc)
                        right.append(same)
            if name != "current":
                agree += sum(right)
                total += len(right)
            print(f"| {h} | {base[h]['regime']} | {name} ({row['policy']}) | {cells[0]} | {cells[1]} | "
                  f"{cells[2]} | {'' if name == 'current' else ', '.join('yes' if x else 'NO' for x in right)} |")
    print(f"\nThe replay moves blocked calls and failed attempts the way the night did in {agree} of "
          f"{total} cases.")


if __name__ == "__main__":
    main()
