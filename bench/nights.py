#!/usr/bin/env python3
"""Tables the closed loop of bench/nights.sh: per night, the advised fleet (running the
files patched by the nights before) beside the baseline (the original files), both
read from the simulator's ground truth; then the checks across nights.

Usage: bench/nights.py WORKDIR NIGHTS
"""
import json
import sys
from pathlib import Path

import yaml

UNIT_S = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400}


def per_second(rate):
    limit, unit = rate.split("/", 1)
    digits = "".join(c for c in unit if c.isdigit())
    unit = unit[len(digits):].upper()
    return int(limit) / ((int(digits) if digits else 1) * UNIT_S[unit])


def totals(truth):
    hosts = truth["hosts"]
    hours = (truth["end_s"] - truth["start_s"]) / 3600
    s = lambda key: sum(h["outcome"][key] for h in hosts)
    quota = [h for h in hosts if h.get("quotas")]
    att = sum(h["attempts"] for h in quota)
    return {
        "opens / h": sum(h["opens"] for h in hosts) / hours,
        "opens outside incidents": s("opens_outside_incidents"),
        "failed attempts let into incidents": s("failed_attempts_in_incidents"),
        "- of which timeouts (no breaker counts them)": s("timeouts_in_incidents"),
        "- failure statuses in severe incidents": s("failed_in_severe_incidents"),
        "blocked outside incidents": s("blocked_outside_incidents"),
        "429 share per attempt (quota hosts)": (
            sum(h["attempts_429"] for h in quota) / att if att else 0.0
        ),
        "limiter refusals": s("limiter_refusals"),
        "successful requests": s("successes"),
    }


def fmt(key, v):
    if key.startswith("429"):
        return f"{100 * v:.2f}%"
    if isinstance(v, float):
        return f"{v:.1f}"
    return f"{v:,}"


def main():
    work, nights = Path(sys.argv[1]), int(sys.argv[2])
    lines = []
    patches = [
        yaml.safe_load((work / f"advised-{k}" / "patch.yaml").read_text())
        for k in range(1, nights + 1)
    ]

    def changes(p):
        out = [("breakers", c["host"], c.get("role"), c["key"], c["from"], c["to"])
               for c in p["breakers"]["changes"]]
        for c in (p.get("ratelimits") or {}).get("changes", []):
            out.append(("rates", c["host"], c["role"], "rates", c["from"], c["to"]))
        return out

    sums = {}
    for k in range(1, nights + 1):
        base = totals(json.loads((work / f"base-{k}" / "ground_truth.json").read_text()))
        adv = totals(json.loads((work / f"advised-{k}" / "ground_truth.json").read_text()))
        applied = len(changes(patches[k - 2])) if k > 1 else 0
        lines.append(f"Night {k} ({applied} settings changed before it)\n")
        lines.append("| outcome | baseline | advised | change |")
        lines.append("|---|---:|---:|---:|")
        for key in base:
            b, a = base[key], adv[key]
            rel = f"{100 * (a - b) / b:+.0f}%" if b else ("0" if a == b else "new")
            lines.append(f"| {key} | {fmt(key, b)} | {fmt(key, a)} | {rel} |")
            sb, sa = sums.get(key, (0, 0))
            sums[key] = (sb + b, sa + a)
        lines.append("")

    lines.append(f"All {nights} nights\n")
    lines.append("| outcome | baseline | advised | change |")
    lines.append("|---|---:|---:|---:|")
    for key, (b, a) in sums.items():
        if key.startswith("429") or key.startswith("opens /"):
            b, a = b / nights, a / nights
        rel = f"{100 * (a - b) / b:+.0f}%" if b else ("0" if a == b else "new")
        lines.append(f"| {key} | {fmt(key, b)} | {fmt(key, a)} | {rel} |")
    lines.append("")

    # Per host over the nights that ran under changed files (2 to N): the issue's
    # targets are per host (failed attempts let into incidents, 429 per attempt).
    if nights > 1:
        lines.append(f"Per host, nights 2 to {nights}\n")
        lines.append(
            "| host | regime | failed attempts into incidents | of which timeouts "
            "| of which failure statuses in severe incidents "
            "| blocked outside incidents | 429 per attempt | successes |"
        )
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
        per = {}
        for k in range(2, nights + 1):
            for side in ("base", "advised"):
                truth = json.loads((work / f"{side}-{k}" / "ground_truth.json").read_text())
                for h in truth["hosts"]:
                    row = per.setdefault(h["host"], {"regime": h["regime"]})
                    o = h["outcome"]
                    for key, v in (
                        ("failed", o["failed_attempts_in_incidents"]),
                        ("timeouts", o["timeouts_in_incidents"]),
                        ("severe", o["failed_in_severe_incidents"]),
                        ("blocked", o["blocked_outside_incidents"]),
                        ("a429", h["attempts_429"]),
                        ("attempts", h["attempts"]),
                        ("ok", o["successes"]),
                    ):
                        row[(side, key)] = row.get((side, key), 0) + v

        def pair(row, key):
            b, a = row[("base", key)], row[("advised", key)]
            x = f" (x{a / b:.2f})" if b else ""
            return f"{b:,} -> {a:,}{x}"

        for host, row in per.items():
            share = lambda side: (
                row[(side, "a429")] / row[(side, "attempts")] if row[(side, "attempts")] else 0.0
            )
            b429, a429 = share("base"), share("advised")
            x429 = f" (x{a429 / b429:.2f})" if b429 else ""
            lines.append(
                f"| {host} | {row['regime']} | {pair(row, 'failed')} | {pair(row, 'timeouts')} "
                f"| {pair(row, 'severe')} | {pair(row, 'blocked')} | {100 * b429:.2f}% -> {100 * a429:.2f}%{x429} "
                f"| {pair(row, 'ok')} |"
            )
        lines.append("")

    # Checks across the nights.
    truth = json.loads((work / "base-1" / "ground_truth.json").read_text())
    healthy = {h["host"] for h in truth["hosts"] if h["regime"] == "healthy"}
    moved = {}
    ignored = []
    touched_healthy = []
    for k, p in enumerate(patches, 1):
        for kind, host, role, key, frm, to in changes(p):
            if host in healthy:
                touched_healthy.append(f"{host} {key} (night {k})")
            if kind == "breakers" and (key == "success_threshold" or (role and key != "trial_calls")):
                ignored.append(f"{host} {role} {key}")
            if kind == "rates":
                d = min(map(per_second, to)) - min(map(per_second, frm))
            else:
                d = to - frm
            moved.setdefault((host, role, key), []).append((k, d))
    swings = [
        f"{h} {r or ''} {key}".replace("  ", " ")
        for (h, r, key), steps in moved.items()
        if any(a[1] * b[1] < 0 for a, b in zip(steps, steps[1:]))
    ]
    lines.append("Checks")
    lines.append(f"- changes proposed per night: {[len(changes(p)) for p in patches]}")
    lines.append(f"- healthy hosts changed: {', '.join(touched_healthy) or 'none'}")
    lines.append(f"- values that moved back and forth: {', '.join(swings) or 'none'}")
    lines.append(f"- settings the crawler ignores written: {', '.join(ignored) or 'none'}")
    text = "\n".join(lines) + "\n"
    (work / "nights.md").write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
