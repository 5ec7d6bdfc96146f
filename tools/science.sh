#!/usr/bin/env bash
# The science run, one command from a fresh clone: set up what is missing (as tools/demo.sh), run the recipe of
# configs/science.yaml stage by stage with every distillation trained once per seed, the lever ablation beside it,
# one evaluation of every drafter on the 160 MT-bench turns (80 questions), and print the table
# (tools/science_table.py; also written to <out>/science.md). Finished stages are skipped or resumed, so a killed run
# continues where it stopped.
#
# Seeds: each distillation runs with distill.seed = each of SEEDS (default "1 2 3"), writing <run>/seed-<n>; the
# report combines a method's seeds in one row whose interval resamples seeds and questions (two-level bootstrap), and
# every comparison below is one of the report's declared contrasts, Holm-corrected as one family (configs/science.yaml
# explains the statistics). One pretraining is shared by the main comparison and the distillation-side levers, so
# their seed spread is distillation's (data order, on-policy samples), conditional on that pretrained drafter.
#
# Drafters compared: prompt lookup (no model), pretrained-only, FKL, TVD, TVD++, TVD++ with 60 more steps against the
# online target off-policy and on-policy (lambda 0.5), and each with lookup in front (hybrid). Levers, each against
# the main TVD++ drafter, everything else equal:
#   target prompts     distilled on Debian-built prompts only (no magpie prompts)
#   on-policy          the lambda = 0.5 continuation against the lambda = 0 one
#   hybrid             the +lookup row
#   more distillation  twice the prompts and twice the steps (more compute: its minutes are in the table)
#   greedy data        distilled on the target's greedy answers (T = 0) instead of its samples (T = 1)
# Then every drafter again on an out-of-domain set (Vicuna-bench, <out>/report-ood), each distilled method against
# the pretrained drafter.
# With SCIENCE_PRETRAIN_LEVERS=1 (off by default: about 100 more minutes on 2 cores), the pretraining-side levers,
# each arm pretrained and distilled once per PRETRAIN_SEEDS (default "1 2"):
#   corpus             pretrained on the first demo's corpus (KJV, GCIDE, WordNet, fortunes)
#   initialisation     pretrained from normal(0, 0.02) instead of target-svd
#   more pretraining   twice the pretraining steps (more compute)
# With SCIENCE_EAGLE3=1 (the default), an EAGLE-3 head on the target's hidden states (FKL, distill.eagle3 of the
# config, SCIENCE_HEAD_STEPS steps, default 600: about 25 minutes a seed on 2 cores) is trained once per seed and
# compared with TVD++, prompt lookup and their hybrids.
# SCIENCE_ABLATION=0 runs the main comparison only; SCIENCE_OUT sets the output directory (default runs/science).
# Usage: bash tools/science.sh [section.key=value ...]   (overrides for every stage)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRAFTALIGN_ASSETS=1 bash "$root/tools/setup.sh"
cd "$root"
py=.venv/bin/python
$py tools/prepare_target.py --out .cache/models/SmolLM2-135M-Instruct
$py tools/make_corpus.py --out .cache/corpus/debian-text.jsonl
[ -f .cache/prompts/train.jsonl ] && [ -f .cache/prompts/mt-bench.jsonl ] && [ -f .cache/prompts/vicuna.jsonl ] ||
  $py tools/make_prompts.py --train .cache/prompts/train.jsonl --mt-bench .cache/prompts/mt-bench.jsonl \
    --vicuna .cache/prompts/vicuna.jsonl

bin="${DRAFTALIGN_BUILD_DIR:-build}/draftalign"
cfg=configs/science.yaml
out=${SCIENCE_OUT:-runs/science}
read -r -a seeds <<<"${SEEDS:-1 2 3}"
read -r -a pretrain_seeds <<<"${PRETRAIN_SEEDS:-1 2}"
mkdir -p "$out"
timings="$out/timings.tsv"
labels="$out/drafters.tsv"
: >"$labels"
: >"$timings"
# step NAME COMMAND...: runs a stage and appends its minutes to timings.tsv (a skipped stage costs seconds).
step() {
  local name=$1 t0
  shift
  echo "[science] $name"
  t0=$(date +%s)
  "$@"
  awk -v n="$name" -v s="$(($(date +%s) - t0))" 'BEGIN { printf "%s\t%.1f\n", n, s / 60 }' >>"$timings"
}
# drafter LABEL ROW RUN_DIR: a row of the table: its label, its report row (a method's combined row), and the
# distill run directory whose seed-<n>/metrics.jsonl hold the held-out alpha ("" for none).
drafter() { printf '%s\t%s\t%s\n' "$1" "$2" "${3:-}" >>"$labels"; }
run() { "$bin" "$1" --config "$cfg" "${@:2}"; }
# seeded NAME RUN_DIR COMMAND_ARGS...: one distill stage per seed; collects each seed's final drafter in `dirs`.
dirs=()
seeded() {
  local name=$1 run_dir=$2 s
  shift 2
  for s in "${seeds[@]}"; do
    step "$name seed $s" run distill distill.seed="$s" "$@"
    dirs+=("$run_dir/seed-$s/final")
  done
}

