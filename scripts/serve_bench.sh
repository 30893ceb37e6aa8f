#!/usr/bin/env bash
# Second-turn TTFT of a two-turn image conversation against `vtprune serve`, caching on vs off, on the
# TinyLlama-shaped pair (CLIP ViT-L/14-336 F16 mmproj + TinyLlama-1.1B-shaped F16 LLM, random weights).
#
#   scripts/serve_bench.sh                         # 3 repeats, hiprune at 64 and none (576 tokens), 2 threads
#   SERVE_BENCH_REPEAT=5 MODEL_DIR=out/tinyllama scripts/serve_bench.sh
#
# Two servers on loopback, one slot each, 2 threads each (only one of them works at a time): "on" with the
# defaults (image cache + KV prefix reuse), "off" with --image-cache-mib 0 --no-prompt-cache. scripts/serve_bench.cjs
# alternates between them, one conversation per repeat and server, and prints medians and the ratio
# turn-2 TTFT / turn-1 TTFT as JSON. Uses $VTPRUNE_BIN (default build/bin/vtprune); needs node.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${VTPRUNE_BIN:-$ROOT/build/bin/vtprune}"
REPEAT="${SERVE_BENCH_REPEAT:-3}"
THREADS="${SERVE_BENCH_THREADS:-2}"
METHODS="${SERVE_BENCH_METHODS:-hiprune:64 none:all}"
die() { echo "serve_bench: $*" >&2; exit 1; }
[[ -x $BIN ]] || die "$BIN not found: build first"
command -v node >/dev/null || die "node is required"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vtprune-serve-bench.XXXXXX")"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

MODEL="${MODEL_DIR:-$WORK/model}"
if [[ ! -f $MODEL/llm.gguf ]]; then
  echo "serve_bench: writing the tinyllama pair (about 2.8 GB) to $MODEL" >&2
  "$BIN" make-test-model --shape tinyllama --out "$MODEL" >/dev/null
fi

start() {  # start NAME ARGS...: prints the URL
  local name=$1; shift
  "$BIN" serve -m "$MODEL/llm.gguf" --mmproj "$MODEL/mmproj.gguf" --host 127.0.0.1 --port 0 --parallel 1 \
    -t "$THREADS" -c 2048 --quiet "$@" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1200); do
    local url
    url="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$WORK/$name.log" | head -1 || true)"
    [[ -n $url ]] && { echo "$url"; return; }
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "server $name exited"; }
    sleep 0.1
  done
  die "server $name did not start"
}
ON="$(start on)"
OFF="$(start off --image-cache-mib 0 --no-prompt-cache)"
echo "serve_bench: caching on at $ON, off at $OFF; $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for config in $METHODS; do
  node "$ROOT/scripts/serve_bench.cjs" --on "$ON" --off "$OFF" --image "$MODEL/image.png" --repeat "$REPEAT" \
    --method "${config%%:*}" --budget "${config##*:}"
done
echo "serve_bench: load average after $(cut -d' ' -f1-3 /proc/loadavg)" >&2
