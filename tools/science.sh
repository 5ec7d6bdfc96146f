#!/usr/bin/env bash
# The science run, one command from a fresh clone: set up what is missing (as tools/demo.sh), run the recipe of
# configs/science.yaml stage by stage, the lever ablation beside it, one evaluation of every drafter on the 160
# MT-bench turns, and print the table with 95% intervals (tools/science_table.py; also written to
# <out>/science.md). Finished stages are skipped or resumed, so a killed run continues where it stopped.
#
# Drafters compared: prompt lookup (no model), pretrained-only, FKL, TVD, TVD++, TVD++ with 60 more steps against the
# online target off-policy and on-policy (lambda 0.5), and each with lookup in front (hybrid). Ablation, each lever
# against the main TVD++ drafter, everything else equal:
#   target prompts   distilled on Debian-built prompts only (no magpie prompts)
#   corpus           pretrained on the first demo's corpus (KJV, GCIDE, WordNet, fortunes)
#   initialisation   pretrained from normal(0, 0.02) instead of target-svd
#   on-policy        the lambda = 0.5 continuation against the lambda = 0 one above
#   hybrid           the +lookup rows above
#   more distillation  twice the prompts and twice the steps (more compute: its minutes are in the table)
#   more pretraining   twice the pretraining steps (more compute)
# SCIENCE_ABLATION=0 runs the main comparison only; SCIENCE_OUT sets the output directory (default runs/science).
# Usage: bash tools/science.sh [section.key=value ...]   (overrides for every stage)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRAFTALIGN_ASSETS=1 bash "$root/tools/setup.sh"
cd "$root"
py=.venv/bin/python
$py tools/prepare_target.py --out .cache/models/SmolLM2-135M-Instruct
$py tools/make_corpus.py --out .cache/corpus/debian-text.jsonl
$py tools/make_corpus.py --out .cache/corpus/first-demo-text.jsonl --weights bible-kjv=1,gcide=1,wordnet=1,fortunes=1 \
  --total-mb 32
[ -f .cache/prompts/train.jsonl ] && [ -f .cache/prompts/mt-bench.jsonl ] ||
  $py tools/make_prompts.py --train .cache/prompts/train.jsonl --mt-bench .cache/prompts/mt-bench.jsonl

bin="${DRAFTALIGN_BUILD_DIR:-build}/draftalign"
cfg=configs/science.yaml
out=${SCIENCE_OUT:-runs/science}
mkdir -p "$out"
timings="$out/timings.tsv"
labels="$out/drafters.tsv"
: >"$labels"
# step NAME COMMAND...: runs a stage and appends its minutes to timings.tsv (a skipped stage costs seconds).
step() {
  local name=$1 t0
  shift
  echo "[science] $name"
  t0=$(date +%s)
  "$@"
  awk -v n="$name" -v s="$(($(date +%s) - t0))" 'BEGIN { printf "%s\t%.1f\n", n, s / 60 }' >>"$timings"
}
# drafter LABEL DIR [DISTILL_RUN]: a row of the table (the distill run's metrics give the held-out alpha).
drafter() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$labels"; }
run() { "$bin" "$1" --config "$cfg" "${@:2}"; }
: >"$timings"

common=(run.output_dir="$out" "$@")
main_data="$out/distill-data"
step prepare run prepare-data "${common[@]}"
step pretrain run pretrain "${common[@]}"
step magpie run magpie "${common[@]}"
step generate run generate "${common[@]}"
pre="$out/pretrain/final"
drafter pretrained "$pre" "$out/distill/tvdpp-token-q"
for loss in fkl tvd tvdpp; do
  step "distill $loss" run distill distill.loss=$loss "${common[@]}"
done
drafter FKL "$out/distill/fkl/final" "$out/distill/fkl"
drafter TVD "$out/distill/tvd/final" "$out/distill/tvd"
drafter TVD++ "$out/distill/tvdpp-token-q/final" "$out/distill/tvdpp-token-q"
# on-policy: from the TVD++ drafter, 60 more steps against the online target, with half of the responses sampled by
# the drafter itself (lambda 0.5) or none (the control at equal compute).
online=(distill.student="$out/distill/tvdpp-token-q/final" distill.teacher=online distill.train.steps=60
  distill.train.optim.lr=2e-4 distill.output_dir="$out/distill-online")
