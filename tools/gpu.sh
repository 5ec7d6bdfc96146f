#!/usr/bin/env bash
# The one script for a GPU machine that has Python with PyTorch (CUDA), nvcc, CMake and Ninja (and transformers,
# matplotlib) but no Debian packages and no network.
#
#   bash tools/gpu.sh fetch    here, on a Debian 12 machine with apt and the demo's assets (bash tools/demo.sh made
#                              them): the .debs the build needs into .cache/debs; the target's tokenizer files and the
#                              demo's inputs (corpus, prompts) into .cache/gpu-assets; the SmolLM2 GGUF (94 MiB) cut in
#                              two halves, .cache/gpu-target-a and .cache/gpu-target-b (with the gguf wheel), because a
#                              call to the GPU machine carries at most 64 MiB.
# On the GPU machine, with those folders copied along; steps can be chained (`bash tools/gpu.sh target demo`):
#   run       unpacks the .debs into a prefix, builds build-gpu/ with the CUDA kernels for the GPU's architecture, runs
#             the gpu-labelled tests and the distill/evaluate/pipeline tests on the GPU, and the benchmarks: copy
#             bandwidth, the fused TVD++ kernel against the composite loss, the fused head + loss against materialised
#             logits, the pretraining step against PyTorch eager
#   target    joins the GGUF halves and converts SmolLM2-135M-Instruct (transformers + the carried gguf wheel), then
#             generation tokens/s against transformers' generate (bench/generate_vs_hf.py)
#   demo      `draftalign pipeline --config configs/demo-gpu.yaml` within the call's time left (complete stages are
#             skipped and an interrupted one resumes, so `demo` again goes on), then the report's tau and speed-up
#             table and the cost model of speculative decoding with the TVD++ drafter (bench_speculative)
#   table     prints the summary of every step run so far
# A lent machine with a 64 MiB and 10-minute limit per call (files left in ignored folders stay while it is held):
#   call 1  carry .cache/debs .cache/gpu-assets .cache/gpu-target-a    bash tools/gpu.sh run
#   call 2  carry .cache/gpu-target-b                                  bash tools/gpu.sh target demo
#   call 3  (if call 2 said the demo is not finished)                   bash tools/gpu.sh demo
# Every step records itself in build-gpu/out/steps.jsonl beside the JSON its tests and benchmarks write, and ends by
# printing the summary table that tools/gpu_summary.py reads from them; it copies the table, the JSON and the step's
# logs into $OUT when that is set. Environment: DRAFTALIGN_PYTHON (default python3): the interpreter whose
# torch is built against; DRAFTALIGN_CUDA_ARCHS (default: read off the GPU); DRAFTALIGN_GPU_SECONDS (default 570): the
# time this invocation may take, which `demo` keeps to.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
deadline=$((SECONDS + ${DRAFTALIGN_GPU_SECONDS:-570}))
debs=(libyaml-cpp-dev libyaml-cpp0.7 libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libgtest-dev libgmock-dev
      nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libgloo-dev libxxhash-dev)
smol=.cache/models/SmolLM2-135M-Instruct
smol_files=(tokenizer.json tokenizer_config.json chat_template.jinja config.json generation_config.json)
gguf=.cache/downloads/SmolLM2-135M-Instruct.Q4_1.gguf
log=$root/build-gpu/out
prefix=/tmp/draftalign-deps
python=${DRAFTALIGN_PYTHON:-python3}
# For a dry run of target/demo on a machine without a GPU: DRAFTALIGN_GPU_DEVICE=cpu DRAFTALIGN_GPU_BUILD=build, and
# DRAFTALIGN_DEMO_ARGS for section.key=value overrides of the demo (e.g. fewer steps).
bin=${DRAFTALIGN_GPU_BUILD:-build-gpu}
device=${DRAFTALIGN_GPU_DEVICE:-cuda}

fetch() {
  mkdir -p .cache/debs .cache/gpu-assets/tokenizer .cache/gpu-target-a .cache/gpu-target-b
  (cd .cache/debs && apt-get download "${debs[@]}")
  # The tokenizer files of the target (a few MB, not the weights): the tiny end-to-end tests borrow them.
  for f in "${smol_files[@]}"; do [ -f "$smol/$f" ] && cp "$smol/$f" .cache/gpu-assets/tokenizer/; done
  [ -f "$gguf" ] && [ -f .cache/corpus/debian-text.jsonl ] && [ -f .cache/prompts/mt-bench.jsonl ] ||
    { echo "gpu.sh: the demo's assets are missing: run 'bash tools/demo.sh' once first"; exit 1; }
  tar -cJf .cache/gpu-assets/demo-inputs.tar.xz .cache/corpus/debian-text.jsonl .cache/prompts
  local half=$(( ($(stat -c %s "$gguf") + 1) / 2 ))
  head -c "$half" "$gguf" >.cache/gpu-target-a/gguf.part1
  tail -c +"$((half + 1))" "$gguf" >.cache/gpu-target-b/gguf.part2
  sha256sum "$gguf" | cut -d' ' -f1 >.cache/gpu-target-a/gguf.sha256
  rm -f .cache/gpu-target-b/gguf-*.whl
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .cache/gpu-target-b \
    "$(grep -E '^gguf==' tools/requirements-assets.txt)"
  du -sh .cache/debs .cache/gpu-assets .cache/gpu-target-a .cache/gpu-target-b
}

