#!/usr/bin/env python3
"""The bad-input sweep: mutate valid inputs and run the draftalign CLI on each.

A tiny world is made first with the binary itself (a corpus and prompts, prepare-data, a 1-layer pretrain whose final
directory then serves as the target, generate, distill, evaluate), so every input below is a real file the program
wrote or reads. Then, for each mutation, one input is copied into a fresh run directory, mutated (bytes flipped,
truncated, a range deleted or repeated; for JSON, JSONL and YAML also a key dropped, a value's type changed, a value
made huge or negative), and the command that reads it runs with a time limit. Every run must:
  - exit with 0 or 1 (no signal, no other code) within the time limit (no hang);
  - print exactly one line starting with "error:" when it exits 1, none when it exits 0;
  - leave no temporary file or directory behind (the atomic writer's *.tmp-<pid>), and not touch the world.
Prints a table (runs, exits 0 and 1, violations per input) and exits 1 when any run broke a rule, listing the first
ones with the mutation and the output (the mutated file is kept under --keep DIR).

  python tools/mutation_sweep.py --bin build/draftalign --tokenizer .cache/models/SmolLM2-135M-Instruct --mutations 300
(ctest's BadInputSweep runs 110, BadInputSweepFull 300 with --seed 1; thousands on demand, e.g. --mutations 5000)
"""
import argparse
import concurrent.futures
import copy
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

WORDS = "the cat sat on a mat and dog ran to house red big".split()


# Every stage's outputs, as config keys: a run writes all of them under its own directory.
OUTPUTS = ["run.output_dir", "prepare.output_dir", "pretrain.output_dir", "generate.output_dir", "distill.output_dir",
           "evaluate.report_dir"]


def world_config(w, target, out):
    """The YAML of every stage on the tiny world: `target` answers, everything is written under `out`."""
    return f"""# draftalign bad-input sweep
run: {{output_dir: "{out}", threads: 1, log_every: 5}}
target: {{dir: "{target}"}}
prepare: {{inputs: ["{w}/corpus.jsonl"], output_dir: "{out}/shards", val_fraction: 0.05}}
pretrain:
  data_dir: "{out}/shards"
  output_dir: "{out}/pretrain"
  embedding_init: normal
  model: {{hidden_size: 32, intermediate_size: 64, num_layers: 1, num_heads: 4, num_kv_heads: 2, max_seq_len: 128}}
  train: {{steps: 2, seq_len: 32, micro_batch_size: 2, eval_every: 0, eval_batches: 1, save_every: 1,
          optim: {{lr: 0.01, min_lr: 0.001, warmup_steps: 1}}}}
generate: {{prompts: ["{w}/prompts.jsonl"], output_dir: "{out}/generate", max_new_tokens: 8, batch_size: 4,
           max_prompts: 0, shard_size: 4, topk_logprobs: 4}}
distill:
  data_dir: "{out}/generate"
  student: "{w}/drafter"
  output_dir: "{out}/distill"
  train: {{steps: 1, seq_len: 32, micro_batch_size: 2, eval_every: 0, eval_batches: 1, save_every: 0,
          optim: {{lr: 0.001, min_lr: 0.0001, warmup_steps: 1}}}}
evaluate: {{drafters: ["{w}/drafter"], prompts: ["{w}/prompts.jsonl"], report_dir: "{out}/report", hybrid: false,
           gammas: [1], temperatures: [0], max_new_tokens: 4, max_prompts: 2, repeats: 1, timed_prompts: 1,
           timed_max_new_tokens: 4, python: "off"}}
"""


def run(binary, args, timeout, cwd=None):
    t0 = time.time()
    try:
        p = subprocess.run([binary] + args, capture_output=True, text=True, errors="replace", timeout=timeout,
                           cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS="1"))
        return p.returncode, p.stdout + p.stderr, time.time() - t0
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        return None, out, time.time() - t0


