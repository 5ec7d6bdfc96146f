#!/usr/bin/env bash
# The independent drafter's shape at a fixed pretraining wall clock, with and without a draft vocabulary
# (pretrain.model.draft_vocab_size). Every arm pretrains for the wall clock that SWEEP_BUDGET_STEPS (default 250, the
# demo's) steps of the demo's drafter (4 layers x 256, head over all 49,152 tokens) take on this machine: each arm's
# step time is probed first (a few steps, tokens/s from metrics.jsonl) and its step count scaled by it. Then each arm
# is distilled (the demo's TVD++ against the offline top-k teacher) once per seed of SEEDS (default "1 2"), its decode
# step timed against the target's (bench_speculative, one run per arm), and every drafter evaluated on the
# development split (80 prompts the target writes itself, none overlapping MT-bench or the training prompts; one turn
# of 48 greedy tokens; intervals over the prompts, a method's seeds combined). Choose here, report on MT-bench after.
# Finished stages are skipped or resumed. Output: SWEEP_OUT (default runs/sweep); the table: <out>/report-dev.
# Usage: bash tools/shape_sweep.sh [section.key=value ...]   (overrides for every stage)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${DRAFTALIGN_BUILD_DIR:-build}
bin=$build/draftalign
cfg=configs/demo.yaml
out=${SWEEP_OUT:-runs/sweep}
budget=${SWEEP_BUDGET_STEPS:-250}
read -r -a seeds <<<"${SEEDS:-1 2}"
# name|pretrain overrides. The first arm is the budget's unit.
arms=(
  "full-4x256|"
  "v8k-4x256|pretrain.model.draft_vocab_size=8192"
  "v8k-8x256|pretrain.model.draft_vocab_size=8192 pretrain.model.num_layers=8"
  "v8k-4x512|pretrain.model.draft_vocab_size=8192 pretrain.model.hidden_size=512 pretrain.model.intermediate_size=1536 pretrain.model.num_heads=8 pretrain.model.num_kv_heads=8"
)
[ -n "${SWEEP_ARMS:-}" ] && read -r -a keep <<<"$SWEEP_ARMS" || keep=()
mkdir -p "$out"
printf "arm\ttokens_per_s\tsteps\n" >"$out/steps.tsv"
common=(run.output_dir="$out" "$@")
run() { "$bin" "$1" --config "$cfg" "${common[@]}" "${@:2}"; }
log() { echo "[sweep $(date +%H:%M:%S)] $*"; }

log "shared data"
run prepare-data
run magpie
run generate
dev="$out/prompts/dev-target-written.jsonl"
[ -f "$dev" ] || run magpie run.seed=7 magpie.count=80 magpie.output="$dev" \
  "magpie.exclude=[.cache/prompts/mt-bench.jsonl, $out/prompts/target-written.jsonl]"

# tokens/s of an arm's pretraining step: the median over steps 3-8 of a probe run.
tokens_per_s() {
  local name=$1 over=$2 probe="$out/probe/$name"
  [ -d "$probe/final" ] ||
    run pretrain $over pretrain.output_dir="$probe" pretrain.train.steps=8 pretrain.train.optim.warmup_steps=1 \
      pretrain.train.eval_every=0 pretrain.train.eval_batches=1 pretrain.train.save_every=0 run.log_every=1 >/dev/null
  .venv/bin/python - "$probe/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
print(statistics.median(r["tokens_per_s"] for r in rows if 3 <= r["step"] <= 8))
EOF
}

drafters=()
base_tps=""
for arm in "${arms[@]}"; do
  name=${arm%%|*} over=${arm#*|}
  if [ ${#keep[@]} -gt 0 ] && [[ ! " ${keep[*]} " =~ " $name " ]]; then continue; fi
  tps=$(tokens_per_s "$name" "$over")
  [ -n "$base_tps" ] || base_tps=$tps
  steps=$(awk -v b="$budget" -v t="$tps" -v u="$base_tps" 'BEGIN { printf "%d", b * t / u + 0.5 }')
  warm=$(awk -v s="$steps" 'BEGIN { printf "%d", s / 10 + 0.5 }')
  log "$name: $tps tokens/s -> $steps pretraining steps (warm-up $warm)"
  echo -e "$name\t$tps\t$steps" >>"$out/steps.tsv"
  run pretrain $over pretrain.output_dir="$out/$name/pretrain" pretrain.train.steps="$steps" \
    pretrain.train.optim.warmup_steps="$warm" pretrain.train.eval_every=0 pretrain.train.save_every=0
  "$build/bench/bench_speculative" --target .cache/models/SmolLM2-135M-Instruct --drafter "$out/$name/pretrain/final" \
    --max-block 2 --out "$out/$name/step-cost.json" >/dev/null
  drafters+=("$out/$name/pretrain/final")
  for s in "${seeds[@]}"; do
    run distill distill.student="$out/$name/pretrain/final" distill.output_dir="$out/$name/distill" distill.seed="$s"
    drafters+=("$out/$name/distill/tvdpp-token-q/seed-$s/final")
  done
done

log "evaluate on the development split"
list=$(IFS=,; echo "${drafters[*]}")
run evaluate "evaluate.drafters=[$list]" "evaluate.prompts=[$dev]" evaluate.turns=1 evaluate.timed_prompts=0 \
  'evaluate.sampling_temperatures=[]' evaluate.hybrid=false evaluate.report_dir="$out/report-dev"
log "done: $out/report-dev/report.md"
