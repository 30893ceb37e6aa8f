// vtprune bench: end-to-end TTFT of every method x budget on one LLaVA-style GGUF pair, with per-stage
// medians and spreads, the ideal (FLOP-count) speed-up beside the measured one, an encoder-only comparison
// (no taps / each method's taps / llama.cpp's own graph), and optionally llama.cpp's llama-mtmd-cli run on
// the same files, image and prompt.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vtprune::bench {

// Median and range of repeated measurements.
struct Spread {
  double median = 0, min = 0, max = 0;
  int n = 0;
};
Spread spread(std::vector<double> values);

// ---- FLOP model -------------------------------------------------------------------------------------------
// Read from the GGUF files' tensor shapes and metadata, so the counts follow the files actually benchmarked.
// Two vision families (family.h):
//   llava-1.5:  CLIP ViT (CLS + a fixed patch grid, every block attends over all tokens) + the mlp projector on
//               the kept rows only (vtprune projects after pruning).
//   qwen2.5-vl: dynamic resolution (the grid is the benchmarked image's: set_image_grid), no CLS, the Conv3D
//               patch embedding as two halves on the same still image, q/k/v/out + SwiGLU gate/up/down on every
//               patch, attention inside 112-px windows (merge-unit windows of window_tokens x window_tokens LLM
//               tokens, smaller at the right and bottom edges) except every n_wa_pattern-th block, which attends
//               over all patches; the 2 x 2 merger (4D -> 4D -> LLM width) on every merged token inside the
//               encoder, before any pruning.
//   gemma3:     SigLIP on the fixed square input (no CLS, every block over all patches), then the 4 x 4 average
//               pool and the input projection on every pooled token inside the encoder.
// Any LLM architecture (llama, qwen2vl with its q/k/v biases and tied output: biases cost no multiply-adds,
// the tied output head is token_embd's shape). Multiply-add = 2 FLOPs; norms, activations, RoPE and softmax
// are left out (< 1-2% at these widths).
struct FlopModel {
  std::string family;  // "llava-1.5" | "qwen2.5-vl" | "gemma3" (family::Family::name of the mmproj)
  // vision tower
  int64_t vit_patches = 0, vit_tokens = 0, vit_dim = 0, vit_stored_layers = 0;
  int64_t vit_block_params = 0;   // weights of one block (q, k, v, out, fc1, fc2 | q, k, v, out, gate, up, down)
  int64_t patch_embd_params = 0;  // 3 * p * p * D (Qwen2.5-VL: both Conv3D halves, 2 * 3 * p * p * D)
  int64_t projector_params = 0;   // mm.0 + mm.2 weights
  // the LLM token grid of the image (LLaVA: 24 x 24 from the file; Qwen2.5-VL: the benchmarked image's)
  int64_t grid_h = 0, grid_w = 0;
  int64_t merge = 1;              // patches per side of one LLM token (Qwen2.5-VL: 2)
  int64_t n_wa_pattern = 0;       // 0: every block attends over all tokens; else block i is full-attention when
                                  // (i + 1) % n_wa_pattern == 0 and windowed otherwise (llama.cpp's rule)
  int64_t window_tokens = 0;      // window side in LLM tokens (112 px / patch / merge)
  int64_t window_pairs = 0;       // sum over windows of (patches in the window)^2: (query, key) pairs per head
  bool projector_in_encoder = false;  // the projector runs on every token inside the encoder (libmtmd)
  int64_t tiles = 1;              // ViT inputs per image (LLaVA-NeXT: the overview + the AnyRes crops); vit_flops
                                  // and tap_flops count every tile
  // LLM
  int64_t llm_layers = 0, llm_embd = 0, llm_heads = 0, llm_head_dim = 0, llm_vocab = 0;
  int64_t llm_block_params = 0;   // all blk.* weights, all layers