def make_world(w, binary, tokenizer_dir):
    """Builds the world in `w`; returns the file -> checksum map that the runs must leave alone."""
    rng = random.Random(0)
    with open(f"{w}/corpus.jsonl", "w") as f:
        for i in range(120):
            text = " ".join(WORDS[(i * 7 + k * k) % len(WORDS)] + ("." if k % 9 == 8 else "") for k in range(20 + i % 30))
            f.write(json.dumps({"text": text}) + "\n")
    shapes = [lambda i: {"instruction": f"Write a line about the number {i}.", "input": "cats"},
              lambda i: {"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": f"Count to {i}."}]},
              lambda i: {"conversations": [{"from": "human", "value": f"Name {i} colours."}]},
              lambda i: {"turns": [f"Say {i}.", "Now say it again."], "question_id": i, "category": "writing"},
              lambda i: {"prompt": f"Tell me about dogs, {i} words."}]
    with open(f"{w}/prompts.jsonl", "w") as f:
        for i in range(8):
            f.write(json.dumps(shapes[i % len(shapes)](i)) + "\n")
    # The drafter: prepare-data and pretrain with the tokenizer's own model as the target (only its tokenizer is
    # read); its final directory is then both the tiny target and the student.
    with open(f"{w}/bootstrap.yaml", "w") as f:
        f.write(world_config(w, tokenizer_dir, f"{w}/boot"))
    for cmd in ("prepare-data", "pretrain"):
        rc, out, _ = run(binary, [cmd, "--config", f"{w}/bootstrap.yaml"], 600)
        if rc != 0:
            sys.exit(f"mutation_sweep: the world's {cmd} failed (exit {rc}):\n{out[-3000:]}")
    shutil.copytree(f"{w}/boot/pretrain/final", f"{w}/drafter")
    with open(f"{w}/world.yaml", "w") as f:
        f.write(world_config(w, f"{w}/drafter", f"{w}/out"))
    for cmd in ("prepare-data", "pretrain", "generate", "distill", "evaluate"):
        rc, out, _ = run(binary, [cmd, "--config", f"{w}/world.yaml"], 600)
        if rc != 0:
            sys.exit(f"mutation_sweep: the world's {cmd} failed (exit {rc}):\n{out[-3000:]}")
    return snapshot(w)


def snapshot(root):
    sums = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                sums[p] = hashlib.sha1(f.read()).hexdigest()
    return sums


# --- Mutations -------------------------------------------------------------------------------------------------------
def mutate_bytes(data, rng):
    data = bytearray(data)
    kind = rng.choice(["flip", "flip", "truncate", "delete", "repeat", "insert", "zero"])
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))), "insert into empty"
    i = rng.randrange(len(data))
    n = rng.randint(1, min(64, len(data) - i))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            j = rng.randrange(len(data))
            data[j] ^= 1 << rng.randrange(8)
        return bytes(data), "bits flipped"
    if kind == "truncate":
        return bytes(data[:i]), f"truncated at byte {i} of {len(data)}"
    if kind == "delete":
        return bytes(data[:i] + data[i + n:]), f"bytes {i}..{i + n} deleted"
    if kind == "repeat":
        return bytes(data[:i + n] + data[i:i + n] + data[i + n:]), f"bytes {i}..{i + n} repeated"
    if kind == "zero":
        data[i:i + n] = bytes(n)
        return bytes(data), f"bytes {i}..{i + n} zeroed"
    junk = bytes(rng.choice([0, 0xFF, ord('"'), ord("{"), ord("\n"), ord(":"), rng.randrange(256)]) for _ in range(n))
    return bytes(data[:i] + junk + data[i:]), f"{n} bytes inserted at {i}"


ODD_VALUES = [None, True, -1, 0, 2**63, 2**64 + 1, -2**63 - 1, 1e308, -1e-308, 3.5, "", "x" * 300, "é\u0000",
              [], [1, "a"], {}, {"a": {"b": []}}]


