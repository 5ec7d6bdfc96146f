#!/usr/bin/env python3
"""What transformers' tokenizer makes of a text and of chat conversations: the reference for the tokenizer tests.

Loads DIR with AutoTokenizer (a tokenizer.model is converted by transformers, which needs the sentencepiece and
protobuf packages), encodes TEXT without special tokens, renders and tokenizes each conversation of CHATS (a JSON list
of message lists) with apply_chat_template(add_generation_prompt=True), and writes
{"ids": [...], "decoded": "...", "chats": [{"text": "...", "ids": [...]}]} to OUT.

Usage: python tools/hf_tokenize.py DIR TEXT CHATS OUT
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import AutoTokenizer  # noqa: E402


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    d, text_file, chats_file, out = sys.argv[1:]
    tok = AutoTokenizer.from_pretrained(d)
    with open(text_file, encoding="utf-8", newline="") as f:
        text = f.read()
    with open(chats_file, encoding="utf-8") as f:
        chats = json.load(f)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    rendered = []
    for messages in chats:
        t = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        rendered.append({"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"ids": ids, "decoded": tok.decode(ids), "chats": rendered}, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
