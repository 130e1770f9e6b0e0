"""Writes a breakers.yaml holding the policy each simulated host ran with, from the
simulator's ground_truth.json, so replay and advice start from the recorded settings.

Usage: python3 bench/config_from_ground_truth.py GROUND_TRUTH_JSON OUT_YAML
"""
import json
import sys

gt = json.load(open(sys.argv[1]))
lines = ["defaults:", "  fail_max: 5", "  reset_timeout_s: 60", "hosts:"]
for h in gt["hosts"]:
    p = h["policy"]
    lines.append(f"  {h['host']}:")
    for key in ("fail_max", "reset_timeout_s", "success_threshold", "trial_calls", "retry_after_cap_s"):
        lines.append(f"    {key}: {p[key]}")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
