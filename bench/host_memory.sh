#!/usr/bin/env bash
# Times the demo drafter's CPU training step (bench_pretrain) with draftalign's host memory set-up and with
# DRAFTALIGN_HOST_MEMORY=plain (glibc's and LibTorch's defaults), alternating, and prints the step time, the kernel's
# share of the CPU time and the peak RSS of each run, then the median ratio.
# Usage: bash bench/host_memory.sh [rounds=3] [batch=8]   (from the repository root, after the build)
set -euo pipefail
rounds=${1:-3} batch=${2:-8}
bin=${DRAFTALIGN_BUILD_DIR:-build}/bench/bench_pretrain
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "| run | host memory | step s | tokens/s | sys / (user + sys) | peak RSS MiB |"
echo "|---|---|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
  for mode in tuned plain; do
    DRAFTALIGN_HOST_MEMORY=$mode /usr/bin/time -f "%U %S" -o "$tmp/time" \
      "$bin" --config configs/demo.yaml --batch "$batch" --steps 5 --warmup 2 --out "$tmp/$mode-$r.json" >/dev/null
    python3 - "$tmp/$mode-$r.json" "$tmp/time" "$r" "$mode" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); user, sys_s = map(float, open(sys.argv[2]).read().split()[-2:])
print(f"| {sys.argv[3]} | {sys.argv[4]} | {d['step_s']:.3f} | {d['tokens_per_s']:.0f} | "
      f"{sys_s / (user + sys_s):.2f} | {d['peak_bytes'] / 2**20:.0f} |")
PY
  done
done
python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
t = {m: [json.load(open(f"{sys.argv[1]}/{m}-{r}.json"))["step_s"] for r in range(1, int(sys.argv[2]) + 1)]
     for m in ("tuned", "plain")}
print(f"\nmedian step: tuned {statistics.median(t['tuned']):.3f} s, plain {statistics.median(t['plain']):.3f} s, "
      f"speed-up {statistics.median(t['plain']) / statistics.median(t['tuned']):.2f}x")
PY
