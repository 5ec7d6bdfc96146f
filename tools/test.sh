#!/usr/bin/env bash
# The README test command: set up whatever is missing (Debian packages, .venv with torch and transformers, build/,
# the SmolLM2 target converted from its GGUF, the golden values transformers computes for the parity tests, the demo
# prompt sets whose separation from MT-bench a test checks, build-fuzz/ with the fuzz targets), then run
# every test through ctest but those labelled `full`. GPU-labelled tests skip themselves without CUDA. Extra arguments go
# to ctest instead (e.g. -L cpu; -L full for the long forms).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRAFTALIGN_ASSETS=1 bash "$root/tools/setup.sh"
cd "$root"
python=${DRAFTALIGN_PYTHON:-$root/.venv/bin/python}
"$python" tools/prepare_target.py --out .cache/models/SmolLM2-135M-Instruct
"$python" tools/make_goldens.py --target .cache/models/SmolLM2-135M-Instruct --out .cache/golden
"$python" tools/make_prompts.py --train .cache/prompts/train.jsonl --mt-bench .cache/prompts/mt-bench.jsonl
bash tools/fuzz.sh build  # build-fuzz/: the libFuzzer targets, clang with ASan + UBSan (the FuzzSmoke test runs them)
cd "$root/${DRAFTALIGN_BUILD_DIR:-build}"
# Without arguments, everything but the tests labelled `full` (the long form of a check the test command runs shorter).
[ $# -gt 0 ] || set -- -LE full
ctest --output-on-failure -j "$(nproc)" "$@"
