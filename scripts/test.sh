#!/usr/bin/env bash
# Builds vtprune if needed (running scripts/setup.sh on a fresh clone) and runs the whole test suite.
# Tests that need ../shared (golden vectors, real model weights) skip with a message when it is absent;
# point VTPRUNE_SHARED_DIR elsewhere if your copy lives in another place.
#   VTPRUNE_BUILD_DIR=build-avx2 VTPRUNE_CPU=x86-64-v3 scripts/test.sh   # the portable AVX2 build, beside build/
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${VTPRUNE_BUILD_DIR:-build}
if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  scripts/setup.sh
else
  # VTPRUNE_CPU (see scripts/setup.sh) re-targets an existing build folder; without it the folder keeps its target.
  [[ -n ${VTPRUNE_CPU:-} ]] && cmake -S . -B "$BUILD_DIR" -DVTPRUNE_CPU="$VTPRUNE_CPU" >/dev/null
  cmake --build "$BUILD_DIR" -j "${VTPRUNE_JOBS:-2}"
  # the OpenAI SDK the server's tests drive (installed by setup.sh; a checkout set up before it needs it once)
  [[ -f deps/node/node_modules/openai/package.json ]] || scripts/setup.sh --sdk-only
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${VTPRUNE_JOBS:-2}" --timeout 900
