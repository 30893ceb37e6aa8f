#!/usr/bin/env bash
# End-to-end TTFT benchmark of vtprune against llama.cpp's llama-mtmd-cli, both built in one build from the same
# pinned llama.cpp source (deps/llama.cpp; llama-mtmd-cli is a target of vtprune's build, so both link the very
# same ggml), on random-weight models of real shapes: CLIP ViT-L/14-336 mmproj with a TinyLlama-1.1B-shape F16
# LLM and with a LLaVA-1.5-7B-shape Q4_0 LLM, and a Qwen2.5-VL-3B-shape pair (F16 LLM + F16 mmproj, a 1024x768
# image -> 37x27 = 999 image tokens). Speed does not depend on weight values, so random weights measure the same
# compute as real ones.
#
#   scripts/bench.sh                 # build, make models, run every shape, write docs/bench-*.{md,json,png}
#   BENCH_SHAPES=tinyllama scripts/bench.sh     # one shape only (tinyllama | llava-7b | llava-7b-bf16 | qwen2.5-vl-3b | gemma3-4b | gemma3-4b-fa-off | llava-next-7b)
#   BENCH_STEPS=build scripts/bench.sh          # build only (also: models, run)
#
# PruMerge(+) tap the last layer by default (layer=-1), which llama.cpp's LLaVA mmproj files do not store (the
# converter drops it), so they run with layer=-2 here (the last stored block).
#
# Environment: BENCH_THREADS (default: all cores; use 1 when other jobs share the machine: ggml's threads
# busy-wait, so a contended 2-thread run can be several times slower and very noisy), BENCH_REPEAT (3), BENCH_MODELS (out/bench-models),
# BENCH_MAX_LOAD (1.5: waits until the 1-minute load average is below it before measuring), BENCH_WAIT_MINUTES
# (20: then measures anyway), BENCH_MTMD_CLI (default: the llama-mtmd-cli of the build).
#
# Disk: tinyllama ~2.8 GB, llava-7b ~4.5 GB, qwen2.5-vl-3b ~7.6 GB (6.2 GB LLM + 1.34 GB mmproj), gemma3-4b
# ~8.6 GB (7.8 GB LLM + 0.8 GB mmproj), all under
# BENCH_MODELS (out/ is git-ignored). A qwen2.5-vl-3b run takes ~15 minutes on 2 cores (ViT ~5 TFLOP, prefill
# ~6 TFLOP per `none` run); llava-next-7b (~4.5 GB) about 35 minutes (a `none` run prefills 2943 positions of a
# 7B model, ~3 minutes, and llama-mtmd-cli does the same four times).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LLAMA_DIR="${VTPRUNE_LLAMA_DIR:-$ROOT/deps/llama.cpp}"
BUILD="${BENCH_BUILD_DIR:-$ROOT/build-bench}"
MODELS="${BENCH_MODELS:-$ROOT/out/bench-models}"
DOCS="$ROOT/docs"
THREADS="${BENCH_THREADS:-$(nproc)}"
REPEAT="${BENCH_REPEAT:-3}"
SHAPES="${BENCH_SHAPES:-tinyllama llava-7b llava-7b-bf16 qwen2.5-vl-3b}"
STEPS="${BENCH_STEPS:-build models run}"
MAX_LOAD="${BENCH_MAX_LOAD:-1.5}"
WAIT_MINUTES="${BENCH_WAIT_MINUTES:-20}"
PROMPT="${BENCH_PROMPT:-What is shown in this image? Answer in one sentence.}"

VTPRUNE="$BUILD/bin/vtprune"
MTMD_CLI="${BENCH_MTMD_CLI:-$BUILD/bin/llama-mtmd-cli}"

log() { printf '[bench] %s\n' "$*" >&2; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }

