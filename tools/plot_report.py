#!/usr/bin/env python3
"""Plots of a `draftalign evaluate` report (report.json): the exact greedy block efficiency tau vs the draft length
gamma with its 95% intervals (one line per drafter, prompt lookup included), from the timed runs the acceptance by
draft position and the wall-clock speed-up vs gamma with its interval, one panel per sampling temperature, and for the
drafters that come from a training run their training curves: loss vs step (training_loss.png) and held-out alpha
vs step (heldout_alpha.png).

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
    if not temps:  # no timed runs
        return None
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

    def with_interval(ax, name, points, value, ci):
        xs = [p["gamma"] for p in points]
        ys = [p[value] for p in points]
        lo = [y - p[ci][0] for y, p in zip(ys, points)]
        hi = [p[ci][1] - y for y, p in zip(ys, points)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        ax.set_xlabel("draft length gamma")

    def speedup(ax, name, points):
        with_interval(ax, name, points, "speedup", "speedup_ci")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")

    def exact_tau():
        out = os.path.join(here, "tau_vs_gamma.png")
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for d in report["exact_greedy"]["drafters"]:
            if "seed" in d:  # one training seed of a method whose combined row is drawn
                continue
            with_interval(ax, d["name"], sorted(d["points"], key=lambda p: p["gamma"]), "tau", "tau_ci")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("tau")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ex = report["exact_greedy"]
        ax.set_title(f"Exact greedy tau, {ex['items']} turns in {ex.get('clusters', ex['items'])} clusters (95% intervals)",
                     fontsize=10)
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
        return out

    def training_plots():
        curves = report.get("training_curves", [])
        if not curves:
            return []
        # One panel per run: pretraining's next-token loss and a distillation loss are not on one scale.
        out = os.path.join(here, "training_loss.png")
        cols = min(3, len(curves))
        rows = (len(curves) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
        for ax, c in zip(axes.flat, curves):
            ax.plot(c["train"]["step"], c["train"]["loss"], label="training")
            v = c["validation"]
            if "val_loss" in v:
                pts = [(s, y) for s, y in zip(v["step"], v["val_loss"]) if y is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", marker="o", label="held-out")
                ax.legend(fontsize=8)
            ax.set_title(c["name"], fontsize=10)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(curves):]:
            ax.set_visible(False)
        fig.suptitle("Training loss of each drafter's run (its own objective)")
        fig.tight_layout()
        fig.savefig(out, dpi=120)
        plt.close(fig)
        made = [out]
        with_alpha = [c for c in curves if "val_alpha" in c["validation"]]
        if with_alpha:
            out = os.path.join(here, "heldout_alpha.png")
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            for c in with_alpha:
                v = c["validation"]
                pts = [(s, y) for s, y in zip(v["step"], v["val_alpha"]) if y is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c["name"])
            ax.set_xlabel("step")
            ax.set_ylabel("held-out alpha")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title("Held-out alpha against the target while distilling")
            fig.tight_layout()
            fig.savefig(out, dpi=120)
            plt.close(fig)
            made.append(out)
        return made

    made = [
        panels(report, "Acceptance rate by draft position (vLLM: accepted at i / drafts)", "acceptance rate",
               acceptance, os.path.join(here, "acceptance_by_position.png")),
        exact_tau(),
        panels(report, f"Wall-clock speed-up over plain decoding ({report['environment']['device_name']})",
               "speed-up (95% interval)", speedup,
               os.path.join(here, "speedup_vs_gamma.png")),
    ] + training_plots()
    for m in made:
        if m:
            print(m)


if __name__ == "__main__":
    main()
