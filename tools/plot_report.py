#!/usr/bin/env python3
"""Plots of a `draftalign evaluate` report (report.json): acceptance by draft position, block efficiency tau vs the
draft length gamma, and the wall-clock speed-up vs gamma, one panel per sampling temperature and one line per drafter.

    python plot_report.py REPORT_DIR/report.json     # writes the PNGs next to report.json

`draftalign evaluate` writes this script into each report directory and runs it; it needs matplotlib.
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def temperature_label(t):
    return "greedy (T = 0)" if t == 0 else f"T = {t:g}"


def panels(report, title, ylabel, fill, out):
    temps = sorted({p["temperature"] for d in report["drafters"] for p in d["points"]})
    fig, axes = plt.subplots(1, len(temps), figsize=(5 * len(temps), 3.8), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], temps):
        for d in report["drafters"]:
            points = sorted((p for p in d["points"] if p["temperature"] == t), key=lambda p: p["gamma"])
            if points:
                fill(ax, d["name"], points)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(temperature_label(t))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main():
    path = sys.argv[1]
    with open(path) as f:
        report = json.load(f)
    here = os.path.dirname(os.path.abspath(path))

    def acceptance(ax, name, points):
        p = points[-1]  # the longest draft: every position
        rates = p["metrics"]["acceptance_rate_per_pos"]
        ax.plot(range(1, len(rates) + 1), rates, marker="o", label=f"{name} (gamma {p['gamma']})")
        ax.set_xlabel("draft position")
        ax.set_ylim(0, 1.02)

    def tau(ax, name, points):
        ax.plot([p["gamma"] for p in points], [p["metrics"]["block_efficiency"] for p in points], marker="o",
                label=name)
        ax.set_xlabel("draft length gamma")

    def speedup(ax, name, points):
        ax.plot([p["gamma"] for p in points], [p["speedup"] for p in points], marker="o", label=name)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("draft length gamma")

    made = [
        panels(report, "Acceptance rate by draft position (vLLM: accepted at i / drafts)", "acceptance rate",
               acceptance, os.path.join(here, "acceptance_by_position.png")),
        panels(report, "Block efficiency tau (tokens per target call)", "tau", tau,
               os.path.join(here, "tau_vs_gamma.png")),
        panels(report, f"Wall-clock speed-up over the target alone ({report['device']})", "speed-up", speedup,
               os.path.join(here, "speedup_vs_gamma.png")),
    ]
    for m in made:
        print(m)


if __name__ == "__main__":
    main()
