"""Times y = x W^T for 1..8 rows of x on the CPU, two ways side by side: torch.nn.functional.linear (BLAS GEMM, the
GEMV for one row) and (W x^T)^T, the form src/model/llama.cpp uses for 2..8 rows without gradients (a speculative
verification block, a small decode batch). Shapes: SmolLM2-135M's projections and head, the demo drafter's head.

Usage: .venv/bin/python bench/small_gemm.py [--threads 2] [--trials 3]
"""
import argparse
import time

import torch

SHAPES = {  # name: (out, in)
    "target q/o proj 576x576": (576, 576),
    "target gate/up 1536x576": (1536, 576),
    "target down 576x1536": (576, 1536),
    "target head 49152x576": (49152, 576),
    "drafter head 49152x256": (49152, 256),
}


def best_ms(f, x, weights, trials):
    for w in weights:
        f(x, w)
    best = float("inf")
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(5):
            for w in weights:
                f(x, w)
        best = min(best, (time.perf_counter() - t) / 5 / len(weights) * 1e3)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    linear = lambda x, w: torch.nn.functional.linear(x, w)
    transposed = lambda x, w: torch.mm(w, x.t()).t().contiguous()
    rows = range(1, 9)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32; ms per product (best of {args.trials})\n")
    print("| shape | form | " + " | ".join(f"{m} rows" for m in rows) + " |")
    print("|---|---|" + "---:|" * len(rows))
    for name, (n, k) in SHAPES.items():
        # Enough distinct weights that they do not stay in the caches between calls, as in a forward pass.
        weights = [torch.randn(n, k) for _ in range(max(1, (64 << 20) // (n * k * 4)))]
        for form, f in (("linear", linear), ("W x^T", transposed)):
            ms = [best_ms(f, torch.randn(m, k), weights, args.trials) for m in rows]
            print(f"| {name} | {form} | " + " | ".join(f"{v:.3f}" for v in ms) + " |")


if __name__ == "__main__":
    main()
