#!/usr/bin/env python3
"""The summary table of tools/gpu.sh, read from the JSON the steps and benchmarks wrote into its log folder.

Usage: python3 tools/gpu_summary.py LOGDIR

LOGDIR (build-gpu/out) holds steps.jsonl (one line per step gpu.sh ran: step, rc, seconds, and what it knows: the
build time, the demo's report), the ctest JUnit files and the benchmarks' --out/--json results. A step that ran but
left no result says so and names its log; a step that did not run has no rows. Standard library only: the GPU
machine's Python is not the project's venv.
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET


def load(log, name):
    path = os.path.join(log, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ctest_result(log, name):
    """'N passed, M skipped, K failed of T' from a ctest --output-junit file; None when absent."""
    path = os.path.join(log, name)
    if not os.path.exists(path):
        return None
    cases = ET.parse(path).getroot().iter("testcase")
    status = [c.get("status", "run") for c in cases]
    failed = [c for c in status if c == "fail"]
    skipped = [c for c in status if c in ("notrun", "disabled", "skipped")]
    passed = len(status) - len(failed) - len(skipped)
    return f"{passed} passed, {len(skipped)} skipped, {len(failed)} failed of {len(status)}"


def run_rows(log, step):
    yield f"| build (sm_{step.get('archs', '?')}) | {step.get('build_s', '?')} s |"
    for name, what in (("ctest-gpu.xml", "ctest -L gpu"),
                       ("ctest-distill.xml", "distill / evaluate / pipeline tests on the GPU")):
        yield f"| {what} | {ctest_result(log, name) or 'no result: see ' + name.replace('.xml', '.log')} |"
    copy = load(log, "bench_copy.json")
    yield ("| copy bandwidth | " + (f"{copy['torch_gbps']:.0f} GB/s (Tensor::copy_), kernels/copy.cu "
                                    f"{copy['kernel_gbps'] / copy['torch_gbps']:.3f}x" if copy
                                    else "no result: see bench_copy.txt") + " |")
    pretrain = load(log, "bench_pretrain.json")
    if pretrain is None:
        yield "| pretrain step vs eager | no result: see bench_pretrain.txt |"
    for r in (pretrain or {}).get("results", []):
        o, e, f = r["ours"], r["eager"], r["eager_fused"]
        yield (f"| pretrain {r['shape']} | {o['tokens_per_s']:.0f} tok/s, {o['tokens_per_s'] / e['tokens_per_s']:.2f}x "
               f"eager ({o['tokens_per_s'] / f['tokens_per_s']:.2f}x with fused AdamW), MFU {100 * o['mfu']:.1f}% |")
    tvd = load(log, "bench_tvd.json")
    if tvd is None:
        yield "| tvd kernel | no result: see bench_tvd.txt |"
    for r in (tvd or {}).get("rows", []):
        best = min(r["kernel_auto_ms"], r["kernel_stream_ms"])
        yield (f"| tvd kernel {r['rows']} x {r['vocab']} {r['dtype']} {r['loss']} | {best:.3f} ms vs composite "
               f"{r['composite_ms']:.3f} ms, {r['composite_ms'] / best:.1f}x, {r['kernel_gbps']:.0f} GB/s |")


    fused = load(log, "bench_fused_head.json")
    if fused is None:
        yield "| fused head + loss | no result: see bench_fused_head.txt |"
    for r in (fused or {}).get("rows", []):
        if "time_ratio" not in r:
            yield f"| fused head {r['objective']} V={r['vocab']} | failed: see bench_fused_head.txt |"
            continue
        u, f = r["unfused"], r["fused"]
        yield (f"| fused head {r['objective']} N={fused['tokens']} V={r['vocab']} | {f['ms']:.1f} ms vs "
               f"{u['ms']:.1f} ms ({r['time_ratio']:.2f}x time), peak {f['peak_mib']:.0f} vs {u['peak_mib']:.0f} MiB "
               f"({r['memory_ratio']:.3f}x memory) |")


def target_rows(log, step):
    gen = load(log, "generate_vs_hf.json")
    if gen is None:
        yield "| generate vs transformers | no result: see generate_vs_hf.txt |"
    for r in (gen or {}).get("rows", []):
        o, u, h = r["ours"]["tokens_per_s"], r["ours_unshared"]["tokens_per_s"], r["hf"]["tokens_per_s"]
        yield (f"| generate, batch {r['batch']} ({r['prompts']} prompts) | ours {o:.1f} tokens/s vs transformers "
               f"{h:.1f} ({o / h:.2f}x; {u / h:.2f}x without prefix sharing); identical {r['identical']} / "
               f"{r['prompts']} |")


def demo_rows(log, step):
    if step["rc"] == 124:
        yield f"| demo pipeline | not finished in this call ({step['seconds']} s): run 'bash tools/gpu.sh demo' again |"
        return
    if step["rc"] != 0 or not os.path.exists(step.get("report", "")):
        yield f"| demo pipeline | failed (exit {step['rc']} after {step['seconds']} s): see pipeline.log |"
        return
    yield f"| demo pipeline | finished ({step['seconds']} s in this call; stage times in pipeline.log) |"
    with open(step["report"]) as f:
        r = json.load(f)
    ex = r["exact_greedy"]
    yield (f"| demo report | exact greedy tau over {ex['items']} MT-bench turns x {r['max_new_tokens']} tokens; "
           f"timed: {r['timed']['prompts']} turns, median of {r['timed']['repeats']} alternated runs |")
    for d in ex["drafters"]:
        taus = " ".join(f"{p['tau']:.2f} [{p['tau_ci'][0]:.2f}, {p['tau_ci'][1]:.2f}]" for p in d["points"])
        yield f"| {d['name']} exact greedy tau | {taus} |"
    for d in r["drafters"]:
        for t in sorted({p["temperature"] for p in d["points"]}):
            best = max((p for p in d["points"] if p["temperature"] == t), key=lambda p: p["speedup"])
            yield (f"| {d['name']} T={t:g} timed | best speed-up {best['speedup']:.2f}x "
                   f"[{best['speedup_ci'][0]:.2f}, {best['speedup_ci'][1]:.2f}] at g={best['gamma']} "
                   f"(bound {best['speedup_bound']:.2f}) |")
    spec = load(log, "bench_speculative.json")
    if spec is None:
        yield "| bench_speculative | no result: see bench_speculative.txt |"
    for b in (spec or {}).get("rows", []):
        one = spec["rows"][0]["target_s"]
        yield (f"| spec. step cost, block {b['block']} | target {1e3 * b['target_s']:.2f} ms "
               f"({b['target_s'] / one:.2f}x of one token), break-even tau {b['break_even_tau']:.2f} |")


ROWS = {"run": run_rows, "target": target_rows, "demo": demo_rows}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[2])
    log = sys.argv[1]
    steps = {}  # the latest record of each step
    if os.path.exists(os.path.join(log, "steps.jsonl")):
        with open(os.path.join(log, "steps.jsonl")) as f:
            for line in f:
                if line.strip():
                    s = json.loads(line)
                    steps[s["step"]] = s
    device = "device not recorded"
    if os.path.exists(os.path.join(log, "device.txt")):
        device = open(os.path.join(log, "device.txt")).read().strip()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    print(f"\n## summary ({device}; commit {commit})")
    print("| step | result |")
    print("|---|---|")
    for name, rows in ROWS.items():
        if name in steps:
            for row in rows(log, steps[name]):
                print(row)


if __name__ == "__main__":
    main()
