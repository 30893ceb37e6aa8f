#!/usr/bin/env bash
# The GPU code path without a GPU: vtprune and the pinned llama.cpp built with ggml's backends as loadable
# modules (VTPRUNE_BACKEND_DL, shared libraries) into build-vulkan/, ggml's Vulkan backend module of the same
# llama.cpp commit beside them, and Mesa's lavapipe (a CPU implementation of Vulkan) as the device. Then
# test_pipeline_gpu: vtprune's own graphs (LLaVA ViT with taps, projector, CLIP text tower, DeiT) on the device
# equal the CPU's, the LLM on the device (-ngl 99) with the encoder there too answers as the CPU does for every
# method, and libmtmd's taps on the device equal the CPU's. A skipped test fails the script (no device found).
#
#   scripts/test-vulkan.sh                 # about 20 min on 2 cores the first time, then about 2 min
#
# Why a prebuilt module: the pinned ggml-vulkan does not compile on Debian 12 (it needs Vulkan-Headers with
# VK_EXT_layer_settings, Debian ships 1.3.239, and a glslc with GL_KHR_cooperative_matrix, Debian's 2023.2 has
# none). node-llama-cpp 3.22.1, the package our llama.cpp source comes from, ships that commit's Vulkan backend
# built by its CI (Ubuntu 22.04, Vulkan SDK) as libggml-vulkan.so in @node-llama-cpp/linux-x64-vulkan@3.22.1
# (sha256-pinned here); it loads into our libggml-base of the same commit. Where the headers and glslc are new
# enough (or on a machine with a GPU SDK), build the backend from source instead: VTPRUNE_GPU=vulkan scripts/setup.sh.
#
# Environment: VTPRUNE_JOBS (default 2), VTPRUNE_VULKAN_BUILD_DIR (default build-vulkan).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${VTPRUNE_VULKAN_BUILD_DIR:-build-vulkan}
JOBS=${VTPRUNE_JOBS:-2}
MODULE_PACKAGE="@node-llama-cpp/linux-x64-vulkan@3.22.1"
MODULE_TARBALL_SHA256="e10577190fc4bd1649d3b655588e5c7a85fc6b6dbf7136fee596cbe9e25521e7"
log() { printf '[test-vulkan] %s\n' "$*" >&2; }

[[ $(uname -m) == x86_64 ]] || { log "the prebuilt Vulkan module is x86-64 Linux only"; exit 1; }

# 1. The Vulkan loader and Mesa's lavapipe (plus the main set-up: Debian packages, deps/llama.cpp).
missing=()
for p in libvulkan1 mesa-vulkan-drivers; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
[[ -f deps/llama.cpp/CMakeLists.txt ]] || { log "no deps/llama.cpp: run scripts/setup.sh first"; exit 1; }

# 2. ggml's Vulkan module of the pinned commit, from npm, sha256-checked.
tarball=deps/npm/node-llama-cpp-linux-x64-vulkan-3.22.1.tgz
if [[ ! -f $tarball ]]; then
  log "fetching $MODULE_PACKAGE from the npm registry"
  mkdir -p deps/npm
  (cd deps/npm && npm pack --silent "$MODULE_PACKAGE" >/dev/null)
fi
echo "$MODULE_TARBALL_SHA256  $tarball" | sha256sum -c --quiet - || {
  log "sha256 mismatch for $tarball (expected $MODULE_TARBALL_SHA256); delete it and re-run"; exit 1; }

# 3. vtprune + llama.cpp as shared libraries with loadable backends (the CPU module at x86-64-v3: ggml cannot
#    build a native CPU module for dynamic loading).
log "configuring $BUILD_DIR (VTPRUNE_BACKEND_DL, CPU module x86-64-v3)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVTPRUNE_LLAMA_DIR="$ROOT/deps/llama.cpp" \
  -DVTPRUNE_BACKEND_DL=ON -DVTPRUNE_CPU=x86-64-v3 -DVTPRUNE_RPC=OFF >/dev/null
log "building with -j$JOBS"
cmake --build "$BUILD_DIR" -j "$JOBS" --target ggml-cpu vtprune test_pipeline_gpu
tar -xzf "$tarball" -C "$BUILD_DIR/bin" --strip-components=3 package/bins/linux-x64-vulkan/libggml-vulkan.so

# 4. The device: lavapipe reports itself as a CPU-type Vulkan device, which ggml-vulkan skips unless it is named.
export GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0}
"$BUILD_DIR/bin/vtprune" devices
"$BUILD_DIR/bin/vtprune" devices | grep -q "^Vulkan0 " || { log "ggml found no Vulkan device (is mesa-vulkan-drivers installed?)"; exit 1; }

# 5. The device tests (VTPRUNE_SHARED_DIR or ../shared adds the DeiT check).
out=$(mktemp)
set +e
"$BUILD_DIR/bin/test_pipeline_gpu" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
if ((rc != 0)); then log "test_pipeline_gpu failed"; exit "$rc"; fi
if grep -q "^\[  SKIPPED \]" "$out"; then log "a device test was skipped: no GPU device was found"; exit 1; fi
log "passed: vtprune's graphs, the LLM and libmtmd on Vulkan (lavapipe) equal the CPU"
