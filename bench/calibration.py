"""Does `crawler: auto` find how a crawler's breakers count? Simulated nights of
crawlers that differ from the documented one in one field (or in the issue's three
together), with and without a row for each request that raised. For each night: the
fields `run` chose against the simulated crawler's, and the replay of every host with
at least 10 recorded opens under the chosen model (recorded vs replayed opens, and the
largest share missed). Prints a Markdown table for BENCHMARKS.md.

    python3 bench/calibration.py BIN WORKDIR [SEED ...]
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (name, crawler fields, exception rows)
NIGHTS = [
    ("documented", {}, False),
    ("documented, exception rows", {}, True),
    ("cache hits uncounted", {"cache_hit_is_success": False}, False),
    ("retries not counted", {"count_retries": False}, False),
    ("final outcome once", {"final_outcome_counted": 1}, False),
    ("success keeps the cooldown", {"success_clears_cooldown": False}, False),
    ("exceptions counted, exception rows", {"exceptions_are_failures": True}, True),
    (
        "the issue's three, exception rows",
        {"cache_hit_is_success": False, "exceptions_are_failures": True, "final_outcome_counted": 1},
        True,
    ),
]
FIELDS = [
    "breaker_scope",
    "cooldown_scope",
    "success_clears_cooldown",
    "count_retries",
    "final_outcome_counted",
    "cache_hit_is_success",
    "exceptions_are_failures",
]


def run(*args):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)


def night(bin_, work, seed, fields, exception_rows):
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    crawler = work / "crawler.yaml"
    crawler.write_text(yaml.safe_dump(fields or {}))
    sim = work / "sim"
    args = [bin_, "-q", "simulate", "--out", sim, "--hours", "24", "--hosts", "12", "--rps", "0.3",
            "--seed", seed, "--machines", "4", "--crawler", crawler]
    if exception_rows:
        args.append("--exception-rows")
    run(*args)
    breakers = work / "breakers.yaml"
    run(sys.executable, ROOT / "bench/config_from_ground_truth.py", sim / "ground_truth.json", breakers)
    files = sorted(sim.glob("telemetry*.sqlite"))
    out = work / "out"
    # A dataset left by an earlier run holds other rows of these files' names.
    shutil.rmtree(out, ignore_errors=True)
    targs = []
    for f in files:
        targs += ["--telemetry", f]
    run(bin_, "-q", "run", *targs, "--config", breakers, "--out", out)
    model = yaml.safe_load((out / "metrics" / "crawler_model.yaml").read_text())
    rows = json.loads(run(bin_, "-q", "replay", "--data", out / "dataset", "--metrics", out / "metrics",
                          "--config", breakers, "--json").stdout)
    return model, rows


def main():
    bin_, work = Path(sys.argv[1]), Path(sys.argv[2])
    seeds = sys.argv[3:] or ["7"]
    print("| night | seed | fields wrong | hosts ≥10 opens | within 5% | recorded → replayed (worst) |")
    print("|---|---:|---|---:|---:|---|")
    for seed in seeds:
        for name, fields, rows_ in NIGHTS:
            d = work / f"seed{seed}" / name.replace(" ", "-").replace(",", "").replace("'", "")
            model, rows = night(bin_, d, seed, fields, rows_)
            chosen = model["crawler"]
            truth = {"breaker_scope": "process", "cooldown_scope": "process", "success_clears_cooldown": True,
                     "count_retries": True, "final_outcome_counted": 2, "cache_hit_is_success": True,
                     "exceptions_are_failures": False}
            truth.update(fields)
            shown = {f["field"]: f["shown"] for f in model["fields"]}
            wrong = [f"{f}={chosen[f]}" for f in FIELDS if chosen[f] != truth[f] and shown.get(f, True)]
            big = [r for r in rows if r["recorded"]["opens"] >= 10]
            ok = [r for r in big if abs(r["opens"] - r["recorded"]["opens"]) <= 0.05 * r["recorded"]["opens"]]
            worst = max(big, key=lambda r: abs(r["opens"] - r["recorded"]["opens"]) / r["recorded"]["opens"],
                        default=None)
            w = f"{worst['host']} {worst['recorded']['opens']} → {worst['opens']}" if worst else ""
            print(f"| {name} | {seed} | {', '.join(wrong) or '—'} | {len(big)} | {len(ok)} | {w} |", flush=True)


if __name__ == "__main__":
    main()
