#!/usr/bin/env bash
# The loss ablation of docs/TVDPP.md, one command: from the same pretrained drafter, on the same generated pairs and
# at the same budget, distil with FKL, TVD and the TVD++ variants (scope token/batch x weighting q/uniform), then print
# the held-out alpha and tau(g) of each next to the starting checkpoint's (tools/ablation_table.py).
# Needs the outputs of `draftalign pretrain` and `draftalign generate` (the demo's by default).
# Usage: bash tools/ablate.sh [section.key=value ...]   (overrides for every run, e.g. distill.train.steps=100)
# Environment: ABLATION_CONFIG (default configs/demo.yaml), ABLATION_OUT (default runs/ablation).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=${DRAFTALIGN_BUILD_DIR:-build}/draftalign
config=${ABLATION_CONFIG:-configs/demo.yaml}
out=${ABLATION_OUT:-runs/ablation}
runs=(
  "distill.loss=fkl"
  "distill.loss=tvd"
  "distill.loss=tvdpp distill.tvdpp_scope=token distill.tvdpp_weighting=q"
  "distill.loss=tvdpp distill.tvdpp_scope=batch distill.tvdpp_weighting=q"
  "distill.loss=tvdpp distill.tvdpp_scope=token distill.tvdpp_weighting=uniform"
  "distill.loss=tvdpp distill.tvdpp_scope=batch distill.tvdpp_weighting=uniform"
)
for r in "${runs[@]}"; do
  echo "[ablate] $r"
  # shellcheck disable=SC2086
  "$bin" distill --config "$config" distill.output_dir="$out" distill.train.resume=none $r "$@"
done
"${DRAFTALIGN_PYTHON:-.venv/bin/python}" tools/ablation_table.py "$out"
