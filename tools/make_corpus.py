#!/usr/bin/env python3
"""The demo drafter's pretraining corpus: plain English text cleaned from Debian text packages.

Sources (installed by tools/setup.sh; each document is one JSONL line {"text": ..., "source": ...}):
  bible-kjv   the King James Bible through the `bible` tool of bible-kjv, one chapter per document
  gcide       The Collaborative International Dictionary of English (dict-gcide): one headword with its
              definitions per document, pronunciation marks and cross-reference braces removed
  wordnet     WordNet 3.0 glosses (wordnet-base): "lemma, lemma: gloss" per synset
  fortunes    the fortune cookies of fortunes / fortunes-min (the offensive ones are not installed by them)
The order is fixed and nothing is random: the same packages give the same file byte for byte. Written to a temporary
file and renamed, so OUT is complete or absent. The MT-bench questions are never part of it.

A source larger than --max-mb-per-source keeps every k-th document (k fixed by its size).

Usage: python tools/make_corpus.py [--out .cache/corpus/debian-text.jsonl] [--max-mb-per-source 8]
"""
import argparse
import glob
import gzip
import json
import math
import os
import re
import subprocess
import sys

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
PACKAGES = "fortunes fortunes-min dict-gcide bible-kjv bible-kjv-text wordnet-base"


def fail(msg):
    sys.exit(f"[corpus] error: {msg}\n[corpus] the Debian packages are: {PACKAGES} (tools/setup.sh installs them)")


def squash(text):
    """Whitespace runs inside a paragraph become one space; paragraphs stay apart."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if p)


def bible():
    try:
        out = subprocess.run(["bible", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        fail(f"the `bible` tool of bible-kjv did not run ({e})")
    # "Genesis 1" headers, then verses "  1 In the beginning ..." wrapped over several lines.
    for chapter in re.split(r"\n(?=[1-3]? ?[A-Z][A-Za-z ]+ \d+\n)", out):
        lines = chapter.strip().split("\n")
        if len(lines) < 2:
            continue
        verses = re.sub(r"(^|\n)\s*\d+ ", r"\1", "\n".join(lines[1:]).strip())
        yield f"{lines[0]}\n\n{' '.join(verses.split())}"


def gcide():
    index, data = "/usr/share/dictd/gcide.index", "/usr/share/dictd/gcide.dict.dz"
    if not os.path.isfile(index) or not os.path.isfile(data):
        fail("dict-gcide is not installed")
    with gzip.open(data) as f:
        raw = f.read()

    def num(s):
        n = 0
        for c in s:
            n = n * 64 + B64.index(c)
        return n

    seen = set()
    with open(index, encoding="utf-8") as f:
        for line in f:
            word, off, size = line.rstrip("\n").split("\t")
            if word.startswith("00-") or (off, size) in seen:
                continue
            seen.add((off, size))
            text = raw[num(off):num(off) + num(size)].decode("utf-8", errors="replace")
            text = re.sub(r"\\[^\\\n]*\\", "", text)  # \pro*nun"ci*a`tion\
            text = re.sub(r"[{}]", "", text)  # cross-references {word}
            text = re.sub(r"\[(?:[^\]]*(?:Webster|WordNet|PJC|Century|Source)[^\]]*)\]", "", text)
            text = squash(text)
            if len(text) > 40:
                yield text


def wordnet():
    files = sorted(glob.glob("/usr/share/wordnet/data.*"))
    if not files:
        fail("wordnet-base is not installed")
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # the licence header
                head, gloss = line.split("|", 1)
                fields = head.split()
                count = int(fields[3], 16)
                lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
                yield f"{', '.join(lemmas)}: {gloss.strip()}"


def fortunes():
    files = sorted(f for f in glob.glob("/usr/share/games/fortunes/*")
                   if os.path.isfile(f) and not f.endswith((".dat", ".u8")) and not os.path.islink(f))
    if not files:
        fail("fortunes is not installed")
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for cookie in re.split(r"\n%\n", f.read()):
                cookie = cookie.strip()
                if len(cookie) > 20:
                    yield cookie


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/corpus/debian-text.jsonl")
    ap.add_argument("--max-mb-per-source", type=float, default=8.0)
    args = ap.parse_args()
    limit = int(args.max_mb_per_source * 1e6)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = f"{args.out}.tmp-{os.getpid()}"
    counts = {}
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for name, source in (("bible-kjv", bible), ("gcide", gcide), ("wordnet", wordnet),
                                 ("fortunes", fortunes)):
                texts = list(source())
                # Over the limit, every k-th document: the dictionary keeps all its letters, not just A and B.
                stride = max(1, math.ceil(sum(map(len, texts)) / limit))
                kept = texts[::stride]
                for text in kept:
                    out.write(json.dumps({"text": text, "source": name}, ensure_ascii=False) + "\n")
                counts[name] = (len(kept), sum(map(len, kept)))
        os.replace(tmp, args.out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for name, (docs, chars) in counts.items():
        print(f"[corpus] {name}: {docs} documents, {chars / 1e6:.1f}M characters")
    print(f"[corpus] wrote {args.out}")


if __name__ == "__main__":
    main()
