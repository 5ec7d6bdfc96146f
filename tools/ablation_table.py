#!/usr/bin/env python3
"""The ablation table: for each run directory under OUT (one per loss, written by `draftalign distill`), the held-out
alpha and tau(g) at the start (step 0, the same pretrained drafter for every run) and at the end, from metrics.jsonl.

Usage: python tools/ablation_table.py OUT
"""
import json
import os
import sys


def validation_records(path):
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                rec = json.loads(line)
                if "val_alpha" in rec:
                    out.append(rec)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    rows = []
    for name in sorted(os.listdir(root)):
        metrics = os.path.join(root, name, "metrics.jsonl")
        if not os.path.isfile(metrics):
            continue
        val = validation_records(metrics)
        if len(val) < 2:
            sys.exit(f"{metrics}: fewer than two validation records (did the run finish?)")
        rows.append((name, val[0], val[-1]))
    if not rows:
        sys.exit(f"{root}: no run directories with metrics.jsonl")
    start = rows[0][1]
    print(f"held-out records: {start['val_tokens']} response tokens; start = the pretrained drafter (step 0)\n")
    print("| loss | steps | alpha | tau(1) | tau(4) | tau(8) | response CE |")
    print("|---|---|---|---|---|---|---|")
    print(f"| start | 0 | {start['val_alpha']:.4f} | {start['val_tau_iid_prediction'][0]:.3f} | {start['val_tau_iid_prediction'][3]:.3f} | "
          f"{start['val_tau_iid_prediction'][7]:.3f} | {start['val_ce']:.3f} |")
    for name, _, end in rows:
        print(f"| {name} | {end['step']} | {end['val_alpha']:.4f} | {end['val_tau_iid_prediction'][0]:.3f} | {end['val_tau_iid_prediction'][3]:.3f} | "
              f"{end['val_tau_iid_prediction'][7]:.3f} | {end['val_ce']:.3f} |")


if __name__ == "__main__":
    main()
