#!/usr/bin/env bash
# The one script for a GPU machine that has Python with PyTorch (CUDA), nvcc, CMake and Ninja but no Debian packages
# and no network. Two steps:
#   bash tools/gpu.sh fetch   on a Debian 12 machine with apt: downloads the .debs the build needs (yaml-cpp,
#                             SentencePiece, GoogleTest, nlohmann-json, PCRE2, the gloo headers) into .cache/debs
#   bash tools/gpu.sh run     on the GPU machine, with .cache/debs copied along: unpacks them into a prefix, builds
#                             build-gpu/ with the CUDA kernels for the GPU's architecture, runs the gpu-labelled tests
#                             and the GPU benchmarks, and prints a summary table last
# Environment: DRAFTALIGN_PYTHON (default python3): the interpreter whose torch is built against; OUT (default
# build-gpu/out): where logs and the benchmarks' JSON go; DRAFTALIGN_CUDA_ARCHS (default: read off the GPU).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
debs=(libyaml-cpp-dev libyaml-cpp0.7 libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libgtest-dev libgmock-dev
      nlohmann-json3-dev libpcre2-dev libpcre2-8-0 libgloo-dev)

# The tokenizer files of the SmolLM2 target (a few MB, not the weights): the tiny end-to-end tests borrow them.
smol=.cache/models/SmolLM2-135M-Instruct
smol_files=(tokenizer.json tokenizer_config.json chat_template.jinja config.json generation_config.json)

fetch() {
  mkdir -p .cache/debs .cache/gpu-assets/tokenizer
  (cd .cache/debs && apt-get download "${debs[@]}")
  for f in "${smol_files[@]}"; do [ -f "$smol/$f" ] && cp "$smol/$f" .cache/gpu-assets/tokenizer/; done
  du -sh .cache/debs .cache/gpu-assets
}

run() {
  local out=${OUT:-$root/build-gpu/out} prefix=/tmp/draftalign-deps python=${DRAFTALIGN_PYTHON:-python3}
  mkdir -p "$out" "$prefix"
  ls .cache/debs/*.deb >/dev/null 2>&1 || { echo "gpu.sh: no .cache/debs/*.deb: run 'bash tools/gpu.sh fetch' first"; exit 1; }
  for f in .cache/debs/*.deb; do dpkg -x "$f" "$prefix"; done
  export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local gpu archs torch_prefix t0
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
  archs=${DRAFTALIGN_CUDA_ARCHS:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)}
  torch_prefix=$("$python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
  echo "gpu.sh: $gpu; sm_$archs; torch $("$python" -c 'import torch; print(torch.__version__)'); $(nvcc --version | tail -1)"
  echo "gpu.sh: commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"

  t0=$SECONDS
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" \
    -DPython3_EXECUTABLE="$python" -DDRAFTALIGN_CUDA=ON -DDRAFTALIGN_CUDA_ARCHS="$archs" >"$out/configure.log" 2>&1 \
    || { tail -40 "$out/configure.log"; echo "gpu.sh: configure failed"; exit 1; }
  grep -E '^-- draftalign' "$out/configure.log" || true
  cmake --build build-gpu -j "$(nproc)" >"$out/build.log" 2>&1 \
    || { grep -E -A12 'error|FAILED' "$out/build.log" | head -80; echo "gpu.sh: build failed"; exit 1; }
  local build_s=$((SECONDS - t0))
  echo "gpu.sh: built in ${build_s} s"

  # Kernel resource usage (registers, shared memory, spills), from the object the build made.
  cuobjdump --dump-resource-usage build-gpu/CMakeFiles/draftalign_cuda.dir/kernels/tvd.cu.o 2>/dev/null \
    | grep -E 'Function|REG' | sed 's/^ *//' >"$out/tvd-resources.txt" || true

  local rc=0
  (cd build-gpu && ctest -L gpu --output-on-failure -V) >"$out/ctest-gpu.log" 2>&1 || rc=$?
  grep -E 'cases; worst|Passed|Failed|SKIPPED|tests passed|FAILED' "$out/ctest-gpu.log" | tail -20
  # The end-to-end tests of distill, evaluate and pipeline (and the std::filesystem link check) run on the GPU here
  # (run.device=auto): bf16 autocast, the fused kernel, speculative decoding with bf16 models.
  if [ -d .cache/gpu-assets/tokenizer ] && [ ! -f "$smol/tokenizer.json" ]; then
    mkdir -p "$smol" && cp .cache/gpu-assets/tokenizer/* "$smol/"
  fi
  (cd build-gpu && ctest -R '^(Distill|TorchLink|Evaluate|SpeculativeDecoding|AcceptReject|Pipeline)\.' \
    --output-on-failure -V) >"$out/ctest-distill.log" 2>&1 || rc=$?
  grep -E 'held-out alpha|Passed|Failed|tests passed' "$out/ctest-distill.log" | tail -8

  build-gpu/bench/bench_copy 2048 20 | tee "$out/bench_copy.txt"
  build-gpu/bench/bench_tvd --iters 20 --out "$out/bench_tvd.json" | tee "$out/bench_tvd.txt"
  # Pretraining step: our binary next to transformers + torch.optim.AdamW in the same run (bench/pretrain_vs_eager.py).
  DRAFTALIGN_BUILD_DIR=build-gpu timeout 300 "$python" bench/pretrain_vs_eager.py --device cuda \
    --json "$out/bench_pretrain.json" 2>&1 | tee "$out/bench_pretrain.txt" || echo "gpu.sh: pretrain benchmark failed"

  echo
  echo "## summary ($gpu)"
  echo "| step | result |"
  echo "|---|---|"
  echo "| build (sm_$archs) | ${build_s} s |"
  echo "| ctest -L gpu | $(grep -E 'tests passed' "$out/ctest-gpu.log" || echo 'see ctest-gpu.log') |"
  echo "| distill / evaluate / pipeline tests on the GPU | $(grep -E 'tests passed' "$out/ctest-distill.log" || echo 'see ctest-distill.log') |"
  echo "| copy bandwidth | $(grep -E '^\| Tensor::copy_' "$out/bench_copy.txt" | cut -d'|' -f3) GB/s |"
  grep -E '^\| (115M|demo)' "$out/bench_pretrain.txt" | sed 's/^/| pretrain /; s/ |$//' | cut -c1-200 || true
  grep -E '^\| [0-9]' "$out/bench_tvd.txt" | awk -F'|' '{printf "| tvd kernel %s %s %s | %s ms vs composite %s ms, %s, %s GB/s |\n", $2, $3, $4, $6 < $7 ? $6 : $7, $5, $8, $9}'
  return "$rc"
}

case "${1:-}" in
  fetch) fetch ;;
  run) run ;;
  *) echo "usage: bash tools/gpu.sh fetch|run"; exit 2 ;;
esac