common=(run.output_dir="$out" "$@")
step prepare run prepare-data "${common[@]}"
step pretrain run pretrain "${common[@]}"
step magpie run magpie "${common[@]}"
step generate run generate "${common[@]}"
dirs+=("$out/pretrain/final")
drafter pretrained pretrain ""
for loss in fkl tvd tvdpp; do
  name=$loss
  [ "$loss" = tvdpp ] && name=tvdpp-token-q
  seeded "distill $loss" "$out/distill/$name" distill.loss=$loss "${common[@]}"
done
# A report row is the shortest path suffix that tells the drafters apart: with the ablation's other tvdpp-token-q
# runs beside it, the main one is distill/tvdpp-token-q.
tvdpp=tvdpp-token-q
[ "${SCIENCE_ABLATION:-1}" = 1 ] || [ "${SCIENCE_PRETRAIN_LEVERS:-0}" = 1 ] && tvdpp=distill/tvdpp-token-q
drafter FKL fkl "$out/distill/fkl"
drafter TVD tvd "$out/distill/tvd"
drafter TVD++ "$tvdpp" "$out/distill/tvdpp-token-q"
contrasts=("$tvdpp vs pretrain" "fkl vs pretrain" "tvd vs pretrain" "$tvdpp vs fkl" "$tvdpp vs tvd" "fkl vs tvd"
  "prompt-lookup vs $tvdpp" "$tvdpp+lookup vs prompt-lookup" "$tvdpp+lookup vs $tvdpp")

if [ "${SCIENCE_EAGLE3:-1}" = 1 ]; then
  seeded "distill eagle3-fkl" "$out/distill/eagle3-fkl" distill.kind=eagle3 distill.teacher=online distill.loss=fkl \
    distill.eagle3.steps="${SCIENCE_HEAD_STEPS:-600}" "${common[@]}"
  drafter "EAGLE-3 head (FKL)" eagle3-fkl "$out/distill/eagle3-fkl"
  contrasts+=("eagle3-fkl vs $tvdpp" "eagle3-fkl vs prompt-lookup" "eagle3-fkl+lookup vs $tvdpp+lookup")
fi

if [ "${SCIENCE_ABLATION:-1}" = 1 ]; then
  a="$out/ablation"
  # on-policy: from each seed's TVD++ drafter, 60 more steps against the online target, with half of the responses
  # sampled by the drafter itself (lambda 0.5) or none (the control at equal compute).
  for s in "${seeds[@]}"; do
    online=(distill.student="$out/distill/tvdpp-token-q/seed-$s/final" distill.teacher=online distill.train.steps=60
      distill.train.optim.lr=2e-4 distill.output_dir="$out/distill-online" distill.seed="$s")
    step "distill tvdpp +60 online seed $s" run distill "${online[@]}" "${common[@]}"
    step "distill tvdpp +60 on-policy seed $s" run distill distill.on_policy_fraction=0.5 "${online[@]}" "${common[@]}"
    dirs+=("$out/distill-online/tvdpp-token-q/seed-$s/final" "$out/distill-online/tvdpp-token-q-onpolicy0.5/seed-$s/final")
  done
  drafter "TVD++ +60 online" distill-online/tvdpp-token-q "$out/distill-online/tvdpp-token-q"
  drafter "TVD++ +60 on-policy" tvdpp-token-q-onpolicy0.5 "$out/distill-online/tvdpp-token-q-onpolicy0.5"
  contrasts+=("tvdpp-token-q-onpolicy0.5 vs distill-online/tvdpp-token-q")
  # target prompts: the Debian-built prompts only, the same number.
  step "generate debian-only" run generate generate.prompts=[.cache/prompts/train.jsonl] generate.prompt_weights=[] \
    generate.output_dir="$a/data-debian" "${common[@]}"
  seeded "distill debian-only" "$a/debian-only/tvdpp-token-q" distill.data_dir="$a/data-debian" \
    distill.output_dir="$a/debian-only" "${common[@]}"
  drafter "TVD++, Debian prompts only" debian-only/tvdpp-token-q "$a/debian-only/tvdpp-token-q"
  contrasts+=("distill/tvdpp-token-q vs debian-only/tvdpp-token-q")
  # more distillation: twice the prompts (the mix goes on into more magpie prompts) and twice the steps.
  step "magpie x2" run magpie magpie.count=400 magpie.output="$a/prompts/target-written-x2.jsonl" "${common[@]}"
  step "generate x2" run generate generate.max_prompts=800 \
    generate.prompts=[.cache/prompts/train.jsonl,"$a/prompts/target-written-x2.jsonl"] generate.output_dir="$a/data-x2" \
    "${common[@]}"
  seeded "distill x2" "$a/x2/tvdpp-token-q" distill.data_dir="$a/data-x2" distill.train.steps=600 \
    distill.output_dir="$a/x2" "${common[@]}"
  drafter "TVD++, 2x distillation" x2/tvdpp-token-q "$a/x2/tvdpp-token-q"
  contrasts+=("x2/tvdpp-token-q vs distill/tvdpp-token-q")
  # greedy data: the target's greedy answers (T = 0, the headline's decoding mode) in place of its samples.
  step "generate greedy" run generate generate.temperature=0 generate.output_dir="$a/data-greedy" "${common[@]}"
  seeded "distill greedy" "$a/greedy/tvdpp-token-q" distill.data_dir="$a/data-greedy" \
    distill.output_dir="$a/greedy" "${common[@]}"
  drafter "TVD++, greedy answers" greedy/tvdpp-token-q "$a/greedy/tvdpp-token-q"
  contrasts+=("greedy/tvdpp-token-q vs distill/tvdpp-token-q")