# The unpacked .debs on the library path (every step needs them: the binaries link yaml-cpp and SentencePiece).
deps() {
  ls .cache/debs/*.deb >/dev/null 2>&1 || { echo "gpu.sh: no .cache/debs/*.deb: run 'bash tools/gpu.sh fetch' first"; exit 1; }
  if [ ! -f "$prefix/.unpacked" ]; then
    mkdir -p "$prefix"
    for f in .cache/debs/*.deb; do dpkg -x "$f" "$prefix"; done
    touch "$prefix/.unpacked"
  fi
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# The demo's corpus and prompts, from the carried archive.
inputs() { [ -f .cache/corpus/debian-text.jsonl ] && [ -f .cache/prompts/train.jsonl ] || tar -xJf .cache/gpu-assets/demo-inputs.tar.xz; }

need_build() { [ -x "$bin/draftalign" ] || { echo "gpu.sh: $bin/draftalign is not built: run 'bash tools/gpu.sh run' first"; exit 1; }; }

# record <step> <rc> <seconds> [, "key": value...]: one line of steps.jsonl, which the summary reads.
record() { printf '{"step": "%s", "rc": %d, "seconds": %d%s}\n' "$1" "$2" "$3" "${4:-}" >>"$log/steps.jsonl"; }

run() {
  deps
  local gpu archs torch_prefix t0 t_step=$SECONDS
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
  archs=${DRAFTALIGN_CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
  torch_prefix=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  echo "gpu.sh: $gpu; sm_$archs; torch $("$python" -c 'import torch; print(torch.__version__)'); $(nvcc --version | tail -1)"
  echo "gpu.sh: commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
  echo "$gpu" >"$log/device.txt"

  t0=$SECONDS
  DRAFTALIGN_PREFIX_PATH="$torch_prefix;$prefix/usr" DRAFTALIGN_PYTHON="$python" cmake --preset gpu -B "$bin" \
    -DDRAFTALIGN_CUDA_ARCHS="$archs" >"$log/configure.log" 2>&1 \
    || { tail -40 "$log/configure.log"; echo "gpu.sh: configure failed"; exit 1; }
  grep -E '^-- draftalign' "$log/configure.log" || true
  cmake --build "$bin" -j "$(nproc)" >"$log/build.log" 2>&1 \
    || { grep -E -A12 'error|FAILED' "$log/build.log" | head -80; echo "gpu.sh: build failed"; exit 1; }
  local build_s=$((SECONDS - t0))
  echo "gpu.sh: built in ${build_s} s"

  # Kernel resource usage (registers, shared memory, spills), from the object the build made.
  cuobjdump --dump-resource-usage "$bin/CMakeFiles/draftalign_cuda.dir/kernels/tvd.cu.o" 2>/dev/null \
    | grep -E 'Function|REG' | sed 's/^ *//' >"$log/tvd-resources.txt" || true

  local rc=0
  (cd "$bin" && ctest -L gpu --output-on-failure -V --output-junit "$log/ctest-gpu.xml") >"$log/ctest-gpu.log" 2>&1 ||
    rc=$?
  grep -E 'cases; worst|Passed|Failed|SKIPPED|tests passed|FAILED' "$log/ctest-gpu.log" | tail -20
  # The end-to-end tests of distill, evaluate and pipeline (and the std::filesystem link check) run on the GPU here
  # (run.device=auto): bf16 autocast, the fused kernel, speculative decoding with bf16 models.
  if [ -d .cache/gpu-assets/tokenizer ] && [ ! -f "$smol/tokenizer.json" ]; then
    mkdir -p "$smol" && cp .cache/gpu-assets/tokenizer/* "$smol/"
  fi
  (cd "$bin" && ctest -R '^(Distill|TorchLink|Evaluate|SpeculativeDecoding|AcceptReject|Pipeline)\.' \
    --output-on-failure -V --output-junit "$log/ctest-distill.xml") >"$log/ctest-distill.log" 2>&1 || rc=$?
  grep -E 'held-out alpha|Passed|Failed|tests passed' "$log/ctest-distill.log" | tail -8

  "$bin/bench/bench_copy" --mib 2048 --iters 20 --out "$log/bench_copy.json" | tee "$log/bench_copy.txt"
  "$bin/bench/bench_tvd" --iters 20 --out "$log/bench_tvd.json" | tee "$log/bench_tvd.txt"
  # The fused output head + loss against the materialised logits, N = 16k tokens, V = 49k and 128k.
  timeout 240 "$bin/bench/bench_fused_head" --iters 10 --out "$log/bench_fused_head.json" | tee "$log/bench_fused_head.txt" ||
    echo "gpu.sh: bench_fused_head failed"
  # Pretraining step: our binary next to transformers + torch.optim.AdamW in the same run (bench/pretrain_vs_eager.py).
  DRAFTALIGN_BUILD_DIR=$bin timeout 300 "$python" bench/pretrain_vs_eager.py --device cuda \
    --json "$log/bench_pretrain.json" 2>&1 | tee "$log/bench_pretrain.txt" || echo "gpu.sh: pretrain benchmark failed"

  record run "$rc" $((SECONDS - t_step)) ", \"build_s\": $build_s, \"archs\": \"$archs\""
  finish ctest-gpu.log ctest-distill.log ctest-gpu.xml ctest-distill.xml bench_copy.json bench_tvd.json \
    bench_fused_head.json bench_pretrain.json
  return "$rc"
}

target() {
  local t_step=$SECONDS
  deps
  need_build
  if [ ! -f "$smol/draftalign-asset.json" ]; then
    if [ ! -f "$gguf" ]; then
      [ -f .cache/gpu-target-a/gguf.part1 ] && [ -f .cache/gpu-target-b/gguf.part2 ] ||
        { echo "gpu.sh: the GGUF halves are not both here: carry .cache/gpu-target-a (call 1) and .cache/gpu-target-b"; exit 1; }
      mkdir -p "$(dirname "$gguf")"
      cat .cache/gpu-target-a/gguf.part1 .cache/gpu-target-b/gguf.part2 >"$gguf.part"
      [ "$(sha256sum "$gguf.part" | cut -d' ' -f1)" = "$(cat .cache/gpu-target-a/gguf.sha256)" ] ||
        { rm -f "$gguf.part"; echo "gpu.sh: the joined GGUF does not match its checksum (halves from two fetches?)"; exit 1; }
      mv "$gguf.part" "$gguf"
    fi
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/draftalign-site .cache/gpu-target-b/gguf-*.whl
    PYTHONPATH=/tmp/draftalign-site "$python" tools/prepare_target.py --out "$smol"
  fi
  inputs
  DRAFTALIGN_BUILD_DIR=$bin "$python" bench/generate_vs_hf.py --device "$device" --json "$log/generate_vs_hf.json" 2>&1 |
    tee "$log/generate_vs_hf.txt" || echo "gpu.sh: generation benchmark failed"
  record target 0 $((SECONDS - t_step))
  finish generate_vs_hf.txt generate_vs_hf.json
}

demo() {
  deps
  need_build
  [ -f "$smol/draftalign-asset.json" ] || { echo "gpu.sh: no target in $smol: run 'bash tools/gpu.sh target' first"; exit 1; }
  inputs
  local left=$((deadline - SECONDS - 20)) rc=0 t0=$SECONDS
  [ "$left" -gt 60 ] || { echo "gpu.sh: no time left in this call for the demo; run 'bash tools/gpu.sh demo' next"; exit 1; }
  echo "gpu.sh: demo pipeline (configs/demo-gpu.yaml) for at most $left s"
  DRAFTALIGN_PYTHON=$python timeout "$left" "$bin/draftalign" pipeline --config configs/demo-gpu.yaml \
    ${DRAFTALIGN_DEMO_ARGS:-} >>"$log/pipeline.log" 2>&1 || rc=$?
  local report=runs/demo-gpu/report/report.json
  record demo "$rc" $((SECONDS - t0)) ", \"report\": \"$report\""
  if [ "$rc" -ne 0 ] || [ ! -f "$report" ]; then
    tail -5 "$log/pipeline.log"
    finish pipeline.log
    return 0
  fi
  local drafter=runs/demo-gpu/distill/tvdpp-token-q/final
  "$bin/bench/bench_speculative" --target "$smol" --drafter "$drafter" --device "$device" \
    --out "$log/bench_speculative.json" | tee "$log/bench_speculative.txt" || echo "gpu.sh: bench_speculative failed"
  cp runs/demo-gpu/report/report.md "$log/demo-report.md"
  finish pipeline.log demo-report.md bench_speculative.json
}

# finish <files>: prints the summary of every step so far and copies it, with the given logs, into $OUT if set.
finish() {
  table | tee "$log/summary.md"
  if [ -n "${OUT:-}" ] && [ "$OUT" != "$log" ]; then
    mkdir -p "$OUT"
    cp "$log/summary.md" "$OUT/"
    for f in "$@"; do [ -f "$log/$f" ] && cp "$log/$f" "$OUT/"; done
  fi
  return 0
}

table() { "$python" tools/gpu_summary.py "$log"; }

[ $# -gt 0 ] || { echo "usage: bash tools/gpu.sh fetch | {run|target|demo|table}..."; exit 2; }
[ "$1" = fetch ] && { fetch; exit; }
mkdir -p "$log"
status=0
for step in "$@"; do
  case "$step" in
    run | target | demo | table) "$step" || status=$? ;;
    *) echo "usage: bash tools/gpu.sh fetch | {run|target|demo|table}..."; exit 2 ;;
  esac
done
exit "$status"
