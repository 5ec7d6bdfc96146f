#!/usr/bin/env python3
"""The demo drafter's pretraining corpus: English prose, technical text, code and markdown from Debian packages.

Sources (installed by tools/setup.sh; each document is one JSONL line {"text": ..., "source": ...}):
  bible-kjv         the King James Bible through the `bible` tool of bible-kjv, one chapter per document
  gcide             The Collaborative International Dictionary of English (dict-gcide): one headword with its
                    definitions per document, pronunciation marks and cross-reference braces removed
  wordnet           WordNet 3.0 glosses (wordnet-base): "lemma, lemma: gloss" per synset
  fortunes          the fortune cookies of fortunes / fortunes-min (the offensive ones are not installed by them)
  python-stdlib     the Python 3.11 standard library's source (libpython3.11-minimal and -stdlib), one module per
                    document
  python-doc        the Python 3.11 documentation (python3.11-doc), HTML turned into markdown: headings, lists,
                    fenced code blocks, inline code; one page per document
  debian-reference  the Debian Reference (debian-reference-en), HTML turned into markdown, one section per document
  man-pages         the Linux man-pages (manpages, manpages-dev: sections 2-7) with the roff markup turned into
                    markdown
Only the files of these packages are read (dpkg -L), never whatever else a machine has installed. The order is fixed
and nothing is random: the same packages and options give the same file byte for byte. Written to a temporary file
and renamed, so OUT is complete or absent; OUT.spec.json records the options, and a run whose spec matches leaves OUT
as it is. The MT-bench questions are never part of it.

Per-source weights: --weights name=w,... gives source `name` a budget of total-mb * w / sum(w) characters (w = 0
leaves it out); a source larger than its budget keeps every k-th document (k fixed by its size), a smaller one keeps
all. The defaults mix a third prose (Bible, dictionary, WordNet, fortunes), a third code and its documentation, and a
third technical text; --weights bible-kjv=1,gcide=1,wordnet=1,fortunes=1 --total-mb 32 is the corpus of the first
demo (KJV, GCIDE, WordNet and fortunes, at most 8 MB each).

Usage: python tools/make_corpus.py [--out .cache/corpus/debian-text.jsonl] [--weights ...] [--total-mb 24]
"""
import argparse
import glob
import gzip
import html
import html.parser
import json
import math
import os
import re
import subprocess
import sys

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
PACKAGES = ("fortunes fortunes-min dict-gcide bible-kjv bible-kjv-text wordnet-base libpython3.11-stdlib python3.11-doc "
            "debian-reference-en manpages manpages-dev")
MIN_CHARS = 200  # shorter documents (stubs, link pages, empty sections) are dropped
VERSION = 3  # of the readers: a change to what a reader yields is a new version (OUT is made again)
DEFAULT_WEIGHTS = ("bible-kjv=1,gcide=1,wordnet=1,fortunes=0.5,python-stdlib=2,python-doc=2,debian-reference=1,"
                   "man-pages=1.5")


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


def package_files(package, suffixes):
    """The files of an installed Debian package whose names end in one of `suffixes`, sorted."""
    try:
        out = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        fail(f"{package} is not installed")
    return sorted(f for f in out.split("\n") if f.endswith(suffixes) and os.path.isfile(f) and not os.path.islink(f))


def python_stdlib():
    paths = package_files("libpython3.11-minimal", (".py",)) + package_files("libpython3.11-stdlib", (".py",))
    for path in sorted(paths):
        if "/site-packages/" in path or "/dist-packages/" in path:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read().strip()
        if len(text) > MIN_CHARS:
            yield text


