#!/usr/bin/env python3
"""The science run's table (tools/science.sh): every drafter's held-out alpha, MT-bench alpha and exact greedy tau with
95% intervals, the issue's targets checked, and the lever ablation as paired differences of tau(4).

Reads <out>/drafters.tsv (label, drafter dir, distill run dir), <out>/timings.tsv (stage, minutes),
<out>/report/report.json and exact.jsonl (from `draftalign evaluate`), and each distill run's metrics.jsonl.
Intervals: the report's bootstrap over turns for tau and alpha; paired differences here, by the same bootstrap over
turns (2000 resamples, seed 0) of the ratio sum(emitted) / sum(target calls) for both drafters at once.
Usage: python tools/science_table.py runs/science
"""
import json
import os
import sys

import numpy as np

GAMMA = 4


def load(out):
    report = json.load(open(os.path.join(out, "report", "report.json")))
    labels = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "drafters.tsv")) if line.strip()]
    timings = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "timings.tsv")) if line.strip()]
    items = {}
    for line in open(os.path.join(out, "report", "exact.jsonl")):
        r = json.loads(line)
        c = r["counters"]
        items.setdefault((r["drafter"], r["gamma"]), {})[(r["prompt_id"], r["turn"])] = (
            c["num_emitted_tokens"], c["num_target_calls"])
    return report, labels, timings, items


def held_out_alpha(run, first=False):
    """val_alpha of a distill run's metrics (the last record, or the first: the starting checkpoint's)."""
    path = os.path.join(run, "metrics.jsonl") if run else ""
    if not path or not os.path.exists(path):
        return None
    vals = [json.loads(line) for line in open(path) if '"val_alpha"' in line]
    return (vals[0] if first else vals[-1])["val_alpha"] if vals else None


def paired(items, a, b, resamples=2000):
    """tau(a) - tau(b) at GAMMA with a paired bootstrap interval over the turns both have."""
    ia, ib = items[(a, GAMMA)], items[(b, GAMMA)]
    keys = sorted(set(ia) & set(ib))
    ea, ca = np.array([ia[k][0] for k in keys], float), np.array([ia[k][1] for k in keys], float)
    eb, cb = np.array([ib[k][0] for k in keys], float), np.array([ib[k][1] for k in keys], float)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(keys), size=(resamples, len(keys)))
    d = ea[idx].sum(1) / ca[idx].sum(1) - eb[idx].sum(1) / cb[idx].sum(1)
    return ea.sum() / ca.sum() - eb.sum() / cb.sum(), np.percentile(d, 2.5), np.percentile(d, 97.5)