def nodes(v, path=()):
    yield path, v
    if isinstance(v, dict):
        for k, x in v.items():
            yield from nodes(x, path + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from nodes(x, path + (i,))


def mutate_tree(v, rng):
    """A key dropped, a value replaced by one of another type or size, or a list emptied: (new value, what)."""
    v = copy.deepcopy(v)
    candidates = [(p, x) for p, x in nodes(v) if p]
    if not candidates:
        return rng.choice(ODD_VALUES), "the whole value replaced"
    path, _ = rng.choice(candidates)
    parent = v
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    what = "/".join(str(k) for k in path)
    r = rng.random()
    if r < 0.3 and isinstance(parent, dict):
        del parent[key]
        return v, f"key {what} dropped"
    if r < 0.4 and isinstance(parent[key], (list, dict)):
        parent[key] = type(parent[key])()
        return v, f"{what} emptied"
    odd = rng.choice(ODD_VALUES)
    parent[key] = odd
    return v, f"{what} = {json.dumps(odd)[:40]}"


def mutate_file(data, kind, rng):
    if kind == "binary" or rng.random() < 0.4:
        return mutate_bytes(data, rng)
    text = data.decode("utf-8", errors="replace")
    try:
        if kind == "json":
            new, what = mutate_tree(json.loads(text), rng)
            return (json.dumps(new, indent=rng.choice([None, 2])) + "\n").encode(), what
        if kind == "yaml":
            new, what = mutate_tree(yaml.safe_load(text), rng)
            return yaml.safe_dump(new, sort_keys=False).encode(), what
        if kind == "jsonl":
            lines = text.splitlines()
            i = rng.randrange(len(lines))
            new, what = mutate_tree(json.loads(lines[i]), rng)
            lines[i] = json.dumps(new)
            return ("\n".join(lines) + "\n").encode(), f"line {i + 1}: {what}"
    except (ValueError, yaml.YAMLError):
        pass
    return mutate_bytes(data, rng)


# --- Cases: which input, copied from where, read by which command ------------------------------------------------------
# (name, the world directory copied into the run, the file in it that is mutated, its kind, command, config overrides:
#  {run} is the run directory's copy)
CASES = [
    ("config.yaml", None, "run.yaml", "yaml", "pretrain", []),
    ("index.json", "out/shards", "index.json", "json", "pretrain", ["pretrain.data_dir={run}"]),
    ("token shard", "out/shards", "train-00000.bin", "binary", "pretrain", ["pretrain.data_dir={run}"]),
    ("tokenizer.json", "drafter", "tokenizer.json", "json", "prepare-data", ["target.dir={run}"]),
    ("hf config.json", "drafter", "config.json", "json", "generate", ["target.dir={run}"]),
    ("model.safetensors", "drafter", "model.safetensors", "binary", "generate", ["target.dir={run}"]),
    ("prompts.jsonl", None, "prompts.jsonl", "jsonl", "generate", ["generate.prompts=[{run}/prompts.jsonl]"]),
    ("trainer_state.json", "out/pretrain", "checkpoints/step-0000002/trainer_state.json", "json", "pretrain",
     ["pretrain.output_dir={run}", "pretrain.train.steps=3"]),
    ("manifest.json", "out/generate", "manifest.json", "json", "distill", ["distill.data_dir={run}"]),
    ("generate shard", "out/generate", "shard-00000.safetensors", "binary", "distill", ["distill.data_dir={run}"]),
    ("sweep.jsonl", "out/report", "sweep.jsonl", "jsonl", "evaluate", ["evaluate.report_dir={run}"]),
]


def one_run(args, world, case, index, seed):
    name, src, rel, kind, command, overrides = case
    rng = random.Random(seed)
    rdir = tempfile.mkdtemp(prefix=f"sweep-{index}-", dir=args.scratch)
    copy_root = os.path.join(rdir, "in")
    if src is None:
        os.makedirs(copy_root)
        shutil.copy(os.path.join(world, "world.yaml" if rel == "run.yaml" else rel), os.path.join(copy_root, rel))
    else:
        shutil.copytree(os.path.join(world, src), copy_root, symlinks=True)
    target = os.path.join(copy_root, rel)
    with open(target, "rb") as f:
        data = f.read()
    what = []
    for _ in range(0 if index < 0 else rng.choice([1, 1, 1, 2, 3])):  # index < 0: the control run, not mutated
        data, w = mutate_file(data, kind, rng)
        what.append(w)
    with open(target, "wb") as f:
        f.write(data)
    # Every output of the run goes under the run directory; the inputs not mutated are the world's.
    cfg = os.path.join(rdir, "run.yaml") if rel != "run.yaml" else target
    if rel != "run.yaml":
        shutil.copy(os.path.join(world, "world.yaml"), cfg)
    argv = [command, "--config", cfg] + [f"{k}={rdir}/out/{k.split('.')[0]}" for k in OUTPUTS]
    argv += [o.replace("{run}", copy_root) for o in overrides]
    rc, out, seconds = run(args.bin, argv, args.timeout, cwd=rdir)
    problems = []
    errors = [l for l in out.splitlines() if l.startswith("error:")]
    if rc is None:
        problems.append(f"no exit within {args.timeout} s (hang)")
    elif rc < 0:
        problems.append(f"killed by signal {-rc}")
    elif rc not in (0, 1):
        problems.append(f"exit code {rc}")
    elif rc == 1 and len(errors) != 1:
        problems.append(f"exit 1 with {len(errors)} 'error:' lines")
    elif rc == 0 and errors:
        problems.append(f"exit 0 with {len(errors)} 'error:' lines")
    for d, dirs, files in os.walk(rdir):
        for n in dirs + files:
            if ".tmp-" in n:
                problems.append(f"temporary file left: {os.path.relpath(os.path.join(d, n), rdir)}")
    kept = None
    if problems and args.keep:
        kept = os.path.join(args.keep, f"{index:05d}-{name.replace(' ', '_')}")
        shutil.copytree(rdir, kept, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(rdir, ignore_errors=True)
    return {"case": name, "rc": rc, "seconds": seconds, "what": "; ".join(what), "problems": problems,
            "output": out[-1500:], "kept": kept, "argv": argv}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the draftalign binary")
    ap.add_argument("--tokenizer", required=True, help="a HF directory whose tokenizer the world uses (SmolLM2's)")
    ap.add_argument("--mutations", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120, help="seconds a run may take before it counts as a hang")
    ap.add_argument("--keep", default="", help="copy the run directory of every violation here")
    ap.add_argument("--verbose", action="store_true", help="one line per run: the input, the mutation, the outcome")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.tokenizer = os.path.abspath(args.tokenizer)
    with tempfile.TemporaryDirectory(prefix="draftalign-sweep-") as tmp:
        world = os.path.join(tmp, "world")
        args.scratch = os.path.join(tmp, "runs")
        os.makedirs(world)
        os.makedirs(args.scratch)
        t0 = time.time()
        before = make_world(world, args.bin, args.tokenizer)
        print(f"world made in {time.time() - t0:.0f} s", flush=True)
        # Each command on its input as it is must succeed, or the mutated runs' exit 1 would prove nothing.
        for case in CASES:
            r = one_run(args, world, case, -1, 0)
            if r["rc"] != 0 or r["problems"]:
                sys.exit(f"mutation_sweep: {case[0]}: the command fails on the input not mutated (exit {r['rc']}):\n"
                         f"  draftalign {' '.join(r['argv'])}\n{r['output']}")
        jobs = [(CASES[i % len(CASES)], i, args.seed * 1_000_003 + i) for i in range(args.mutations)]
        results = []
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            for r in pool.map(lambda j: one_run(args, world, j[0], j[1], j[2]), jobs):
                results.append(r)
                if args.verbose:
                    last = ([l for l in r["output"].splitlines() if l.startswith("error:")] or [""])[-1]
                    print(f"{r['case']:<18} exit {r['rc']}  {r['what'][:60]:<60}  {last[:150]}", flush=True)
        changed = [p for p, s in snapshot(world).items() if before.get(p) != s]
        changed += [p for p in before if not os.path.exists(p)]
    print(f"{'input':<20} {'runs':>5} {'exit 0':>7} {'exit 1':>7} {'violations':>10} {'mean s':>7}")
    for name, *_ in CASES:
        rs = [r for r in results if r["case"] == name]
        print(f"{name:<20} {len(rs):>5} {sum(r['rc'] == 0 for r in rs):>7} {sum(r['rc'] == 1 for r in rs):>7} "
              f"{sum(bool(r['problems']) for r in rs):>10} {sum(r['seconds'] for r in rs) / max(1, len(rs)):>7.2f}")
    bad = [r for r in results if r["problems"]]
    print(f"{'all':<20} {len(results):>5} {sum(r['rc'] == 0 for r in results):>7} "
          f"{sum(r['rc'] == 1 for r in results):>7} {len(bad):>10}")
    for r in bad[:10]:
        print(f"\nVIOLATION ({r['case']}: {r['what']}): {'; '.join(r['problems'])}\n  draftalign {' '.join(r['argv'])}"
              f"{chr(10) + '  kept: ' + r['kept'] if r['kept'] else ''}\n  output: ...{r['output'][-800:]}")
    if changed:
        print(f"\nVIOLATION: the runs changed the world's files: {changed[:5]}")
    return 1 if bad or changed else 0


if __name__ == "__main__":
    sys.exit(main())
