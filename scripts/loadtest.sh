#!/usr/bin/env bash
# Load test of `vtprune serve` on the tiny random-weight test model, over loopback only.
#
#   scripts/loadtest.sh                     # 200 requests from 8 concurrent clients
#   LOADTEST_REQUESTS=500 LOADTEST_CLIENTS=16 scripts/loadtest.sh
#
# Fires a fixed, interleaved mix of valid requests (images + text, streaming, several methods and budgets,
# multi-turn conversations with a system prompt and an image in their first turn, stop strings, penalties) and
# malformed ones (broken JSON, bad base64, GIF, unknown method, budget out of range, too many images, body
# too large, decompression-bomb header, tool role, prompt longer than the context, local path, an image in an
# assistant message, two user turns in a row, too many images across turns, a later turn past the context) at
# the server, then reports throughput, p50/p99 latency, error counts and how much the caches saved. Passes (exit 0) only when the server
# never crashed, every valid request got 200 with a complete answer, every malformed one a 4xx, and the
# server exits 0 on SIGTERM. Bounded: a fixed number of requests, 60 s per request, LOADTEST_TIMEOUT overall.
#
# Needs: curl, base64 (coreutils). Uses $VTPRUNE_BIN (default build/bin/vtprune); builds nothing.
# LOADTEST_KEEP=1 keeps the work folder (request bodies, responses, results, server log).
# MODEL_DIR=DIR reuses an existing llm.gguf + mmproj.gguf instead of `vtprune make-test-model`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${VTPRUNE_BIN:-$ROOT/build/bin/vtprune}"
TOTAL="${LOADTEST_REQUESTS:-200}"
CLIENTS="${LOADTEST_CLIENTS:-8}"
TIME_LIMIT="${LOADTEST_TIMEOUT:-300}"
PARALLEL="${LOADTEST_PARALLEL:-2}"

die() { echo "loadtest: $*" >&2; exit 1; }
[[ -x "$BIN" ]] || die "$BIN not found: build first (scripts/setup.sh)"
command -v curl >/dev/null || die "curl is required"
command -v base64 >/dev/null || die "base64 (coreutils) is required"
(( TOTAL > 0 && TOTAL <= 100000 )) || die "LOADTEST_REQUESTS must be in 1..100000"
(( CLIENTS > 0 && CLIENTS <= 256 )) || die "LOADTEST_CLIENTS must be in 1..256"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/vtprune-loadtest.XXXXXX")"
SERVER_PID=""
CLIENT_PIDS=()
cleanup() {
  for pid in "${CLIENT_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "${LOADTEST_KEEP:-}" ]]; then echo "loadtest: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }

# ---- model and image ----------------------------------------------------------------------------------
if [[ -n "${MODEL_DIR:-}" ]]; then
  MODEL="$MODEL_DIR"
else
  MODEL="$WORK/model"
  "$BIN" make-test-model --shape tiny --out "$MODEL" >/dev/null \
    || die "'vtprune make-test-model' failed (set MODEL_DIR to a folder with llm.gguf + mmproj.gguf)"
fi
[[ -f "$MODEL/llm.gguf" && -f "$MODEL/mmproj.gguf" ]] || die "$MODEL lacks llm.gguf / mmproj.gguf"