step "distill tvdpp +60 online" run distill "${online[@]}" "${common[@]}"
step "distill tvdpp +60 on-policy" run distill distill.on_policy_fraction=0.5 "${online[@]}" "${common[@]}"
drafter "TVD++ +60 online" "$out/distill-online/tvdpp-token-q/final" "$out/distill-online/tvdpp-token-q"
drafter "TVD++ +60 on-policy" "$out/distill-online/tvdpp-token-q-onpolicy0.5/final" \
  "$out/distill-online/tvdpp-token-q-onpolicy0.5"

if [ "${SCIENCE_ABLATION:-1}" = 1 ]; then
  a="$out/ablation"
  # target prompts: the Debian-built prompts only, the same number.
  step "generate debian-only" run generate generate.prompts=[.cache/prompts/train.jsonl] generate.prompt_weights=[] \
    generate.output_dir="$a/data-debian" "${common[@]}"
  step "distill debian-only" run distill distill.data_dir="$a/data-debian" distill.output_dir="$a/debian-only" "${common[@]}"
  drafter "TVD++, Debian prompts only" "$a/debian-only/tvdpp-token-q/final" "$a/debian-only/tvdpp-token-q"
  # corpus: the first demo's.
  step "prepare first-demo corpus" run prepare-data prepare.inputs=[.cache/corpus/first-demo-text.jsonl] \
    prepare.output_dir="$a/shards-first-demo" "${common[@]}"
  step "pretrain first-demo corpus" run pretrain pretrain.data_dir="$a/shards-first-demo" \
    pretrain.output_dir="$a/pretrain-first-demo" "${common[@]}"
  step "distill first-demo corpus" run distill distill.student="$a/pretrain-first-demo/final" \
    distill.output_dir="$a/first-demo" "${common[@]}"
  drafter "TVD++, first demo's corpus" "$a/first-demo/tvdpp-token-q/final" "$a/first-demo/tvdpp-token-q"
  # initialisation: normal(0, 0.02).
  step "pretrain normal init" run pretrain pretrain.embedding_init=normal pretrain.output_dir="$a/pretrain-normal" \
    "${common[@]}"
  step "distill normal init" run distill distill.student="$a/pretrain-normal/final" distill.output_dir="$a/normal" \
    "${common[@]}"
  drafter "TVD++, normal init" "$a/normal/tvdpp-token-q/final" "$a/normal/tvdpp-token-q"
  # more distillation: twice the prompts (the mix goes on into more magpie prompts) and twice the steps.
  step "magpie x2" run magpie magpie.count=400 magpie.output="$a/prompts/target-written-x2.jsonl" "${common[@]}"
  step "generate x2" run generate generate.max_prompts=800 \
    generate.prompts=[.cache/prompts/train.jsonl,"$a/prompts/target-written-x2.jsonl"] generate.output_dir="$a/data-x2" \
    "${common[@]}"
  step "distill x2" run distill distill.data_dir="$a/data-x2" distill.train.steps=600 distill.output_dir="$a/x2" \
    "${common[@]}"
  drafter "TVD++, 2x distillation" "$a/x2/tvdpp-token-q/final" "$a/x2/tvdpp-token-q"
  # more pretraining: twice the steps.
  step "pretrain x2" run pretrain pretrain.train.steps=500 pretrain.output_dir="$a/pretrain-x2" "${common[@]}"
  step "distill pretrain x2" run distill distill.student="$a/pretrain-x2/final" distill.output_dir="$a/pretrain-x2-tvdpp" \
    "${common[@]}"
  drafter "TVD++, 2x pretraining" "$a/pretrain-x2-tvdpp/tvdpp-token-q/final" "$a/pretrain-x2-tvdpp/tvdpp-token-q"
fi

dirs=$(cut -f2 "$labels" | paste -sd, -)
step evaluate run evaluate evaluate.drafters="[$dirs]" evaluate.report_dir="$out/report" "${common[@]}"
$py tools/science_table.py "$out" | tee "$out/science.md"