def fmt(x, ci=None, digits=3):
    if x is None:
        return "-"
    s = f"{x:.{digits}f}"
    return s + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/science"
    report, labels, timings, items = load(out)
    eg = report["exact_greedy"]
    by_dir = {}
    for d in eg["drafters"]:
        by_dir.setdefault(d.get("dir", ""), {})[d["kind"]] = d
    sampling = {s["name"]: s["points"][0] for s in report.get("sampling", {}).get("drafters", []) if s["points"]}
    rows = []  # (label, report drafter, distill run, starting checkpoint?)
    lookup = next(d for d in eg["drafters"] if d["kind"] == "prompt-lookup")
    rows.append(("prompt lookup (no model)", lookup, "", False))
    for label, path, run in labels:
        entry = by_dir.get(path) or by_dir.get(os.path.abspath(path)) or {}
        if "model" in entry:
            rows.append((label, entry["model"], run, label == "pretrained"))
        if "hybrid" in entry:
            rows.append((label + " + lookup", entry["hybrid"], "", False))

    def point(d, g):
        return next(p for p in d["points"] if p["gamma"] == g)

    gammas = sorted(p["gamma"] for p in rows[1][1]["points"])
    n_turns = eg["items"]
    s_turns = report.get("sampling", {}).get("turns", 0)
    print(f"## Science run: {n_turns} MT-bench turns x {report['max_new_tokens']} tokens, exact greedy tau; "
          f"95% bootstrap intervals over turns\n")
    head = ["drafter", "held-out alpha", f"MT-bench alpha (T=1, {s_turns} turns)"] + [f"tau({g})" for g in gammas]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, d, run, first in rows:
        s = sampling.get(d["name"])
        cells = [label, fmt(held_out_alpha(run, first)), fmt(s["alpha"], s["alpha_ci"]) if s else "-"]
        for g in gammas:
            p = point(d, g)
            cells.append(fmt(p["tau"], p["tau_ci"]) if g == GAMMA else fmt(p["tau"]))
        print("| " + " | ".join(cells) + " |")

    name = {label: d["name"] for label, d, _, _ in rows}
    by_label = {label: (d, run) for label, d, run, _ in rows}

    def tau4(label):
        return point(by_label[label][0], GAMMA)["tau"]

    kd = [l for l in ("FKL", "TVD", "TVD++", "TVD++ +60 online", "TVD++ +60 on-policy") if l in name]
    best = max(kd, key=tau4) if kd else None
    print("\n## The issue's targets\n")
    if best:
        bd, run = by_label[best]
        a = held_out_alpha(run)
        t4 = point(bd, GAMMA)
        print(f"- best KD drafter by tau(4): {best}, held-out alpha {fmt(a)} (target >= 0.45: "
              f"{'reached' if a is not None and a >= 0.45 else 'not reached'}), tau(4) {fmt(t4['tau'], t4['tau_ci'])} "
              f"(target >= 1.8: {'reached' if t4['tau'] >= 1.8 else 'not reached'})")
        pre = point(by_label["pretrained"][0], GAMMA)
        ratio = t4["tau"] / pre["tau"] - 1
        sep = t4["tau_ci"][0] > pre["tau_ci"][1]
        d = paired(items, name[best], name["pretrained"])
        print(f"- KD over pretrained-only on tau(4): {100 * ratio:+.1f}% (target +30%: "
              f"{'reached' if ratio >= 0.3 else 'not reached'}); intervals {'separate' if sep else 'overlap'}; "
              f"paired difference {fmt(d[0], d[1:])}")
        lk = point(lookup, GAMMA)
        diff = paired(items, name[best], lookup["name"])
        print(f"- {best} against prompt lookup on tau(4): {fmt(diff[0], diff[1:])} "
              f"({'better' if diff[1] > 0 else 'worse' if diff[2] < 0 else 'not separated'}; lookup "
              f"{fmt(lk['tau'], lk['tau_ci'])})")
        hy = [x for x, _, _, _ in rows if x.endswith("+ lookup")]
        if hy:
            hb = max(hy, key=tau4)
            diff = paired(items, name[hb], lookup["name"])
            print(f"- best hybrid, {hb}, against prompt lookup on tau(4): {fmt(diff[0], diff[1:])}")

    ablation = [("target prompts (magpie half of the prompts)", "TVD++", "TVD++, Debian prompts only"),
                ("corpus (code + technical text)", "TVD++", "TVD++, first demo's corpus"),
                ("initialisation (target-svd)", "TVD++", "TVD++, normal init"),
                ("on-policy (lambda 0.5, 60 steps)", "TVD++ +60 on-policy", "TVD++ +60 online"),
                ("hybrid (lookup, then the drafter)", "TVD++ + lookup", "TVD++"),
                ("more distillation (2x prompts, 2x steps)", "TVD++, 2x distillation", "TVD++"),
                ("more pretraining (2x steps)", "TVD++, 2x pretraining", "TVD++")]
    present = [(lever, a, b) for lever, a, b in ablation if a in name and b in name]
    if present:
        print(f"\n## Ablation: each lever's effect on tau({GAMMA}), paired over the same turns\n")
        print("| lever | with | without | tau(4) difference [95%] | separated |")
        print("|---|---|---|---|---|")
        for lever, a, b in present:
            d = paired(items, name[a], name[b])
            print(f"| {lever} | {a} | {b} | {fmt(d[0], d[1:])} | {'yes' if d[1] > 0 or d[2] < 0 else 'no'} |")
    print("\n## Minutes per stage (this machine)\n")
    print("| stage | minutes |\n|---|---|")
    for stage, minutes in timings:
        print(f"| {stage} | {minutes} |")
    total = sum(float(m) for _, m in timings)
    print(f"| total | {total:.1f} |")


if __name__ == "__main__":
    main()
