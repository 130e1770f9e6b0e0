"""Fidelity of the replay under the crawler model: per host, the opens the recorded
breakers made against the opens the replay of the recorded policy makes.

Fleets: the real pybreaker harness (tests/python/pybreaker_fleet.py, 4 processes,
per-process and fleet-wide cooldowns; its listener logs every outcome), and the
simulator's 4-machine fleet in both variants (the schema variant has rows only, the
sink variant also the listener's events). Prints Markdown tables for BENCHMARKS.md.

    python3 bench/fidelity.py BIN WORKDIR
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def replay(bin_, files, config, settings, work):
    data = work / "ds"
    args = [bin_, "-q", "export", "--out", data]
    for f in files:
        args += ["--telemetry", f]
    run(*args)
    out = run(bin_, "-q", "replay", "--data", data, "--config", config, "--json", "--settings", settings)
    return json.loads(out.stdout)


def table(title, rows):
    print(f"\n{title}\n")
    print("| host | breakers | opens recorded | opens replayed | miss | worst breaker miss |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["host"]):
        rec, rep = r["recorded"]["opens"], r["opens"]
        miss = f"{100 * (rep - rec) / rec:+.1f}%" if rec else ("0" if rep == 0 else f"+{rep}")
        worst = max((abs(a - b) for a, b in zip(r["recorded"]["instance_opens"], r["instance_opens"])), default=0)
        print(f"| {r['host']} | {len(r['instance_opens'])} | {rec} | {rep} | {miss} | {worst} |")


def main():
    bin_, work = Path(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    for scope in ["process", "fleet"]:
        d = work / f"pybreaker-{scope}"
        run(sys.executable, ROOT / "tests/python/pybreaker_fleet.py", "--out", d, "--processes", "4", "--cooldowns", scope)
        settings = d / "settings.yaml"
        settings.write_text(f"crawler: {{cooldown_scope: {scope}}}\n")
        rows = replay(bin_, sorted(d.glob("process-*.sqlite")), d / "breakers.yaml", settings, d)
        table(f"Real pybreaker, 4 processes, {scope} cooldowns (listener events logged)", rows)
    for variant in ["schema", "sink"]:
        d = work / f"sim-{variant}"
        run(bin_, "-q", "simulate", "--out", d, "--hours", "24", "--hosts", "12", "--rps", "0.3",
            "--seed", "7", "--machines", "4", "--variant", variant)
        run(sys.executable, ROOT / "bench/config_from_ground_truth.py", d / "ground_truth.json", d / "breakers.yaml")
        settings = d / "settings.yaml"
        settings.write_text("crawler: auto\n")
        rows = replay(bin_, sorted(d.glob("telemetry-*.sqlite")), d / "breakers.yaml", settings, d)
        table(f"Simulator, 4 machines, {variant} variant ({'rows and listener events' if variant == 'sink' else 'rows only'})", rows)


if __name__ == "__main__":
    main()
