#!/usr/bin/env bash
# The README test command: set up whatever is missing (Debian packages, .venv with torch, build/), then run every
# test through ctest. GPU-labelled tests skip themselves without CUDA. Extra arguments go to ctest (e.g. -L cpu).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root/${DRAFTALIGN_BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
