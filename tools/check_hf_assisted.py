#!/usr/bin/env python3
"""Speculative decoding in transformers with a drafter draftalign exported: the target generates greedily on its own
and again with `assistant_model=drafter` (transformers' assisted generation); the two outputs must be equal token for
token, since greedy speculative decoding is lossless. Prints one JSON object per drafter and exits 1 when any output
differs (or a drafter cannot be loaded).

    python tools/check_hf_assisted.py TARGET_DIR DRAFTER_DIR [DRAFTER_DIR ...] [--max-new-tokens 32]

Each JSON line: {"drafter", "prompts", "equal" (prompts whose outputs are equal), "new_tokens", "target_calls_plain",
"target_calls_assisted"}. Target forward calls are counted with a hook: assisted generation that accepts drafted
tokens calls the target fewer times than plain decoding, one call per token.

A drafter trained with a draft vocabulary (pretrain.model.draft_vocab_size) is exported with a head over the whole
vocabulary whose rows outside it are zero. With --draft-ids CONFIG_JSON (the config.json of the draftalign checkpoint
it was exported from, which lists draft_token_ids), each JSON line also holds, over the target's greedy answers
teacher-forced into the drafter: "positions", "reduced_agreement" (the exported head's argmax equals the argmax over
the draft vocabulary: where it does not, the drafter's top logit there is not positive) and the first-token greedy
acceptance of each, "accept_exported" and "accept_reduced". --prompts FILE (JSONL: "instruction", or the first of
"turns") and --max-prompts N replace the four built-in prompts.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

PROMPTS = [
    "Write a short poem about the sea.",
    "What is the capital of France? Answer in one sentence.",
    "List three uses of a paper clip.",
    "Explain what a prime number is to a child.",
]


def prompt_ids(tokenizer, text):
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
    return ids


def reduced_head_agreement(tokenizer, drafter, prompts, answers, draft_ids):
    """The exported full head against the draft vocabulary's argmax, at every position of the target's answers."""
    positions = agree = accept_exported = accept_reduced = 0
    for text, answer in zip(prompts, answers):
        if not answer:
            continue
        ids = prompt_ids(tokenizer, text)
        seq = torch.cat([ids, torch.tensor([answer], dtype=ids.dtype)], 1)
        with torch.no_grad():
            logits = drafter(seq).logits[0, ids.shape[1] - 1 : -1].float()  # each row predicts an answer token
        exported = logits.argmax(-1)
        reduced = draft_ids[logits[:, draft_ids].argmax(-1)]
        want = torch.tensor(answer)
        positions += len(answer)
        agree += int((exported == reduced).sum())
        accept_exported += int((exported == want).sum())
        accept_reduced += int((reduced == want).sum())
    n = max(1, positions)
    return {"positions": positions, "reduced_agreement": agree / n, "accept_exported": accept_exported / n,
            "accept_reduced": accept_reduced / n}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target")
    ap.add_argument("drafters", nargs="+")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--draft-ids", help="config.json listing the drafter's draft_token_ids")
    ap.add_argument("--prompts", help="JSONL prompt file")
    ap.add_argument("--max-prompts", type=int, default=0)
    args = ap.parse_args()
    prompts = PROMPTS
    if args.prompts:
        prompts = []
        with open(args.prompts) as f:
            for line in f:
                if line.strip():
                    j = json.loads(line)
                    prompts.append(j["instruction"] if "instruction" in j else j["turns"][0])
        if args.max_prompts > 0:
            prompts = prompts[: args.max_prompts]
    draft_ids = None
    if args.draft_ids:
        with open(args.draft_ids) as f:
            draft_ids = torch.tensor(json.load(f)["draft_token_ids"], dtype=torch.long)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    target = AutoModelForCausalLM.from_pretrained(args.target, dtype=torch.float32).eval()
    calls = [0]
    target.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    greedy = dict(do_sample=False, max_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.eos_token_id)

    plain, plain_calls = [], 0
    for text in prompts:
        ids = prompt_ids(tokenizer, text)
        calls[0] = 0
        with torch.no_grad():
            plain.append(target.generate(ids, **greedy)[0, ids.shape[1]:].tolist())
        plain_calls += calls[0]

    ok = True
    for path in args.drafters:
        drafter = AutoModelForCausalLM.from_pretrained(path).eval()  # its own dtype (an export may be bf16)
        equal, assisted_calls, new_tokens = 0, 0, 0
        for text, want in zip(prompts, plain):
            ids = prompt_ids(tokenizer, text)
            calls[0] = 0
            with torch.no_grad():
                got = target.generate(ids, assistant_model=drafter, **greedy)[0, ids.shape[1]:].tolist()
            assisted_calls += calls[0]
            new_tokens += len(want)
            if got == want:
                equal += 1
            else:
                print(f"{path}: '{text}': assisted {got} != plain {want}", file=sys.stderr)
        ok = ok and equal == len(prompts)
        line = {"drafter": path, "drafter_dtype": str(drafter.dtype), "prompts": len(prompts), "equal": equal,
                "new_tokens": new_tokens, "target_calls_plain": plain_calls, "target_calls_assisted": assisted_calls}
        if draft_ids is not None:
            line.update(reduced_head_agreement(tokenizer, drafter, prompts, plain, draft_ids))
        print(json.dumps(line))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
