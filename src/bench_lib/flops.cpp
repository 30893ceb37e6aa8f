// FLOP counts of each TTFT stage, from the GGUF files' own tensor shapes (read with vtprune's checked GGUF
// reader, io::GgufFile: no tensor data is read).
#include <algorithm>
#include <string>
#include <string_view>

#include "vtprune/family.h"
#include "vtprune/gguf_file.h"
#include "vtprune_bench.h"

namespace vtprune::bench {
namespace {

// Elements of every 2-D+ tensor whose name starts with `prefix` and ends with `suffix` (matrices only: norms
// and biases cost no multiply-adds worth counting).
int64_t matrix_params(const io::GgufFile& f, std::string_view prefix, std::string_view suffix = ".weight") {
  int64_t total = 0;
  for (const io::GgufTensorInfo& t : f.tensors()) {
    if (!t.name.starts_with(prefix) || !t.name.ends_with(suffix) || t.ne.size() < 2 || t.ne[1] <= 1) continue;
    int64_t n = 1;
    for (int64_t d : t.ne) n *= d;
    total += n;
  }
  return total;
}

int64_t elements(const io::GgufFile& f, std::string_view name) {
  const io::GgufTensorInfo* t = f.find_tensor(name);
  if (t == nullptr) throw Error(f.where() + ": tensor " + std::string(name) + " is missing");
  int64_t n = 1;
  for (int64_t d : t->ne) n *= d;
  return n;
}

// Windows of `window` x `window` LLM tokens tiling an h x w grid from the top-left corner (clip.cpp's window
// order for Qwen2.5-VL: the last row and column of windows may be smaller). Returns the sum over windows of
// (patches in the window)^2, each LLM token being merge^2 patches.
int64_t window_pair_count(int64_t h, int64_t w, int64_t window, int64_t merge) {
  if (window <= 0) return 0;
  const auto sum_of_squares = [window](int64_t n) {
    int64_t s = 0;
    for (int64_t at = 0; at < n; at += window) {
      const int64_t side = std::min(window, n - at);
      s += side * side;
    }
    return s;
  };
  // a window of a x b tokens holds a * b * merge^2 patches: sum_a sum_b (a b m^2)^2 = m^4 (sum a^2)(sum b^2)
  return merge * merge * merge * merge * sum_of_squares(h) * sum_of_squares(w);
}

}  // namespace

void FlopModel::set_image_grid(int64_t h, int64_t w) {
  grid_h = h;
  grid_w = w;
  vit_patches = h * w * merge * merge;
  vit_tokens = vit_patches;  // no CLS in the dynamic-resolution families vtprune knows
  window_pairs = window_pair_count(h, w, window_tokens, merge);
}

double FlopModel::vit_attention_pairs(int block) const {
  const double T = static_cast<double>(vit_tokens);
  return full_attention_block(block) ? T * T : static_cast<double>(window_pairs);
}

double FlopModel::vit_flops(int layers_run) const {
  const double T = static_cast<double>(vit_tokens), D = static_cast<double>(vit_dim);
  const double patch = 2.0 * static_cast<double>(vit_patches) * static_cast<double>(patch_embd_params);
  // per block: every weight once per token, plus QK^T and AV (2 x D multiply-adds per (query, key) pair over
  // all heads); LLaVA's CLIP: all T x T pairs in every block (bidirectional)
  double blocks = 0;
  for (int b = 0; b < layers_run; ++b) {
    blocks += 2.0 * T * static_cast<double>(vit_block_params) + 4.0 * vit_attention_pairs(b) * D;
  }
  return static_cast<double>(tiles) * (patch + blocks);
}

double FlopModel::projector_flops(int64_t rows) const {
  return 2.0 * static_cast<double>(rows) * static_cast<double>(projector_params);
}

double FlopModel::tap_flops() const {
  // QK^T over all T x T pairs (2 x D per pair over the heads) + the sum of each key's column over the queries
  // (one multiply-add per pair and head; heads x head_dim = D, so that term is T^2 x heads, small beside QK^T)
  const double T = static_cast<double>(vit_tokens);
  return static_cast<double>(tiles) * 2.0 * T * T * static_cast<double>(vit_dim);
}

double FlopModel::prefill_flops(int64_t n_positions) const {
  const double n = static_cast<double>(n_positions);
  const double weights = 2.0 * static_cast<double>(llm_block_params) * n;
  // causal: position i attends to i + 1 keys; QK^T and AV each 2 x head_dim x heads per pair, per layer
  const double attention = static_cast<double>(llm_layers) * 2.0 * 2.0 * static_cast<double>(llm_head_dim) *
                           static_cast<double>(llm_heads) * n * (n + 1.0) / 2.0;
  const double head = 2.0 * static_cast<double>(llm_embd) * static_cast<double>(llm_vocab);  // last position only
  return weights + attention + head;
}

FlopModel read_flop_model(const std::filesystem::path& llm_gguf, const std::filesystem::path& mmproj_gguf) {
  FlopModel m;
  {
    const io::GgufFile v(mmproj_gguf, "mmproj");
    const family::Family& fam = family::detect(v);
    m.family = fam.name;
    m.vit_dim = v.u32("clip.vision.embedding_length");
    m.vit_stored_layers = v.u32("clip.vision.block_count");
    m.vit_block_params = matrix_params(v, "v.blk.") / std::max<int64_t>(1, m.vit_stored_layers);
    m.projector_params = matrix_params(v, "mm.");
    const int64_t patch = v.u32("clip.vision.patch_size");
    if (fam.name == "llava-1.5" || fam.name == "llava-next") {  // NeXT: per tile; the tile count is the image's (tiles)
      const int64_t image = v.u32("clip.vision.image_size");
      m.grid_h = m.grid_w = image / std::max<int64_t>(1, patch);
      m.vit_patches = m.grid_h * m.grid_w;
      m.vit_tokens = m.vit_patches + 1;  // + CLS
      m.patch_embd_params = elements(v, "v.patch_embd.weight");
    } else if (fam.name == "qwen2.5-vl") {
      m.merge = v.find_u32("clip.vision.spatial_merge_size").value_or(2);
      m.n_wa_pattern = v.find_u32("clip.vision.n_wa_pattern").value_or(0);
      // clip.cpp: 112-px windows unless the file says otherwise (Qwen2.5-VL files do not)
      const int64_t window_px = v.find_u32("clip.vision.window_size").value_or(112);
      m.window_tokens = window_px / std::max<int64_t>(1, patch * m.merge);
      // the Conv3D's two temporal halves, each a full 2-D convolution of the same still image
      m.patch_embd_params = elements(v, "v.patch_embd.weight") +
                            (v.find_tensor("v.patch_embd.weight.1") ? elements(v, "v.patch_embd.weight.1") : 0);
      m.projector_in_encoder = true;
      // the grid is the image's: set_image_grid once libmtmd has resized it
    } else if (fam.name == "gemma3") {
      // SigLIP on the fixed square input (no CLS, every block over all patches); the 4 x 4 average pool, the
      // soft-embedding norm and the input projection on every pooled token inside the encoder
      m.merge = v.find_u32("clip.vision.projector.scale_factor").value_or(4);
      m.patch_embd_params = elements(v, "v.patch_embd.weight");
      m.projector_in_encoder = true;
      // the grid is the pooled one libmtmd reports: set_image_grid
    } else {
      throw Error("bench: no FLOP model for family " + fam.name + " (" + mmproj_gguf.string() + ")");
    }
  }
  {
    const io::GgufFile l(llm_gguf, "LLM");
    const std::string arch = l.str("general.architecture");
    m.llm_layers = l.u32(arch + ".block_count");
    m.llm_embd = l.u32(arch + ".embedding_length");
    m.llm_heads = l.u32(arch + ".attention.head_count");
    // the head width: key_length where the file sets it (Gemma 3: 256, not n_embd / n_head)
    m.llm_head_dim = l.find_u32(arch + ".attention.key_length").value_or(static_cast<uint32_t>(m.llm_embd / std::max<int64_t>(1, m.llm_heads)));
    const io::GgufTensorInfo* embd = l.find_tensor("token_embd.weight");
    if (embd == nullptr || embd->ne.size() < 2) throw Error(l.where() + ": tensor token_embd.weight is missing");
    // the output head: output.weight, or token_embd tied (Qwen2.5-VL-3B); the same [n_embd, n_vocab] either way
    m.llm_vocab = embd->ne[1];
    m.llm_block_params = matrix_params(l, "blk.");
  }
  return m;
}

}  // namespace vtprune::bench
