#!/usr/bin/env python3
"""Generation throughput, draftalign next to transformers' generate, on the same checkpoint and prompts, in one run.

Greedy decoding of the first n training prompts (.cache/prompts/train.jsonl), rendered with the model's chat template,
at batch 1, 16 and 64. Ours (build/bench/bench_generate) decodes with continuous batching: a finished sequence is
replaced at once; it runs twice, with and without prefix sharing (the prompts' common prefix, the chat template's
system prompt, prefilled once). transformers decodes static batches of the prompts, left-padded, until every row of the batch is
done. Both count the tokens of each response up to and including its end token, and time the decoding only (model
loading and a warm-up excluded); fp32 on CPU, bf16 on CUDA; the same threads. Also reported: how many responses are
token-for-token identical between the two (greedy decoding of the same model should agree but for floating-point
differences between batch shapes and padding).

Usage: .venv/bin/python bench/generate_vs_hf.py [--model .cache/models/SmolLM2-135M-Instruct] [--device cpu|cuda]
                                                [--max-new N] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prompts(path, n):
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["instruction"])
            if len(out) == n:
                break
    return out


def hf_generate(model_dir, texts, batch, max_new, device):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    eos = tok.convert_tokens_to_ids(tok.eos_token)
    rendered = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
                for t in texts]

    def run(chunk, new):
        enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=eos)
        rows = []
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            resp = []
            for t in row:
                resp.append(t)
                if t == eos:
                    break
            rows.append(resp)
        return rows

    run(rendered[:1], 4)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    responses = []
    for i in range(0, len(rendered), batch):
        responses += run(rendered[i:i + batch], max_new)
    if device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t
    tokens = sum(map(len, responses))
    return {"impl": "transformers generate (static batches)", "tokens": tokens, "seconds": secs,
            "tokens_per_s": tokens / secs, "responses": responses}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, ".cache/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--prompts", default=os.path.join(ROOT, ".cache/prompts/train.jsonl"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-new", type=int, default=None)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--bin", default=os.path.join(ROOT, os.environ.get("DRAFTALIGN_BUILD_DIR", "build"), "bench",
                                                   "bench_generate"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    gpu = args.device == "cuda"
    max_new = args.max_new or (128 if gpu else 32)
    torch.set_num_threads(os.cpu_count())
    dev_name = torch.cuda.get_device_name() if gpu else f"CPU, {os.cpu_count()} cores"
    print(f"device: {dev_name}; {os.path.basename(args.model)}, {'bf16' if gpu else 'fp32'}, greedy, "
          f"at most {max_new} new tokens; torch {torch.__version__}")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        n = max(batch, 4 if batch == 1 and not gpu else batch)
        texts = prompts(args.prompts, n)
        def run_ours(share_prefix):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "r.json")
                subprocess.run([args.bin, "--model", args.model, "--prompts", args.prompts, "--n", str(n), "--batch",
                                str(batch), "--max-new", str(max_new), "--device", args.device, "--share-prefix",
                                str(share_prefix), "--out", out], check=True)
                return json.load(open(out))
        ours, unshared = run_ours(1), run_ours(0)
        ref = hf_generate(args.model, texts, batch, max_new, args.device)
        same = sum(a == b for a, b in zip(ours["responses"], ref["responses"]))
        rows.append({"batch": batch, "prompts": n, "ours": ours, "ours_unshared": unshared, "hf": ref,
                     "identical": same})

    print()
    print("| batch | prompts | shared prefix | draftalign tokens/s | without prefix sharing | transformers tokens/s | "
          "ratio | ratio without sharing | tokens (ours / hf) | identical responses |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        o, u, h = r["ours"], r["ours_unshared"], r["hf"]
        print(f"| {r['batch']} | {r['prompts']} | {o['shared_prefix']} | {o['tokens_per_s']:.1f} | "
              f"{u['tokens_per_s']:.1f} | {h['tokens_per_s']:.1f} | {o['tokens_per_s'] / h['tokens_per_s']:.2f}x | "
              f"{u['tokens_per_s'] / h['tokens_per_s']:.2f}x | {o['tokens']} / {h['tokens']} | "
              f"{r['identical']} / {r['prompts']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": dev_name, "max_new": max_new, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
