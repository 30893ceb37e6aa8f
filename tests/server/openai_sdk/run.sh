#!/usr/bin/env bash
# ctest ServerOpenAiSdk: the official OpenAI SDK for Node against `vtprune serve` (openai_sdk.test.cjs).
#   run.sh VTPRUNE_BIN SDK_DIR
# SDK_DIR holds node_modules/openai (scripts/setup.sh installs the pinned version into deps/node). Skips (exit 77)
# only when node itself is missing; a missing SDK is a failure that says how to install it.
set -euo pipefail
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed, so the OpenAI SDK suite cannot run (scripts/setup.sh installs nodejs and npm)"
  exit 77
fi
BIN=$1
SDK_DIR=$2
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ! -f $SDK_DIR/node_modules/openai/package.json ]]; then
  echo "FAIL: the OpenAI SDK is not installed in $SDK_DIR: run scripts/setup.sh (it runs npm install there)" >&2
  exit 1
fi
[[ -x $BIN ]] || { echo "FAIL: $BIN not built" >&2; exit 1; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
SDK_DIR="$(cd "$SDK_DIR" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vtprune-sdk.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
"$BIN" make-test-model --shape tiny --out "$WORK/model" >/dev/null
echo "node $(node --version), openai $(node -p "require('$SDK_DIR/node_modules/openai/package.json').version")"
VTPRUNE_BIN="$BIN" VTPRUNE_SDK_DIR="$SDK_DIR" VTPRUNE_MODEL_DIR="$WORK/model" \
  node --test --test-concurrency=1 "$HERE/openai_sdk.test.cjs"
