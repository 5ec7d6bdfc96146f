#!/usr/bin/env bash
# Fuzz the parsers of user-supplied files with libFuzzer, ASan and UBSan (tests/fuzz; clang from Debian).
#   bash tools/fuzz.sh build                 configure and build build-fuzz/ (clang, DRAFTALIGN_FUZZ=ON)
#   bash tools/fuzz.sh run SECONDS [TARGET]  fuzz every target (or one) for SECONDS each, from its seeds; new inputs go
#                                            to build-fuzz/corpus/<target>/, findings to build-fuzz/findings/<target>/
#   bash tools/fuzz.sh smoke [SECONDS]       CI: every target over its regressions, then SECONDS (default 5) of fuzzing
#   bash tools/fuzz.sh seeds BUILD_DIR       refresh tests/fuzz/corpus/ from the files the tests make (runs a few
#                                            ctest tests of BUILD_DIR with DRAFTALIGN_KEEP_SCRATCH)
# Every run prints one line per target: executions, executions/s, corpus size, findings. FUZZ_JOBS (default: the
# cores) targets run at a time. A finding is a crash, a sanitizer report, a leak, a hang (over 10 s), or an exception
# other than draftalign::Error escaping the parser; libFuzzer writes the input to findings/<target>/ and the run
# fails. Fix it, then copy the input to tests/fuzz/regressions/<target>/: `smoke` (in ctest) replays them all.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DRAFTALIGN_FUZZ_BUILD_DIR:-$root/build-fuzz}
targets=(config safetensors token_shards tokenizer_json prompts sweep trainer_state manifest hf_config)
say() { printf '[fuzz] %s\n' "$*" >&2; }
die() { printf '[fuzz] error: %s\n' "$*" >&2; exit 1; }

build() {
  command -v clang++ >/dev/null || die "clang++ not found: run tools/setup.sh (it installs clang and libclang-rt-14-dev)"
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDRAFTALIGN_FUZZ=ON \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DDRAFTALIGN_TESTS=OFF >/dev/null
  fi
  cmake --build "$build" -- -j "${FUZZ_JOBS:-$(nproc)}" >/dev/null || cmake --build "$build" -- -j 1
}

# scratch_dir TARGET: where the target writes its inputs (in memory when /dev/shm is there); removed after the run.
scratch_dir() {
  local base=/dev/shm
  [ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
  echo "$base/draftalign-fuzz-$$-$1"
}

# fuzz_one TARGET SECONDS: fuzzes from the seeds and the regressions into build-fuzz/corpus/TARGET; prints a summary.
fuzz_one() {
  local t=$1 seconds=$2 work=$build/corpus/$1 found=$build/findings/$1 log=$build/logs/$1.log
  mkdir -p "$work" "$found" "$build/logs"
  local dirs=("$work")
  for d in "$root/tests/fuzz/corpus/$t" "$root/tests/fuzz/regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
  local rc=0 scratch
  scratch=$(scratch_dir "$t")
  DRAFTALIGN_FUZZ_SCRATCH=$scratch ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
    UBSAN_OPTIONS=print_stacktrace=1 "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix="$found/" "${dirs[@]}" >"$log" 2>&1 ||
    rc=$?
  rm -rf "$scratch"
  local runs speed
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  printf '%-16s %12s runs %8s/s %6s corpus %4s findings%s\n' "$t" "${runs:-?}" "${speed:-?}" \
    "$(find "$work" -type f | wc -l)" "$(find "$found" -type f | wc -l)" "$([ $rc -ne 0 ] && echo "  FAILED: $log")"
  return $rc
}

# replay TARGET: every checked-in regression input once; fails on any finding.
replay() {
  local t=$1 dir=$root/tests/fuzz/regressions/$1
  [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] || return 0
  local scratch rc=0
  scratch=$(scratch_dir "$t")
  DRAFTALIGN_FUZZ_SCRATCH=$scratch ASAN_OPTIONS=detect_leaks=1 "$build/tests/fuzz/fuzz_$t" -timeout=10 -runs=1 \
    "$dir"/* >"$build/logs/$t.replay.log" 2>&1 || rc=$?
  rm -rf "$scratch"
  [ $rc -eq 0 ] || { cat "$build/logs/$t.replay.log" >&2; die "$t: a regression input fails again (tests/fuzz/regressions/$t)"; }
}

cmd=${1:-}
case "$cmd" in
  build) build ;;
  run | smoke)
    seconds=${2:-5}
    [ "$cmd" = run ] && [ -z "${2:-}" ] && die "usage: tools/fuzz.sh run SECONDS [TARGET]"
    build
    mkdir -p "$build/logs"
    sel=("${targets[@]}")
    [ -n "${3:-}" ] && sel=("$3")
    if [ "$cmd" = smoke ]; then for t in "${sel[@]}"; do replay "$t"; done; fi
    failed=0
    jobs=${FUZZ_JOBS:-$(nproc)}
    for t in "${sel[@]}"; do
      fuzz_one "$t" "$seconds" &
      while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed=1; done
    done
    while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
    [ $failed -eq 0 ] || die "findings: see build-fuzz/findings/ and build-fuzz/logs/"
    ;;
  seeds) bash "$root/tools/fuzz_seeds.sh" "${2:?usage: tools/fuzz.sh seeds BUILD_DIR}" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