class Markdown(html.parser.HTMLParser):
    """HTML to markdown, enough for Sphinx and DocBook pages: headings, paragraphs, lists, fenced code blocks,
    inline code, table rows; scripts, styles and navigation dropped. Text inside `keep` (a predicate on the tag and
    its attributes) only, when given."""

    SKIP = {"script", "style", "head", "nav"}
    BLOCK = {"p", "div", "section", "dl", "dt", "dd", "ul", "ol", "table", "tr", "blockquote", "br"}

    def __init__(self, keep=None, split_at=()):
        super().__init__(convert_charrefs=True)
        self.keep, self.split_at = keep, split_at
        self.docs, self.out, self.depth_keep, self.skip, self.pre = [], [], 0 if keep else 1, 0, 0
        self.stack = []

    def emit(self, s):
        if self.depth_keep > 0 and self.skip == 0:
            self.out.append(s)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        kept = bool(self.keep) and (self.depth_keep > 0 or self.keep(tag, a))
        skipped = tag in self.SKIP or "sphinxsidebar" in (a.get("class") or "") or a.get("role") == "navigation"
        self.stack.append((tag, kept, skipped))
        self.depth_keep += kept
        self.skip += skipped
        if tag in self.split_at and self.depth_keep > 0 and self.skip == 0:
            self.flush()
        if tag == "pre":
            self.pre += 1
            self.emit("\n\n```\n")
        elif re.fullmatch(r"h[1-6]", tag):
            self.emit("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.emit("\n- ")
        elif tag == "code" and not self.pre:
            self.emit("`")
        elif tag in ("td", "th"):
            self.emit(" | ")
        elif tag in self.BLOCK:
            self.emit("\n\n")

    def handle_endtag(self, tag):
        if all(t != tag for t, _, _ in self.stack):
            return
        while self.stack:  # close what HTML left open inside (void tags, unclosed paragraphs)
            t, kept, skipped = self.stack.pop()
            self.end(t)
            self.depth_keep -= kept
            self.skip -= skipped
            if t == tag:
                break

    def end(self, tag):
        if tag == "pre":
            self.pre -= 1
            self.emit("\n```\n\n")
        elif tag == "code" and not self.pre:
            self.emit("`")
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.emit("\n\n")

    def handle_data(self, data):
        self.emit(data if self.pre else re.sub(r"\s+", " ", data))

    def flush(self):
        text = "".join(self.out)
        self.out = []
        text = text.replace("\u00b6", "")  # Sphinx's pilcrow anchors
        lines = [ln.rstrip() for ln in text.split("\n")]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(ln if ln.strip() else "" for ln in lines)).strip()
        text = re.sub(r"(^|\n)- *\n+ *", r"\1- ", text)  # a list item whose text sits in a paragraph
        text = re.sub(r"``", "", text) if text.count("```") % 2 else text
        if len(text) > MIN_CHARS:
            self.docs.append(text)


def html_documents(path, keep=None, split_at=()):
    with open(path, encoding="utf-8", errors="replace") as f:
        parser = Markdown(keep, split_at)
        parser.feed(f.read())
        parser.close()
    parser.flush()
    return parser.docs


def python_doc():
    for path in package_files("python3.11-doc", (".html",)):
        if "/_" in path or os.path.basename(path) in ("genindex.html", "search.html", "py-modindex.html"):
            continue
        yield from html_documents(path, keep=lambda tag, a: a.get("role") == "main" or a.get("class") == "body")


def debian_reference():
    for path in package_files("debian-reference-en", (".en.html",)):
        if os.path.basename(path) == "index.en.html":
            continue
        yield from html_documents(path, keep=lambda tag, a: tag == "body", split_at=("h2",))


ROFF_CHARS = {"em": "\u2014", "en": "\u2013", "aq": "'", "dq": '"', "lq": '"', "rq": '"', "oq": "'", "cq": "'",
              "bu": "*", "mu": "x", "co": "(c)", "ha": "^", "ti": "~", "rs": "\0", "at": "@", "sh": "#", "lh": "<=",
              "rh": "=>", "->": "->", "<-": "<-", ">=": ">=", "<=": "<=", "!=": "!=", "ga": "`", "pl": "+"}


def roff_inline(text):
    text = re.sub(r"\\f(\[[^\]]*\]|\(..|.)", "", text)  # font changes
    text = re.sub(r"\\\[([^\]]*)\]", lambda m: ROFF_CHARS.get(m.group(1), ""), text)
    text = re.sub(r"\\\((..)", lambda m: ROFF_CHARS.get(m.group(1), ""), text)
    text = re.sub(r"\\\*(\(..|\[[^\]]*\]|.)", "", text)  # strings
    text = re.sub(r"\\s[-+]?\d", "", text)
    text = text.replace("\\-", "-").replace("\\e", "\0").replace("\\&", "").replace("\\ ", " ")
    text = text.replace("\\|", "").replace("\\^", "").replace("\\%", "").replace("\\:", "").replace("\\c", "")
    return re.sub(r"\\(.)", r"\1", text).replace("\0", "\\")  # \e is a printed backslash, not an escape


def roff_args(rest):
    return [a.strip('"') for a in re.findall(r'"[^"]*"|\S+', rest)]