build() {
  [[ -f "$LLAMA_DIR/CMakeLists.txt" ]] || { log "no llama.cpp at $LLAMA_DIR: run scripts/setup.sh first"; exit 1; }
  # vtprune and llama-mtmd-cli in one build: the same llama.cpp source, the same ggml objects and codegen
  log "building vtprune and llama-mtmd-cli in $BUILD"
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVTPRUNE_LLAMA_DIR="$LLAMA_DIR" >/dev/null
  cmake --build "$BUILD" -j"$(nproc)" --target vtprune llama-mtmd-cli
}

# make_models SHAPE TYPE [MMPROJ_TYPE]: DIR/{llm.gguf,mmproj.gguf,image.png}; skipped when present. With an
# mmproj type other than f16 the directory is SHAPE-TYPE-mmproj-MMPROJ_TYPE and shares the f16 one's llm.gguf.
make_models() {
  local shape="$1" type="$2" mmproj_type="${3:-f16}" dir="$MODELS/$1-$2"
  if [[ "$mmproj_type" != f16 ]]; then
    make_models "$shape" "$type" || return 1
    local variant="$dir-mmproj-$mmproj_type"
    if [[ ! -f "$variant/mmproj.gguf" ]]; then
      mkdir -p "$variant"
      ln -sf "$dir/llm.gguf" "$variant/llm.gguf"
      "$VTPRUNE" make-test-model --out "$variant" --shape "$shape" --mmproj-type "$mmproj_type" --mmproj-only
    fi
    return
  fi
  if [[ -f "$dir/llm.gguf" && -f "$dir/mmproj.gguf" && -f "$dir/image.png" ]]; then
    log "models for $shape/$type already in $dir"
    return
  fi
  # the 7B Q4_0 file is ~3.9 GB, the TinyLlama F16 one ~2.2 GB, each CLIP mmproj ~0.6 GB; Qwen2.5-VL-3B:
  # 6.2 GB F16 LLM + 1.34 GB mmproj
  local need_gb=3; [[ "$shape" == llava-7b ]] && need_gb=6; [[ "$shape" == qwen2.5-vl-3b ]] && need_gb=9
  [[ "$shape" == gemma3-4b ]] && need_gb=10; [[ "$shape" == llava-next-7b ]] && need_gb=6
  mkdir -p "$MODELS"
  local avail_gb
  avail_gb=$(df -Pk "$MODELS" | awk 'NR==2 {print int($4/1048576)}')
  if (( avail_gb < need_gb )); then
    log "only ${avail_gb} GiB free under $MODELS, $shape/$type needs ~${need_gb} GiB: skipping"
    return 1
  fi
  log "writing $shape/$type models to $dir"
  "$VTPRUNE" make-test-model --out "$dir" --shape "$shape" --type "$type"
}

wait_for_quiet_machine() {
  local load
  for _ in $(seq 1 $((WAIT_MINUTES * 3))); do
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v m="$MAX_LOAD" 'BEGIN { exit !(l < m) }'; then return; fi
    log "load average $load >= $MAX_LOAD: waiting (other jobs would distort the timings)"
    sleep 20
  done
  log "machine still busy after $WAIT_MINUTES minutes; measuring anyway (timings will be noisy; the report records the load)"
}

# run_shape SHAPE TYPE METHODS BUDGETS [MMPROJ_TYPE] [FLASH_ATTN]: FLASH_ATTN (on | off) goes to vtprune and
# llama-mtmd-cli alike and names the report ...-fa-off.
run_shape() {
  local shape="$1" type="$2" methods="$3" budgets="$4" mmproj_type="${5:-f16}" flash_attn="${6:-auto}" dir="$MODELS/$1-$2"
  local name="$shape-$type"
  if [[ "$mmproj_type" != f16 ]]; then dir="$dir-mmproj-$mmproj_type"; name="$name-mmproj-$mmproj_type"; fi
  if [[ "$flash_attn" != auto ]]; then name="$name-fa-$flash_attn"; fi
  mkdir -p "$DOCS"
  wait_for_quiet_machine
  local args=(bench -m "$dir/llm.gguf" --mmproj "$dir/mmproj.gguf" --image "$dir/image.png" -p "$PROMPT"
              --methods "$methods" --budgets "$budgets" --repeat "$REPEAT" --threads "$THREADS" -n 8
              --flash-attn "$flash_attn"
              --json "$DOCS/bench-$name.json" --markdown "$DOCS/bench-$name.md" --chart "$DOCS/bench-ttft-$name.png")
  [[ -x "$MTMD_CLI" ]] && args+=(--compare-mtmd "$MTMD_CLI")
  log "vtprune ${args[*]}"
  "$VTPRUNE" "${args[@]}"
}

