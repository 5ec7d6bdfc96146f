#!/usr/bin/env bash
# The README main command: set up whatever is missing, then run the whole pipeline on the embedded default
# (configs/demo.yaml). Extra arguments are section.key=value overrides, e.g. run.output_dir=runs/mine.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root"
exec "${DRAFTALIGN_BUILD_DIR:-build}/draftalign" pipeline --config configs/demo.yaml "$@"