# A 64x48 24-bit BMP of random pixels (header fields little-endian, written with printf).
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
le16() { printf '\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)); }
write_bmp() {  # write_bmp FILE WIDTH HEIGHT
  local file=$1 w=$2 h=$3 row=$(( ($2 * 3 + 3) / 4 * 4 ))
  local header
  header="BM$(le32 $((54 + row * h)))$(le32 0)$(le32 54)$(le32 40)$(le32 "$w")$(le32 "$h")$(le16 1)$(le16 24)"
  header+="$(le32 0)$(le32 $((row * h)))$(le32 2835)$(le32 2835)$(le32 0)$(le32 0)"
  printf "$header" > "$file"
  head -c $((row * h)) /dev/urandom >> "$file"
}
if [[ -f "$MODEL/image.png" ]]; then
  IMAGE="data:image/png;base64,$(base64 -w0 "$MODEL/image.png")"
else
  write_bmp "$WORK/image.bmp" 64 48
  IMAGE="data:image/bmp;base64,$(base64 -w0 "$WORK/image.bmp")"
fi
# A PNG header claiming 30000 x 30000 pixels over a few junk bytes (a decompression bomb's header).
BOMB="data:image/png;base64,$(printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x75\x30\x00\x00\x75\x30\x08\x02\x00\x00\x00\xde\xad\xbe\xef' | base64 -w0)"
GIF="data:image/gif;base64,R0lGODlhAQABAAAAACw="

# ---- request bodies -----------------------------------------------------------------------------------
mkdir -p "$WORK/req" "$WORK/out"
body() { printf '%s' "$2" > "$WORK/req/$1.json"; }
img() { printf '{"type":"image_url","image_url":{"url":"%s"}}' "$1"; }
txt() { printf '{"type":"text","text":"%s"}' "$1"; }
user() { printf '{"model":"tiny","messages":[{"role":"user","content":[%s]}]%s}' "$1" "$2"; }
conv() { printf '{"model":"tiny","messages":[%s]%s}' "$1" "$2"; }   # conv MESSAGES EXTRA
msg() { printf '{"role":"%s","content":"%s"}' "$1" "$2"; }
imsg() { printf '{"role":"user","content":[%s]}' "$1"; }
SYS="$(msg system "You are a careful assistant.")"
TURN1="$(imsg "$(img "$IMAGE"),$(txt "What is in the image?")")"

# valid (expect 200 and a complete answer)
body valid_hiprune   "$(user "$(img "$IMAGE"),$(txt "What is in the image?")" ',"max_tokens":16,"vtprune":{"method":"hiprune","budget":64}')"
body valid_text      "$(user "$(txt "Say something short.")" ',"max_tokens":16,"temperature":0.8,"seed":7')"
body valid_stream    "$(user "$(img "$IMAGE"),$(txt "Describe it.")" ',"max_tokens":16,"stream":true,"vtprune":{"method":"fastervlm","budget":32}')"
body valid_two_pool  "$(user "$(img "$IMAGE"),$(img "$IMAGE"),$(txt "Compare them.")" ',"max_tokens":8,"vtprune":{"method":"pool","budget":"25%"}')"
body valid_all       "$(user "$(img "$IMAGE"),$(txt "Everything?")" ',"max_tokens":8,"vtprune":{"method":"none"}')"
body valid_visionzip "$(user "$(img "$IMAGE")" ',"max_tokens":8,"vtprune":{"method":"visionzip","budget":64}')"
# conversations: the whole history every turn, as chat UIs send it (the image comes from the cache after the first)
body valid_conv2     "$(conv "$SYS,$TURN1,$(msg assistant "A small picture."),$(msg user "What colours does it have?")" ',"max_tokens":12,"vtprune":{"method":"hiprune","budget":64}')"
body valid_conv3     "$(conv "$SYS,$TURN1,$(msg assistant "A small picture."),$(msg user "What colours?"),$(msg assistant "Several."),$(msg user "Name two.")" ',"max_tokens":12,"stop":["\n\n"],"frequency_penalty":0.5,"vtprune":{"method":"hiprune","budget":64}')"
body valid_conv_stream "$(conv "$SYS,$TURN1,$(msg assistant "A small picture."),$(imsg "$(txt "And this one?"),$(img "$IMAGE")")" ',"max_tokens":8,"stream":true,"stream_options":{"include_usage":true},"vtprune":{"method":"fastervlm","budget":32,"scope":"total"}')"
# malformed (expect 4xx)
body bad_json        '{"model":"tiny","messages":[{"role":"user","content":"unterminated'
body bad_base64      "$(user "$(img 'data:image/png;base64,@@not*base64@@')" '')"
body bad_type        "$(user "$(img "$GIF")" '')"
body bad_method      "$(user "$(img "$IMAGE")" ',"vtprune":{"method":"magic"}')"
body bad_option      "$(user "$(img "$IMAGE")" ',"vtprune":{"method":"hiprune","options":{"colour":"red"}}')"
body bad_budget      "$(user "$(img "$IMAGE")" ',"vtprune":{"method":"hiprune","budget":100000}')"
body bad_images      "$(user "$(img "$IMAGE"),$(img "$IMAGE"),$(img "$IMAGE"),$(img "$IMAGE"),$(img "$IMAGE")" '')"
body bad_bomb        "$(user "$(img "$BOMB")" '')"
body bad_role        '{"messages":[{"role":"user","content":"Hi"},{"role":"tool","content":"x"},{"role":"user","content":"Hi"}]}'
body bad_conv_image  "$(conv "$(msg user "Hi"),{\"role\":\"assistant\",\"content\":[$(img "$IMAGE")]},$(msg user "And?")" '')"
body bad_conv_order  "$(conv "$SYS,$(msg user "Hi"),$(msg user "Hi again")" '')"
body bad_conv_images "$(conv "$TURN1,$(msg assistant "A."),$TURN1,$(msg assistant "B."),$TURN1,$(msg assistant "C."),$(imsg "$(img "$IMAGE"),$(img "$IMAGE")")" '')"
body bad_conv_context "$(conv "$TURN1,$(msg assistant "A."),$(msg user "$(printf 'word %.0s' $(seq 3000))")" '')"
body bad_context     "$(user "$(txt "$(printf 'word %.0s' $(seq 3000))")" '')"
body bad_local       "$(user "$(img "/etc/hostname")" '')"
body bad_temperature "$(user "$(txt "Hi")" ',"temperature":7')"
head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' ' ' > "$WORK/req/bad_too_large.json"   # over --max-body-bytes

KINDS=(valid_hiprune bad_json valid_text bad_base64 valid_stream bad_type valid_two_pool bad_method valid_all
       bad_option valid_visionzip bad_budget valid_hiprune bad_images valid_text bad_bomb valid_stream bad_role
       valid_all bad_context valid_two_pool bad_local valid_visionzip bad_temperature valid_hiprune bad_too_large
       valid_conv2 bad_conv_image valid_conv3 bad_conv_order valid_conv_stream bad_conv_images valid_conv2
       bad_conv_context valid_conv3)

# ---- server -------------------------------------------------------------------------------------------
"$BIN" serve -m "$MODEL/llm.gguf" --mmproj "$MODEL/mmproj.gguf" --host 127.0.0.1 --port 0 \
  --parallel "$PARALLEL" --queue $((CLIENTS * 2)) -c 2048 -t 1 --max-images 4 --max-body-bytes $((4 * 1024 * 1024)) \
  --quiet > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=""
for _ in $(seq 600); do
  PORT="$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$WORK/server.log" | grep -oE '[0-9]+$' || true)"
  [[ -n "$PORT" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited during startup"; }
  sleep 0.1
done
[[ -n "$PORT" ]] || die "the server did not start within 60 s"
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$URL/health" >/dev/null && break; sleep 0.1; done
echo "loadtest: vtprune serve on $URL ($PARALLEL slots), $TOTAL requests from $CLIENTS clients, ${#KINDS[@]}-request mix"

# ---- clients ------------------------------------------------------------------------------------------
# Client c sends requests c, c+CLIENTS, ...; one line per request: index kind http_code seconds.
client() {
  local c=$1 i kind
  for ((i = c; i < TOTAL; i += CLIENTS)); do
    kind=${KINDS[$((i % ${#KINDS[@]}))]}
    local result
    result="$(curl -s -o "$WORK/out/$i" -w '%{http_code} %{time_total}' --max-time 60 -X POST \
              -H 'Content-Type: application/json' --data-binary "@$WORK/req/$kind.json" "$URL/v1/chat/completions" || true)"
    echo "$i $kind ${result:-000 60}" >> "$WORK/results.$c"
  done
}
START="$(now)"
for ((c = 0; c < CLIENTS; c++)); do client "$c" & CLIENT_PIDS+=($!); done
DEADLINE=$(( $(date +%s) + TIME_LIMIT ))
for pid in "${CLIENT_PIDS[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do
    (( $(date +%s) < DEADLINE )) || die "over the time limit of ${TIME_LIMIT} s"
    sleep 0.05
  done
done
CLIENT_PIDS=()
ELAPSED="$(awk -v a="$START" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }')"

# ---- verdict ------------------------------------------------------------------------------------------
cat "$WORK"/results.* | sort -n > "$WORK/results"
ALIVE=1
kill -0 "$SERVER_PID" 2>/dev/null || ALIVE=0
HEALTH="$(curl -s -o /dev/null -w '%{http_code}' "$URL/health" || true)"
METRICS="$(curl -s "$URL/metrics" || true)"

valid_ok=0; valid_bad=0; malformed_ok=0; malformed_bad=0; incomplete=0
declare -A codes=()
while read -r i kind code secs; do
  codes[$code]=$(( ${codes[$code]:-0} + 1 ))
  if [[ $kind == valid_* ]]; then
    if [[ $code == 200 ]] && { grep -q '"finish_reason":"\(stop\|length\)"' "$WORK/out/$i"; } &&
       { [[ $kind != valid_*stream ]] || tail -c 20 "$WORK/out/$i" | grep -q 'data: \[DONE\]'; }; then
      valid_ok=$((valid_ok + 1))
    else
      valid_bad=$((valid_bad + 1))
      [[ $code == 200 ]] && incomplete=$((incomplete + 1))
      echo "  valid request $i ($kind): HTTP $code $(head -c 200 "$WORK/out/$i" 2>/dev/null)" >&2
    fi
  else
    if [[ $code =~ ^4[0-9][0-9]$ ]] && grep -q '"error"' "$WORK/out/$i"; then
      malformed_ok=$((malformed_ok + 1))
    else
      malformed_bad=$((malformed_bad + 1))
      echo "  malformed request $i ($kind): HTTP $code $(head -c 200 "$WORK/out/$i" 2>/dev/null)" >&2
    fi
  fi
done < "$WORK/results"
ANSWERED=$(wc -l < "$WORK/results")

percentile() {  # percentile P FILTER(awk condition on $2)
  awk -v p="$1" "$2 { print \$4 }" "$WORK/results" | sort -g | awk -v p="$1" '
    { v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(p * NR + 0.999999); if (i < 1) i = 1; printf "%.1f ms", v[i] * 1000 }'
}
code_summary=""
for code in $(printf '%s\n' "${!codes[@]}" | sort); do code_summary+=" $code:${codes[$code]}"; done

# Shut the server down the way an operator would; a clean exit is part of passing.
kill -TERM "$SERVER_PID"
EXIT_CODE=""
for _ in $(seq 300); do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    set +e; wait "$SERVER_PID"; EXIT_CODE=$?; set -e
    break
  fi
  sleep 0.1
done
SERVER_PID=""

echo "loadtest: $ANSWERED/$TOTAL requests in $ELAPSED s: $(awk -v n="$ANSWERED" -v t="$ELAPSED" 'BEGIN { printf "%.1f", n / t }') req/s"
echo "  latency all:       p50 $(percentile 0.50 '1')   p99 $(percentile 0.99 '1')"
echo "  latency valid:     p50 $(percentile 0.50 '$2 ~ /^valid_/')   p99 $(percentile 0.99 '$2 ~ /^valid_/')"
echo "  latency malformed: p50 $(percentile 0.50 '$2 ~ /^bad_/')   p99 $(percentile 0.99 '$2 ~ /^bad_/')"
echo "  HTTP status counts:$code_summary"
echo "  valid: $valid_ok answered 200, $valid_bad failed ($incomplete incomplete)"
echo "  malformed: $malformed_ok answered 4xx, $malformed_bad not"
echo "  server: $([[ $ALIVE == 1 ]] && echo alive || echo CRASHED) after the load, /health $HEALTH, exit code ${EXIT_CODE:-none} on SIGTERM"
echo "$METRICS" | grep -E '^vtprune_(visual_tokens_(in|kept)_total|ttft_seconds_(sum|count)|prompt_tokens(_cached)?_total|image_cache_(hits|misses|evictions)_total) ' | sed 's/^/  metrics: /'

if [[ $ALIVE == 1 && $HEALTH == 200 && $ANSWERED == "$TOTAL" && $valid_bad == 0 && $malformed_bad == 0 && ${EXIT_CODE:-1} == 0 ]]; then
  echo "loadtest: PASS"
else
  echo "loadtest: FAIL" >&2
  tail -n 20 "$WORK/server.log" >&2
  exit 1
fi