  bool dynamic_resolution() const { return family != "llava-1.5" && family != "llava-next"; }
  // Sets the image's LLM token grid (dynamic-resolution families): patches, ViT tokens and window pairs.
  void set_image_grid(int64_t h, int64_t w);
  bool full_attention_block(int block) const { return n_wa_pattern <= 0 || (block + 1) % n_wa_pattern == 0; }
  // (query, key) pairs per head in block `block`: T^2, or window_pairs in a windowed block.
  double vit_attention_pairs(int block) const;
  double vit_flops(int layers_run) const;     // patch embedding + blocks 0 .. layers_run - 1 on all tokens
  double projector_flops(int64_t rows) const;
  // The dense softmax(QK^T) over all T tokens that a received-attention tap computes for one block outside
  // libmtmd's graph (Mtmd encoder only): QK^T plus the weighted column sum, per head.
  double tap_flops() const;
  // Causal prefill of n positions: 2 x block params x n + attention (QK^T and AV over the causal triangle)
  // + the output head on the last position only.
  double prefill_flops(int64_t n_positions) const;
};
FlopModel read_flop_model(const std::filesystem::path& llm_gguf, const std::filesystem::path& mmproj_gguf);

// ---- llama-mtmd-cli ----------------------------------------------------------------------------------------
struct MtmdRun {
  double ttft_ms = 0;          // after model load: image file -> first generated token (log timestamps)
  double encode_ms = 0;        // "mtmd batch encoding done in N ms" / "image slice encoded in N ms"
  double image_decode_ms = 0;  // "image decoded (batch i/n) in N ms", summed
  int n_prompt_tokens = 0;     // llama_perf "prompt eval time = ... / N tokens"
  int64_t peak_rss_bytes = 0;  // the child's ru_maxrss
};
struct MtmdCommand {
  std::string binary, llm, mmproj, image, prompt;
  int threads = 1, n_ctx = 4096, n_batch = 2048;
  // The chat template vtprune uses for the family: LLaVA-1.5 files carry none (vicuna, as llama.cpp's own
  // tests); the others render the file's own Jinja template (llama-mtmd-cli's default is a built-in guess).
  std::vector<std::string> template_args{"--chat-template", "vicuna"};
  std::string flash_attn = "auto";  // -fa
};
// The template flags for a family's prompt (family::Prompt): {"--chat-template", "vicuna"} or {"--jinja"}.
std::vector<std::string> mtmd_template_args(const std::string& family);
std::vector<std::string> mtmd_argv(const MtmdCommand& command);
// Runs the binary once (stdout+stderr captured); throws Error with the tail of its output on failure.
MtmdRun run_mtmd_cli(const MtmdCommand& command);
// Parses llama-mtmd-cli's --log-jsonl --log-timestamps output. Throws Error naming what is missing.
MtmdRun parse_mtmd_log(const std::string& jsonl_output);

// ---- the benchmark -----------------------------------------------------------------------------------------
struct BenchParams {
  std::string llm_path, mmproj_path, image_path;
  std::string clip_text_path;            // CLIP folder for CDPruner's relevance=clip (optional)
  int n_gpu_layers = 0;                  // -ngl
  std::vector<std::string> rpc_servers;  // --rpc host:port
  std::string prompt = "What is shown in this image? Answer in one sentence.";
  std::vector<std::string> methods{"none", "hiprune"};
  // Empty: the family's default (default_budgets). Counts, ratios ("0.112", "11.2%") or "all".
  std::vector<std::string> budgets;
  int repeat = 3;
  int threads = 0;      // 0 = all cores
  int n_predict = 8;
  int n_ctx = 4096;
  int warmup = 1;       // unmeasured full runs first (page cache, allocator, OpenMP pool)
  // Encoder-only comparison. LLaVA-1.5 (vtprune's own graph): extra encoder-only runs (no taps / each method's
  // taps / llama.cpp's graph). libmtmd families: rows taken from the end-to-end runs' encode stage (none = no
  // taps, each method = its taps through the eval callback) beside llama-mtmd-cli's encode; no extra runs.
  bool encoder_bench = true;
  bool f16_attention = false;  // end-to-end rows with vision::MmprojOptions::f16_attention
  std::string flash_attn = "auto";  // llama.cpp's -fa for vtprune's LLM + libmtmd and for llama-mtmd-cli alike
  std::string mtmd_cli;  // empty: no comparison
  std::string command_line;  // recorded in the report
  std::function<void(const std::string&)> progress;  // one line per finished run
};