fi

if [ "${SCIENCE_PRETRAIN_LEVERS:-0}" = 1 ]; then
  a="$out/ablation"
  $py tools/make_corpus.py --out .cache/corpus/first-demo-text.jsonl --weights bible-kjv=1,gcide=1,wordnet=1,fortunes=1 \
    --total-mb 32
  step "prepare first-demo corpus" run prepare-data prepare.inputs=[.cache/corpus/first-demo-text.jsonl] \
    prepare.output_dir="$a/shards-first-demo" "${common[@]}"
  # arm NAME PRETRAIN_OVERRIDES...: pretrained and distilled (TVD++) once per pretraining seed, each distillation
  # from its own seed's drafter.
  arm() {
    local name=$1 s
    shift
    for s in "${pretrain_seeds[@]}"; do
      step "pretrain $name seed $s" run pretrain pretrain.seed="$s" pretrain.output_dir="$a/pre-$name" "$@" "${common[@]}"
      step "distill from $name seed $s" run distill distill.seed="$s" distill.student="$a/pre-$name/seed-$s/final" \
        distill.output_dir="$a/from-$name" "${common[@]}"
      dirs+=("$a/from-$name/tvdpp-token-q/seed-$s/final")
    done
  }
  arm main
  arm corpus pretrain.data_dir="$a/shards-first-demo"
  arm normal pretrain.embedding_init=normal
  arm x2 pretrain.train.steps=500
  drafter "TVD++ from a seeded pretraining" from-main/tvdpp-token-q "$a/from-main/tvdpp-token-q"
  drafter "TVD++, first demo's corpus" from-corpus/tvdpp-token-q "$a/from-corpus/tvdpp-token-q"
  drafter "TVD++, normal init" from-normal/tvdpp-token-q "$a/from-normal/tvdpp-token-q"
  drafter "TVD++, 2x pretraining" from-x2/tvdpp-token-q "$a/from-x2/tvdpp-token-q"
  contrasts+=("from-main/tvdpp-token-q vs from-corpus/tvdpp-token-q" "from-main/tvdpp-token-q vs from-normal/tvdpp-token-q"
    "from-x2/tvdpp-token-q vs from-main/tvdpp-token-q")
fi

list() { local IFS=,; echo "[$*]"; }
quoted=()
for c in "${contrasts[@]}"; do quoted+=("'$c'"); done
step evaluate run evaluate evaluate.drafters="$(list "${dirs[@]}")" evaluate.contrasts="$(list "${quoted[@]}")" \
  evaluate.report_dir="$out/report" "${common[@]}"
$py tools/science_table.py "$out" | tee "$out/science.md"
# Out of domain: the same drafters on the 80 Vicuna-bench questions (one turn; unlike the training prompts, never used
# to choose anything), exact greedy tau only; distillation must not lower tau against the pretrained drafter there.
ood=()
for c in "${contrasts[@]}"; do [[ "$c" == *" vs pretrain" ]] && ood+=("'$c'"); done
step "evaluate out of domain" run evaluate evaluate.drafters="$(list "${dirs[@]}")" \
  evaluate.prompts=[.cache/prompts/vicuna.jsonl] evaluate.turns=1 evaluate.timed_prompts=0 \
  evaluate.sampling_temperatures=[] evaluate.contrasts="$(list "${ood[@]}")" evaluate.report_dir="$out/report-ood" \
  "${common[@]}"
