#!/usr/bin/env bash
# Builds vtprune if needed (running scripts/setup.sh on a fresh clone) and runs the whole test suite.
# Tests that need ../shared (golden vectors, real model weights) skip with a message when it is absent;
# point VTPRUNE_SHARED_DIR elsewhere if your copy lives in another place.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${VTPRUNE_BUILD_DIR:-build}
if [[ ! -f $BUILD_DIR/build.ninja ]]; then
  scripts/setup.sh
else
  cmake --build "$BUILD_DIR" -j "${VTPRUNE_JOBS:-2}"
fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${VTPRUNE_JOBS:-2}" --timeout 900
