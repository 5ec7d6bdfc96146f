#!/usr/bin/env bash
# Fresh-machine setup for draftalign, safe to re-run: it only does what is missing.
#   1. Debian packages (compilers, yaml-cpp, sentencepiece, GoogleTest, nlohmann-json, PCRE2, zlib, ccache, ...)
#   2. a project-local Python venv (.venv) with the pinned torch wheel: this is where LibTorch comes from
#   3. a CMake + Ninja build in build/ (incremental on re-runs; ccache when present)
# Usage: bash tools/setup.sh            # all three
#        SKIP_BUILD=1 bash tools/setup.sh   # packages and venv only
# Environment: DRAFTALIGN_BUILD_DIR (default build), DRAFTALIGN_BUILD_TYPE (default Release),
#              DRAFTALIGN_JOBS (default: number of cores), DRAFTALIGN_CMAKE_ARGS (extra configure arguments),
#              DRAFTALIGN_PYTHON=/path/to/python: build against the torch that interpreter has (a GPU machine's own
#                PyTorch) instead of creating .venv; SKIP_APT=1: do not install Debian packages (they are already
#                there, or the configure step is pointed at them with DRAFTALIGN_CMAKE_ARGS);
#              DRAFTALIGN_ASSETS=1: also install tools/requirements-assets.txt (tools/demo.sh and tools/test.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- 1. Debian packages ---------------------------------------------------------------------------------------------
apt_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libyaml-cpp-dev libsentencepiece-dev libgtest-dev libgmock-dev nlohmann-json3-dev libpcre2-dev libutf8proc-dev zlib1g-dev libgloo-dev
  libxxhash-dev xxhash  # XXH3 checksums (header-only use), and xxhsum, which the tests check them with
  clang libclang-rt-14-dev  # libFuzzer, ASan and UBSan for the fuzz targets (tools/fuzz.sh)
  # the demo corpus (tools/make_corpus.py): dictionary, WordNet glosses, the KJV Bible, fortune cookies, the Python
  # standard library and its documentation, the Debian Reference, the Linux man-pages
  dict-gcide wordnet-base bible-kjv bible-kjv-text fortunes fortunes-min
  libpython3.11-stdlib python3.11-doc debian-reference-en manpages manpages-dev
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ] && [ "${SKIP_APT:-0}" != 1 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- 2. Python venv with the pinned torch wheel ---------------------------------------------------------------------
venv="$root/.venv"

# pip_sync FILE: install a requirements file into .venv unless the same file (by sha256) was installed before.
pip_sync() {
  local req=$1 stamp want
  stamp="$venv/.draftalign-$(basename "$req" .txt).sha256"
  want=$(sha256sum "$req" | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  say "installing Python packages from ${req#"$root"/}"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}

if [ -n "${DRAFTALIGN_PYTHON:-}" ]; then
  torch_python=$DRAFTALIGN_PYTHON
  "$torch_python" -c 'import torch' 2>/dev/null || die "DRAFTALIGN_PYTHON=$torch_python cannot import torch"
  say "using the torch of $torch_python ($("$torch_python" -c 'import torch; print(torch.__version__)'))"
else
  if [ ! -x "$venv/bin/python" ]; then
    py=${PYTHON:-python3}
    command -v "$py" >/dev/null || die "python3 not found; install Debian's python3 and python3-venv"
    say "creating venv in .venv with $($py --version 2>&1) (torch is large: the first install takes a few minutes)"
    "$py" -m venv "$venv" || die "python3 -m venv failed; on Debian run: apt-get install python3-venv"
  fi
  pip_sync "$root/tools/requirements.txt"
  torch_python=$venv/bin/python
fi
# The asset tools (transformers, gguf): tools/demo.sh and tools/test.sh ask for them.
if [ "${DRAFTALIGN_ASSETS:-0}" = 1 ]; then
  if [ -n "${DRAFTALIGN_PYTHON:-}" ]; then
    "$torch_python" -c 'import transformers, gguf, safetensors' 2>/dev/null \
      || say "warning: $torch_python lacks transformers/gguf/safetensors; tools/requirements-assets.txt lists them"
  else
    pip_sync "$root/tools/requirements-assets.txt"
  fi
fi

[ "${SKIP_BUILD:-0}" = 1 ] && exit 0

# --- 3. Configure and build -----------------------------------------------------------------------------------------
build=${DRAFTALIGN_BUILD_DIR:-build}
prefix=$("$torch_python" -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
# ccache and precompiled headers: ignore the things a PCH makes look different on every build.
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
if [ ! -f "$build/build.ninja" ]; then
  say "configuring $build"
  # The build line is CMakePresets.json's (shared with tools/gpu.sh and the README).
  # shellcheck disable=SC2086
  DRAFTALIGN_PREFIX_PATH="$prefix" DRAFTALIGN_PYTHON="$torch_python" cmake --preset default -B "$build" \
    -DCMAKE_BUILD_TYPE="${DRAFTALIGN_BUILD_TYPE:-Release}" \
    ${DRAFTALIGN_CMAKE_ARGS:-} >"$root/.cmake-configure.log" 2>&1 \
    || { cat "$root/.cmake-configure.log" >&2; die "cmake configure failed (log above)"; }
  grep -E '^-- draftalign' "$root/.cmake-configure.log" || true
fi
say "building $build"
cmake --build "$build" -j "${DRAFTALIGN_JOBS:-$(nproc)}"