has_step build && build
for shape in $SHAPES; do
  case "$shape" in
    tinyllama)
      has_step models && make_models tinyllama f16
      has_step run && run_shape tinyllama f16 \
        none,hiprune,prumerge:layer=-2,prumerge_plus:layer=-2,visionzip,fastervlm,divprune,dfmr,pool,random 576,192,128,64
      ;;
    llava-7b)
      # ~20 s per 7B prefill of ~600 tokens on 2 cores: few methods, two budgets
      has_step models && make_models llava-7b q4_0
      has_step run && run_shape llava-7b q4_0 none,hiprune,prumerge:layer=-2,fastervlm 576,64
      ;;
    llava-7b-bf16)
      # the same with a BF16 mmproj: the ViT runs on AVX512-BF16 dot products where the CPU has them
      has_step models && make_models llava-7b q4_0 bf16
      has_step run && run_shape llava-7b q4_0 none,hiprune,prumerge:layer=-2,fastervlm 64 bf16
      ;;
    qwen2.5-vl-3b)
      # Qwen2.5-VL through libmtmd: the 1024x768 image gives 999 tokens; HiPrune at the retention ratios of its
      # Qwen experiments (1/3, 2/9, 1/9), with its Qwen defaults (object block 15, deep block = last, scores summed)
      has_step models && make_models qwen2.5-vl-3b f16
      has_step run && run_shape qwen2.5-vl-3b f16 none,hiprune 0.334,0.223,0.112
      ;;
    gemma3-4b)
      # Gemma 3 through libmtmd: SigLIP on the fixed 896 px input (4096 patches), 256 pooled tokens; HiPrune at
      # about 1/9 (the case the FLOP-ideal speed-up is quoted for)
      has_step models && make_models gemma3-4b f16
      has_step run && run_shape gemma3-4b f16 none,hiprune 0.334,0.112
      ;;
    gemma3-4b-fa-off)
      # the same with llama.cpp's flash attention off (vtprune --flash-attn off, llama-mtmd-cli -fa off): on CPU
      # libmtmd's SigLIP over 4096 patches runs several times faster without it
      has_step models && make_models gemma3-4b f16
      has_step run && run_shape gemma3-4b f16 none,hiprune 0.334,0.112 f16 off
      ;;
    llava-next-7b)
      # LLaVA-NeXT-7B's shapes (CLIP ViT-L/14-336 on the overview + 2 x 2 crops of a 1024x768 image = 2880 tokens,
      # Vicuna-7B as Q4_0): HiPrune's official NeXT path at about 1/3 and 1/9 (its paper's 640 / 320 of 2880)
      has_step models && make_models llava-next-7b q4_0
      has_step run && run_shape llava-next-7b q4_0 none,hiprune 0.334,0.112
      ;;
    *) log "unknown shape $shape (tinyllama | llava-7b | llava-7b-bf16 | qwen2.5-vl-3b | gemma3-4b | gemma3-4b-fa-off | llava-next-7b)"; exit 1 ;;
  esac
done
# The README's chart: the TinyLlama breakdown (the 7B one sits beside it).
[[ -f "$DOCS/bench-ttft-tinyllama-f16.png" ]] && cp "$DOCS/bench-ttft-tinyllama-f16.png" "$DOCS/bench-ttft.png"
log "done: $DOCS/bench-*"
