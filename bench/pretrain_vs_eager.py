#!/usr/bin/env python3
"""Pretraining throughput, draftalign (LibTorch C++) next to PyTorch eager Python, in one run.

For each drafter shape, one optimizer step (forward, cross-entropy, backward, clip, AdamW) on random tokens is timed
in build/bench/bench_pretrain and in the same model built with transformers' LlamaForCausalLM (sdpa attention) and
torch.optim.AdamW (its default, and fused=True), from the same venv's torch, on the same device, with the same threads, batch and sequence length.
MFU is against the device's measured matmul throughput (fp32 on CPU, bf16 on CUDA), measured here in the same run.

Usage: .venv/bin/python bench/pretrain_vs_eager.py [--device cpu|cuda] [--steps N] [--json out.json]
Shapes: configs/drafter-llama2-115m.yaml (the paper's 115M drafter, vocab 32000) and the demo drafter (SmolLM2's
49152-token vocabulary, the embedded default).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [("115M drafter (Llama-2 vocab)", "configs/drafter-llama2-115m.yaml"), ("demo drafter (SmolLM2 vocab)", "")]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device):
    """Measured dense matmul FLOP/s: fp32 on CPU, bf16 on CUDA (the MFU denominator)."""
    n, dtype, iters = (2048, torch.float32, 10) if device == "cpu" else (8192, torch.bfloat16, 50)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - t)


def flops_per_token(cfg, seq):
    """6 x (matmul parameters incl. the output projection) + causal attention, forward and backward."""
    h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * cfg["intermediate_size"]
    matmul_params = layers * per_layer + cfg["vocab_size"] * h
    return 6 * matmul_params + 6 * layers * seq * q


def eager(cfg, device, batch, seq, steps, warmup, fused=False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).to(device)
    model.train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, fused=fused or None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, fwd, bwd, upd = [], [], [], []
    for s in range(warmup + steps):
        tokens = torch.randint(cfg["vocab_size"], (batch, seq + 1)).to(device)
        sync(device)
        t = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            logits = model(input_ids=tokens[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tokens[:, 1:].reshape(-1))
        sync(device)
        t1 = time.perf_counter()
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        if s >= warmup:
            t3 = time.perf_counter()
            times.append(t3 - t)
            fwd.append(t1 - t)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
    step_s = statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"impl": "PyTorch eager (transformers LlamaForCausalLM)" + (", fused AdamW" if fused else ""),
            "step_s": step_s,
            "forward_s": statistics.median(fwd), "backward_s": statistics.median(bwd),
            "optimizer_s": statistics.median(upd),
            "tokens_per_s": batch * seq / step_s, "peak_bytes": peak,
            "params": sum(p.numel() for p in model.parameters())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--seq", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--bin", default=os.path.join(ROOT, os.environ.get("DRAFTALIGN_BUILD_DIR", "build"),
                                                   "bench", "bench_pretrain"))
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two implementations this many times; "
                    "each reports its best round (the machine's noise hits both alike)")
    ap.add_argument("--eager-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.eager_worker:  # one eager measurement in a fresh process, so its peak memory is its own
        job = json.load(open(args.eager_worker))
        torch.set_num_threads(os.cpu_count())
        print(json.dumps(eager(job["cfg"], job["device"], job["batch"], job["seq"], job["steps"], job["warmup"],
                               job["fused"])))
        return 0
    gpu = args.device == "cuda"
    batch = args.batch or (16 if gpu else 2)
    seq = args.seq or (1024 if gpu else 256)  # the demo drafter holds 1024 positions
    steps = args.steps or (10 if gpu else 4)
    warmup = args.warmup or (3 if gpu else 1)
    torch.set_num_threads(os.cpu_count())

    peak = matmul_peak(args.device)
    dev_name = torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores"
    print(f"device: {dev_name}; measured matmul peak {peak / 1e9:.1f} GFLOP/s ({'bf16' if gpu else 'fp32'}); "
          f"batch {batch} x seq {seq}, median of {steps} steps after {warmup} warm-up; torch {torch.__version__}")
    results = []
    for name, config in SHAPES:
        ours_runs, eager_runs, fused_runs = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.rounds):
                out = os.path.join(tmp, "r.json")
                cmd = [args.bin, "--batch", str(batch), "--seq", str(seq), "--steps", str(steps), "--warmup",
                       str(warmup), "--device", args.device, "--out", out]
                if config:
                    cmd += ["--config", os.path.join(ROOT, config)]
                subprocess.run(cmd, check=True)
                ours_runs.append(json.load(open(out)))
                cfg = {k: v for k, v in ours_runs[-1]["hf_config"].items()
                       if k not in ("architectures", "model_type", "torch_dtype", "dtype")}
                for fused, runs in ((False, eager_runs), (True, fused_runs)):
                    job = os.path.join(tmp, "job.json")
                    json.dump({"cfg": cfg, "device": args.device, "batch": batch, "seq": seq, "steps": steps,
                               "warmup": warmup, "fused": fused}, open(job, "w"))
                    worker = subprocess.run([sys.executable, os.path.abspath(__file__), "--eager-worker", job],
                                            check=True, capture_output=True, text=True)
                    runs.append(json.loads(worker.stdout.strip().splitlines()[-1]))
        ours = min(ours_runs, key=lambda r: r["step_s"])
        ref = min(eager_runs, key=lambda r: r["step_s"])
        ref_fused = min(fused_runs, key=lambda r: r["step_s"])
        ours.pop("hf_config")
        fpt = flops_per_token(cfg, seq)
        for r in (ours, ref, ref_fused):
            r["mfu"] = r["tokens_per_s"] * fpt / peak
        results.append({"shape": name, "config": config or "(embedded demo)", "flops_per_token": fpt,
                        "ours": ours, "eager": ref, "eager_fused": ref_fused})

    print()
    print("step time, median (forward / backward / clip + optimizer):")
    print()
    print("| shape | params | draftalign | eager, default AdamW | eager, fused AdamW |")
    print("|---|---|---|---|---|")
    split = lambda r: (f"{r['step_s']:.3f} s ({r['forward_s']:.3f} / {r['backward_s']:.3f} / "
                       f"{r['optimizer_s']:.3f})")
    for r in results:
        print(f"| {r['shape']} | {r['ours']['params'] / 1e6:.1f}M | {split(r['ours'])} | {split(r['eager'])} | "
              f"{split(r['eager_fused'])} |")
    print()
    print("| shape | draftalign tok/s | eager tok/s (default / fused AdamW) | draftalign / eager | draftalign MFU | "
          "eager MFU (default / fused) | draftalign peak mem | eager peak mem |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        o, e, f = r["ours"], r["eager"], r["eager_fused"]
        print(f"| {r['shape']} | {o['tokens_per_s']:.0f} | {e['tokens_per_s']:.0f} / {f['tokens_per_s']:.0f} | "
              f"{o['tokens_per_s'] / e['tokens_per_s']:.2f}x / {o['tokens_per_s'] / f['tokens_per_s']:.2f}x | "
              f"{100 * o['mfu']:.1f}% | {100 * e['mfu']:.1f}% / {100 * f['mfu']:.1f}% | "
              f"{o['peak_bytes'] / 2**30:.2f} GiB | {e['peak_bytes'] / 2**30:.2f} GiB |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev_name, "matmul_peak_flops": peak, "batch": batch, "seq": seq, "results": results},
                      f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