struct Row {
  std::string method, budget;
  int64_t tokens_in = 0, tokens_kept = 0;
  int n_prompt_tokens = 0, n_generated = 0;
  int64_t kv_bytes = 0;           // llama_state_seq_get_size after prefill (KV cells in use + a small header)
  int64_t kv_bytes_analytic = 0;  // bytes per token x prompt positions
  int64_t peak_rss_bytes = 0;     // VmHWM of this process over this configuration's runs (models included)
  Spread image_decode_ms, preprocess_ms, encode_ms, reduce_ms, project_ms, prefill_ms, ttft_ms, decode_tok_s;
  int vit_layers_run = 0;
  double flops_vit = 0, flops_projector = 0, flops_prefill = 0;
  double flops_taps = 0;  // the method's dense attention recomputation outside libmtmd's graph (not in the total)
  double flops_total() const { return flops_vit + flops_projector + flops_prefill; }
  double ideal_speedup = 0;     // FLOPs(none) / FLOPs(this)
  double measured_speedup = 0;  // median TTFT(none) / median TTFT(this)
  std::optional<double> ttft_vs_mtmd;  // median TTFT / llama-mtmd-cli median TTFT
};

struct EncoderRow {
  // "ViT, no taps", "ViT, hiprune taps", ..., "ViT + projector, ours", "llama-mtmd-cli"; libmtmd families:
  // "libmtmd ViT + merger, no taps (none's runs)", "libmtmd ViT + merger, hiprune taps (blocks 15, 31)", ...
  std::string name;
  int layers = 0;
  bool like_mtmd = false;  // ViT + projector on all N rows: the span llama-mtmd-cli's encode time covers
  Spread ms;            // wall time of one encode (graph build + compute + read-back)
  double per_layer_ms = 0;
  std::optional<double> vs_mtmd;     // median / llama-mtmd-cli's median
  std::optional<double> vs_no_taps;  // median / our no-taps median
};

struct MtmdSummary {
  std::vector<std::string> argv;
  Spread ttft_ms, encode_ms, image_decode_ms;
  int n_prompt_tokens = 0;
  int64_t peak_rss_bytes = 0;
  int vit_layers_run = 0;
};

// The budgets a bench runs when none are given: LLaVA-1.5's fixed 576 tokens -> 576, 192, 128, 64; a
// dynamic-resolution family -> retention ratios 0.334, 0.223, 0.112 (the same thirds and ninths of the image).
std::vector<std::string> default_budgets(const std::string& family);

struct BenchReport {
  BenchParams params;
  std::string family, encoder_name;  // family::Family::name and the encoder serving it ("own" | "mtmd")
  int image_width = 0, image_height = 0;  // the image file's own size
  int threads = 0;
  std::string cpu, system_info;
  double load_before = 0, load_after = 0;
  FlopModel flops;
  std::vector<Row> rows;
  std::vector<EncoderRow> encoder;
  std::optional<MtmdSummary> mtmd;
};

BenchReport run_bench(const BenchParams& params);

nlohmann::json to_json(const BenchReport& report);
std::string to_markdown(const BenchReport& report);
// The TTFT breakdown as stacked bars (one per method/budget, llama-mtmd-cli last). Throws Error when vtprune
// was built without the draw library.
void save_ttft_chart(const BenchReport& report, const std::filesystem::path& png);
bool chart_available();

}  // namespace vtprune::bench
