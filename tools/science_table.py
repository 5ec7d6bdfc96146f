#!/usr/bin/env python3
"""The science run's table (tools/science.sh): every drafter's held-out alpha, MT-bench alpha and exact greedy tau,
the paper-scale targets checked, and the report's declared contrasts (the levers among them) as they stand after
Holm's correction.

Reads <out>/drafters.tsv (label, report row, distill run directory), <out>/timings.tsv (stage, minutes),
<out>/report/report.json (from `draftalign evaluate`) and each distill run's seed-<n>/metrics.jsonl. Every interval and
every "better" comes from the report: tau's intervals resample the 80 questions (both turns together) and, for a
method trained with several seeds, the seeds too; the contrasts are one family, Holm-corrected, with intervals at the
Bonferroni level. This script computes no statistic of its own beyond means over seeds of held-out alpha.
Usage: python tools/science_table.py runs/science
"""
import glob
import json
import os
import sys

GAMMA = 4


def load(out):
    report = json.load(open(os.path.join(out, "report", "report.json")))
    labels = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "drafters.tsv")) if line.strip()]
    timings = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "timings.tsv")) if line.strip()]
    return report, labels, timings


def held_out_alpha(run):
    """The last val_alpha of each seed's run (seed-<n>/metrics.jsonl), or of the run itself: a list."""
    if not run:
        return []
    files = sorted(glob.glob(os.path.join(run, "seed-*", "metrics.jsonl"))) or [os.path.join(run, "metrics.jsonl")]
    out = []
    for path in files:
        if os.path.exists(path):
            vals = [json.loads(line) for line in open(path) if '"val_alpha"' in line]
            if vals:
                out.append(vals[-1]["val_alpha"])
    return out


def fmt(x, ci=None, digits=3):
    if x is None:
        return "-"
    s = f"{x:.{digits}f}"
    return s + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/science"
    report, labels, timings = load(out)
    eg = report["exact_greedy"]
    rows = {d["name"]: d for d in eg["drafters"]}
    sampling = {s["name"]: s["points"][0] for s in report.get("sampling", {}).get("drafters", []) if s["points"]}

    def point(d, g):
        return next(p for p in d["points"] if p["gamma"] == g)

    def mt_alpha(row):
        """MT-bench alpha at T = 1: the row's own sampling check, or the mean over its seeds' (one per seed)."""
        names = row.get("members", [row["name"]])
        vals = [sampling[n]["alpha"] for n in names if n in sampling]
        return sum(vals) / len(vals) if vals else None

    table = [("prompt lookup (no model)", rows["prompt-lookup"], "")]
    for label, name, run in labels:
        if name in rows:
            table.append((label, rows[name], run))
        if name + "+lookup" in rows:
            table.append((label + " + lookup", rows[name + "+lookup"], ""))
    gammas = sorted(p["gamma"] for p in table[1][1]["points"])
    s_turns = report.get("sampling", {}).get("turns", 0)
    print(f"## Science run: {eg['items']} MT-bench turns ({eg['clusters']} questions) x {report['max_new_tokens']} "
          f"tokens, exact greedy tau; 95% intervals over questions, and over training seeds for combined rows\n")
    head = ["drafter", "seeds", "held-out alpha (mean over seeds)", f"MT-bench alpha (T=1, {s_turns} turns)"] + \
        [f"tau({g})" for g in gammas]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for label, d, run in table:
        a = held_out_alpha(run)
        cells = [label, str(len(d["seeds"])) if "seeds" in d else "1" if d["kind"] != "prompt-lookup" else "-",
                 fmt(sum(a) / len(a)) + (f" ({min(a):.3f}-{max(a):.3f})" if len(a) > 1 else "") if a else "-",
                 fmt(mt_alpha(d))]
        for g in gammas:
            p = point(d, g)
            cells.append(fmt(p["tau"], p["tau_ci"]) if g == GAMMA else fmt(p["tau"]))
        print("| " + " | ".join(cells) + " |")

    family = eg["family"]
    print(f"\n## Declared contrasts on tau({family['gamma']}): {family['size']} comparisons, one family\n")
    print(f"{family['correction']}.\n")
    print("| drafter | versus | difference [95%] | corrected interval | p (Holm) | better? |")
    print("|---|---|---:|---:|---:|---|")
    for x in eg["differences"]:
        verdict = ("yes, " + (x["drafter"] if x["difference"] > 0 else x["versus"])) if x["significant"] else "not separated"
        print(f"| {x['drafter']} | {x['versus']} | {fmt(x['difference'], x['difference_ci'])} | "
              f"[{x['corrected_ci'][0]:.3f}, {x['corrected_ci'][1]:.3f}] | {x['p_holm']:.4f} | {verdict} |")

    kd = [(label, d, run) for label, d, run in table if label in ("FKL", "TVD", "TVD++")]
    if kd:
        print("\n## The paper-scale targets (not claims: the best of three is a selection)\n")
        label, d, run = max(kd, key=lambda t: point(t[1], GAMMA)["tau"])
        a = held_out_alpha(run)
        t4 = point(d, GAMMA)
        pre = point(rows["pretrain"], GAMMA)
        print(f"- best KD drafter by tau(4): {label}, held-out alpha {fmt(sum(a) / len(a) if a else None)} "
              f"(target >= 0.45: {'reached' if a and sum(a) / len(a) >= 0.45 else 'not reached'}), tau(4) "
              f"{fmt(t4['tau'], t4['tau_ci'])} (target >= 1.8: {'reached' if t4['tau'] >= 1.8 else 'not reached'})")
        print(f"- over pretrained-only on tau(4): {100 * (t4['tau'] / pre['tau'] - 1):+.1f}% (target +30%)")

    print("\n## Minutes per stage (this machine)\n")
    print("| stage | minutes |\n|---|---|")
    for stage, minutes in timings:
        print(f"| {stage} | {minutes} |")
    print(f"| total | {sum(float(m) for _, m in timings):.1f} |")


if __name__ == "__main__":
    main()
