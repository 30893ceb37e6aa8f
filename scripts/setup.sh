#!/usr/bin/env bash
# vtprune set-up: Debian packages, the pinned llama.cpp (commit de3ff81 as bundled in node-llama-cpp 3.22.1),
# and a Release build of vtprune at build/bin/vtprune.
#
#   scripts/setup.sh                      # everything, llama.cpp from the pinned npm tarball into deps/
#   VTPRUNE_LLAMA_DIR=~/llama.cpp scripts/setup.sh   # use your own llama.cpp checkout instead
#   VTPRUNE_CPU=x86-64-v3 VTPRUNE_BUILD_DIR=build-avx2 scripts/setup.sh   # portable AVX2 build (for packages)
#
# VTPRUNE_GPU=cuda|vulkan|metal adds llama.cpp's GPU backend (its SDK must be installed; -ngl / --mmproj-offload use it);
# ggml's RPC backend (--rpc host:port) and llama.cpp's RPC server (build/bin/ggml-rpc-server) are built unless
# VTPRUNE_RPC=0.
# VTPRUNE_CPU: native (default: this CPU), x86-64-v3 (AVX2/FMA/F16C, no AVX-512), x86-64-v2 (SSE4.2) or generic
# (the compiler's default target); it sets ggml's instruction-set options and vtprune's -march together.
# An existing build folder keeps the target it was configured with unless VTPRUNE_CPU is given.
#
# Re-runs are cheap: installed packages, the deps/llama.cpp checkout and the build/ tree are reused.
# `scripts/setup.sh --sdk-only` installs only the OpenAI SDK for Node that the server's tests drive (step 4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LLAMA_NPM_PACKAGE="node-llama-cpp@3.22.1"
LLAMA_NPM_SHA256="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
LLAMA_COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"   # the llama.cpp commit bundled in that package
BUILD_DIR=${VTPRUNE_BUILD_DIR:-build}
JOBS=${VTPRUNE_JOBS:-2}

log() { printf '[setup] %s\n' "$*" >&2; }

# --- 4. the OpenAI SDK for Node (npm `openai`, pinned) in the ignored deps/node: tests/server/openai_sdk drives
#        `vtprune serve` with it. Node 20 is enough for this version (7.x needs Node 22).
OPENAI_SDK_VERSION="6.49.0"
install_openai_sdk() {
  local dir=$ROOT/deps/node have=""
  if ! command -v npm >/dev/null 2>&1; then
    log "npm not found: the OpenAI SDK tests will be skipped"
    return 0
  fi
  [[ -f $dir/node_modules/openai/package.json ]] &&
    have=$(node -p "require('$dir/node_modules/openai/package.json').version" 2>/dev/null || true)
  if [[ $have == "$OPENAI_SDK_VERSION" ]]; then
    log "OpenAI SDK for Node $OPENAI_SDK_VERSION already in deps/node"
    return 0
  fi
  log "installing the OpenAI SDK for Node (npm openai@$OPENAI_SDK_VERSION) into deps/node"
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "openai@$OPENAI_SDK_VERSION" >/dev/null
}
if [[ ${1:-} == --sdk-only ]]; then
  install_openai_sdk
  exit 0
fi

# --- 1. Debian packages (only the missing ones) -------------------------------------------------
PKGS=(build-essential cmake ninja-build pkg-config git ca-certificates curl nodejs npm
      libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libstb-dev fonts-dejavu-core)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from elsewhere than Debian; only ask apt for them when the commands are absent.
if command -v npm >/dev/null 2>&1; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "Debian packages already installed"
fi

# --- 2. llama.cpp -------------------------------------------------------------------------------
LLAMA_DIR=${VTPRUNE_LLAMA_DIR:-}
if [[ -z $LLAMA_DIR ]]; then
  LLAMA_DIR=$ROOT/deps/llama.cpp
  if [[ ! -f $LLAMA_DIR/CMakeLists.txt ]]; then
    mkdir -p deps/npm
    tarball=deps/npm/node-llama-cpp-3.22.1.tgz
    if [[ ! -f $tarball ]]; then
      log "fetching $LLAMA_NPM_PACKAGE from the npm registry"
      (cd deps/npm && npm pack --silent "$LLAMA_NPM_PACKAGE" >/dev/null)
    fi
    echo "$LLAMA_NPM_SHA256  $tarball" | sha256sum -c --quiet - || {
      log "sha256 mismatch for $tarball (expected $LLAMA_NPM_SHA256); delete it and re-run"; exit 1; }
    tar -xzf "$tarball" -C deps/npm package/llama/gitRelease.bundle
    rm -rf "$LLAMA_DIR.tmp"
    git clone -q deps/npm/package/llama/gitRelease.bundle "$LLAMA_DIR.tmp"
    git -C "$LLAMA_DIR.tmp" -c advice.detachedHead=false checkout -q "$LLAMA_COMMIT"
    mv "$LLAMA_DIR.tmp" "$LLAMA_DIR"
    log "llama.cpp $LLAMA_COMMIT checked out in deps/llama.cpp"
  else
    log "reusing deps/llama.cpp"
  fi
fi
[[ -f $LLAMA_DIR/CMakeLists.txt && -f $LLAMA_DIR/include/llama.h ]] || {
  log "not a llama.cpp checkout: $LLAMA_DIR"; exit 1; }

# --- 3. vtprune (builds ggml + llama static, CPU backend, Release, as a sub-project) -------------
CPU_ARGS=()
[[ -n ${VTPRUNE_CPU:-} ]] && CPU_ARGS=(-DVTPRUNE_CPU="$VTPRUNE_CPU")
[[ -n ${VTPRUNE_GPU:-} ]] && CPU_ARGS+=(-DVTPRUNE_GPU="$VTPRUNE_GPU")   # none | cuda | vulkan | metal (its SDK must be installed)
[[ -n ${VTPRUNE_RPC:-} ]] && CPU_ARGS+=(-DVTPRUNE_RPC="$([[ $VTPRUNE_RPC == 0 ]] && echo OFF || echo ON)")   # default on
log "configuring $BUILD_DIR (llama.cpp from $LLAMA_DIR, CPU target ${VTPRUNE_CPU:-as configured, default native})"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVTPRUNE_LLAMA_DIR="$LLAMA_DIR" "${CPU_ARGS[@]+"${CPU_ARGS[@]}"}" >/dev/null
log "building with -j$JOBS (the first build compiles llama.cpp: a few minutes)"
cmake --build "$BUILD_DIR" -j "$JOBS"
install_openai_sdk
log "done: $BUILD_DIR/bin/vtprune"
