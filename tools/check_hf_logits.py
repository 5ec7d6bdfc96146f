#!/usr/bin/env python3
"""Loads an HF checkpoint directory with transformers and compares its logits with expected ones.

GOLDEN is a safetensors file with "tokens" [B, T] (int64) and "logits" [B, T, vocab]. Exit 0 when
max |transformers - expected| <= --atol, 1 otherwise (the difference is printed either way). The export tests use it
to prove that a drafter draftalign wrote opens in transformers and computes the same function.

Usage: python tools/check_hf_logits.py DIR GOLDEN [--atol 1e-4]
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("golden")
    ap.add_argument("--atol", type=float, default=1e-4)
    args = ap.parse_args()
    golden = load_file(args.golden)
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(golden["tokens"]).logits.float()
    diff = (logits - golden["logits"].float()).abs().max().item()
    print(f"{args.dir}: {type(model).__name__}, max |transformers - expected| = {diff:.3g}")
    sys.exit(0 if diff <= args.atol else 1)


if __name__ == "__main__":
    main()
