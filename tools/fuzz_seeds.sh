#!/usr/bin/env bash
# Refreshes tests/fuzz/corpus/<target>/, the fuzzers' seeds, from real files: the ones the tests make (a few ctest
# tests of BUILD_DIR run with DRAFTALIGN_KEEP_SCRATCH, which keeps each scratch directory), the shipped configs, and
# the goldens' tokenizers. Seeds are the small files (at most 64 KiB), named by their SHA-1 so a refresh adds no
# duplicates.  Usage: bash tools/fuzz_seeds.sh BUILD_DIR
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "${1:?usage: tools/fuzz_seeds.sh BUILD_DIR}" && pwd)
corpus=$root/tests/fuzz/corpus
keep=$(mktemp -d)
trap 'rm -rf "$keep"' EXIT

tests='^(PromptFiles\.|PrepareData\.|TokenShards\.|Safetensors\.|Generate\.KilledRun|Evaluate\.InterruptedRun|Pretrain\.LossFalls)'
(cd "$build" && DRAFTALIGN_KEEP_SCRATCH=$keep ctest -R "$tests" -j "$(nproc)" >/dev/null) ||
  echo "[fuzz-seeds] some tests failed; seeding from the files they made anyway" >&2

# add TARGET FILE...: each small file as a seed of TARGET.
add() {
  local t=$1 f
  shift
  mkdir -p "$corpus/$t"
  for f in "$@"; do
    [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 65536 ] || continue
    cp "$f" "$corpus/$t/$(sha1sum "$f" | cut -c1-16)"
  done
}
files() { find "$keep" "$@" -type f -print0 | xargs -0 -r ls -S | tail -n 12; }  # the 12 smallest

add config "$root"/configs/*.yaml
mapfile -t f < <(files -name '*.safetensors'); add safetensors "${f[@]}"
mapfile -t f < <(find "$root/.cache/golden/tokenizer" -name tokenizer.json); add tokenizer_json "${f[@]}"
mapfile -t f < <(files -name '*.jsonl' ! -name 'sweep.jsonl' ! -name 'metrics.jsonl' ! -name '*preview*'); add prompts "${f[@]}"
[ -f "$root/.cache/prompts/mt-bench.jsonl" ] && head -n 8 "$root/.cache/prompts/mt-bench.jsonl" > "$keep/mt-bench-head.jsonl" &&
  add prompts "$keep/mt-bench-head.jsonl"
mapfile -t f < <(files -name sweep.jsonl); add sweep "${f[@]}"
mapfile -t f < <(files -name trainer_state.json); add trainer_state "${f[@]}"
mapfile -t f < <(files -name manifest.json ! -name '*.jsonl.manifest.json'); add manifest "${f[@]}"
mapfile -t f < <(files -name config.json); add hf_config "${f[@]}"
# token_shards: u32 little-endian length | index.json | the bytes of its first shard (fuzz_token_shards.cpp).
while IFS= read -r -d '' index; do
  shard=$(find "$(dirname "$index")" -maxdepth 1 -name '*.bin' -size -60k | sort | head -n 1)
  [ -n "$shard" ] || continue
  out=$keep/token-shards-$RANDOM
  python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<I", len(open(sys.argv[1],"rb").read())))' \
    "$index" > "$out"
  cat "$index" "$shard" >> "$out"
  add token_shards "$out"
done < <(find "$keep" -name index.json -size -60k -print0)
for t in "$corpus"/*/; do echo "[fuzz-seeds] $(basename "$t"): $(ls "$t" | wc -l) seeds"; done
