#!/usr/bin/env bash
# vtprune set-up: Debian packages, the pinned llama.cpp (from the npm package node-llama-cpp@3.22.1),
# and a Release build of vtprune at build/bin/vtprune.
#
#   scripts/setup.sh                      # everything, llama.cpp from the pinned npm tarball into deps/
#   VTPRUNE_LLAMA_DIR=~/llama.cpp scripts/setup.sh   # use your own llama.cpp checkout instead
#
# Re-runs are cheap: installed packages, the deps/llama.cpp checkout and the build/ tree are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LLAMA_NPM_PACKAGE="node-llama-cpp@3.22.1"
LLAMA_NPM_SHA256="a0d9dd80eacd2ab1cfe71aee57ac8a806487fd70b3d2a38fbec637752d9e5c5f"
LLAMA_COMMIT="de3ff815ea7d559ee917f063901b8986f038abc6"   # release v0.5.0 inside that package
BUILD_DIR=${VTPRUNE_BUILD_DIR:-build}
JOBS=${VTPRUNE_JOBS:-2}

log() { printf '[setup] %s\n' "$*" >&2; }

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
log "configuring $BUILD_DIR (llama.cpp from $LLAMA_DIR)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVTPRUNE_LLAMA_DIR="$LLAMA_DIR" >/dev/null
log "building with -j$JOBS (the first build compiles llama.cpp: a few minutes)"
cmake --build "$BUILD_DIR" -j "$JOBS"
log "done: $BUILD_DIR/bin/vtprune"
