#!/usr/bin/env bash
# The README's demo: a random-weight LLaVA-1.5-shaped model pair (tiny width) and a generated image, then one
# question answered with HiPrune keeping 64 of 576 visual tokens. No download. Run scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin/vtprune
[[ -x $BIN ]] || { echo "build/bin/vtprune not found: run scripts/setup.sh first" >&2; exit 1; }
[[ -f out/tiny/llm.gguf ]] || $BIN make-test-model --shape tiny --out out/tiny
$BIN run -m out/tiny/llm.gguf --mmproj out/tiny/mmproj.gguf --image out/tiny/image.png \
  -p "What is in the image?" --method hiprune --budget 64 -n 16