def man_page(source):
    out, code = [], False
    for line in source.split("\n"):
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        if not line.startswith((".", "'")):
            out.append(roff_inline(line) if code else roff_inline(line).strip())
            continue
        m = re.match(r"[.'](\S+)\s*(.*)", line)
        if not m:
            continue
        req, rest = m.group(1), m.group(2)
        if req == "so":
            return ""  # a link to another page
        if req == "TH":
            a = roff_args(rest)
            out.append(f"# {a[0]}({a[1]})" if len(a) > 1 else "")
        elif req in ("SH", "SS"):
            out.append(("\n## " if req == "SH" else "\n### ") + roff_inline(" ".join(roff_args(rest))).title() + "\n")
        elif req in ("B", "I", "SM", "SB"):
            out.append(roff_inline(" ".join(roff_args(rest))))
        elif req in ("BR", "RB", "IR", "RI", "BI", "IB"):
            out.append(roff_inline("".join(roff_args(rest))))
        elif req in ("nf", "EX"):
            out.append("\n```")
            code = True
        elif req in ("fi", "EE") and code:
            out.append("```\n")
            code = False
        elif req in ("PP", "P", "LP", "sp", "TP", "br"):
            out.append("")
        elif req == "IP":
            a = roff_args(rest)
            out.append("\n- " + roff_inline(a[0]) if a and a[0] not in ("", "\\(bu") else "\n- ")
    if code:
        out.append("```\n")
    # re-flow filled text, keeping headings, list items and the fenced (no-fill) blocks line by line
    parts = re.split(r"(\n```\n.*?```\n)", "\n".join(out), flags=re.S)
    text = "".join(p if i % 2 else re.sub(r"(?<=[^\n])\n(?![\n#]|- |\Z)", " ", p) for i, p in enumerate(parts))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def man_pages():
    for path in package_files("manpages", (".gz",)) + package_files("manpages-dev", (".gz",)):
        if not re.search(r"/usr/share/man/man[2-7]/", path):
            continue
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            text = man_page(f.read())
        if len(text) > MIN_CHARS:
            yield text


SOURCES = {"bible-kjv": bible, "gcide": gcide, "wordnet": wordnet, "fortunes": fortunes,
           "python-stdlib": python_stdlib, "python-doc": python_doc, "debian-reference": debian_reference,
           "man-pages": man_pages}


def parse_weights(spec):
    weights = {}
    for part in spec.split(","):
        name, _, w = part.partition("=")
        if name not in SOURCES:
            sys.exit(f"[corpus] error: --weights: unknown source '{name}' (known: {', '.join(SOURCES)})")
        try:
            weights[name] = float(w)
        except ValueError:
            sys.exit(f"[corpus] error: --weights: '{part}' is not name=number")
        if not math.isfinite(weights[name]) or weights[name] < 0:
            sys.exit(f"[corpus] error: --weights: {name} has weight {w}; a weight is a number >= 0")
    if sum(weights.values()) <= 0:
        sys.exit("[corpus] error: --weights: every weight is 0")
    return weights


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/corpus/debian-text.jsonl")
    ap.add_argument("--weights", default=DEFAULT_WEIGHTS, help="name=weight,... (default: %(default)s)")
    ap.add_argument("--total-mb", type=float, default=24.0, help="characters of all budgets together, in millions")
    args = ap.parse_args()
    weights = parse_weights(args.weights)
    spec = {"version": VERSION, "weights": weights, "total_mb": args.total_mb}
    spec_file = f"{args.out}.spec.json"
    if os.path.isfile(args.out) and os.path.isfile(spec_file):
        with open(spec_file, encoding="utf-8") as f:
            if json.load(f) == spec:
                print(f"[corpus] {args.out} is up to date")
                return
    total = sum(weights.values())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = f"{args.out}.tmp-{os.getpid()}"
    counts = {}
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            for name, source in SOURCES.items():
                if weights.get(name, 0) <= 0:
                    continue
                limit = int(args.total_mb * 1e6 * weights[name] / total)
                texts = list(source())
                # Over the budget, every k-th document: the dictionary keeps all its letters, not just A and B.
                stride = max(1, math.ceil(sum(map(len, texts)) / limit))
                kept = texts[::stride]
                for text in kept:
                    out.write(json.dumps({"text": text, "source": name}, ensure_ascii=False) + "\n")
                counts[name] = (len(kept), sum(map(len, kept)), sum(map(len, texts)))
        os.replace(tmp, args.out)
        with open(f"{spec_file}.tmp", "w", encoding="utf-8") as f:
            json.dump(spec, f)
        os.replace(f"{spec_file}.tmp", spec_file)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for name, (docs, chars, available) in counts.items():
        print(f"[corpus] {name}: {docs} documents, {chars / 1e6:.1f}M characters (of {available / 1e6:.1f}M)")
    print(f"[corpus] wrote {args.out}")


if __name__ == "__main__":
    main()
