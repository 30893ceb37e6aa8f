// Qwen2.5-VL: a CLS-less ViT (patch 14, 2D RoPE, RMSNorm, SwiGLU) with window attention in most blocks; its
// merger turns each 2 x 2 unit of patches into one LLM token, and the LLM places image tokens with M-RoPE.
// libmtmd serves it; the taps read the post-RoPE Q/K of the tapped blocks through the eval callback.
#include "families.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {

namespace {

// The layout llama.cpp's converter writes (conversion/qwenvl.py: Qwen2VLVisionModel; QKV split, Conv3D split
// into v.patch_embd.weight / .weight.1) and clip.cpp loads (PROJECTOR_TYPE_QWEN25VL).
VisionFacts check_qwen25vl(const io::GgufFile& f) {
  int ff = 0;
  VisionFacts v = read_vision_sizes(f, &ff);
  f.size("clip.vision.n_wa_pattern", 256);
  if (v.width % v.heads != 0 || (v.width / v.heads) % 4 != 0) {
    throw InputError(f.where() + ": width " + std::to_string(v.width) + " over " + std::to_string(v.heads) +
                     " heads does not give a head size divisible by 4 (M-RoPE's sections)");
  }
  v.head_dim = v.width / v.heads;
  const int64_t d = v.width, p = v.patch_size;
  f.tensor("v.patch_embd.weight", {p, p, 3, d});
  f.tensor("v.patch_embd.weight.1", {p, p, 3, d});
  for (int i = 0; i < v.layers; ++i) {
    const std::string b = "v.blk." + std::to_string(i) + ".";
    f.tensor(b + "ln1.weight", {d});
    f.tensor(b + "ln2.weight", {d});
    for (const char* m : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
      f.tensor(b + m + ".weight", {d, d});
      f.tensor(b + m + ".bias", {d});
    }
    for (const char* m : {"ffn_gate", "ffn_up"}) {
      f.tensor(b + m + ".weight", {d, ff});
      f.tensor(b + m + ".bias", {ff});
    }
    f.tensor(b + "ffn_down.weight", {ff, d});
    f.tensor(b + "ffn_down.bias", {d});
  }
  f.tensor("v.post_ln.weight", {d});
  f.tensor("mm.0.weight", {4 * d, 4 * d});
  f.tensor("mm.0.bias", {4 * d});
  f.tensor("mm.2.weight", {4 * d, v.projector_dim});
  f.tensor("mm.2.bias", {v.projector_dim});
  return v;
}

}  // namespace

const Family& qwen25vl() {
  static const Family f{
      .name = "qwen2.5-vl",
      .description = "Qwen2.5-VL (window-attention ViT, 2 x 2 patch merger, M-RoPE LLM; dynamic resolution)",
      .projector_types = {"qwen2.5vl_merger", "qwen2.5o"},
      .encoder = Encoder::Mtmd,
      .geometry = {.has_cls = false, .merge = 2, .window_order = true, .window_tokens = 4},
      .query_tensor = "Qcur_rope-%d",
      .key_tensor = "Kcur_rope-%d",
      .positions = Positions::MRopeGrid,
      .prompt = Prompt::FileTemplate,
      .methods =
          {
              {"hiprune", Support::Official, {"object_layer=15", "deep_layer=-1", "scores=sum"},
               "Danielement321/HiPrune@6e83a12 Qwen2_5_VL/qwen2_5_vl_HiPrune.py:566-577 (scores: mean over heads, sum "
               "over queries, mean over each token's 4 patches), :1855-1892 (selection; object block 16 as bench_qwen.sh; "
               "registers after `deep -= mask`, so a buffer token can be picked again and fewer than the budget kept: "
               "registers=strict avoids it)"},
              {"fastervlm", Support::Adapted, {"rank_by=received", "layer=-1"},
               "no CLS token: the top-B tokens by the attention they receive (mean over heads and queries, mean over "
               "each token's 4 patches) in the last block, instead of the CLS row"},
              {"visionzip", Support::Adapted, {"dominant_by=received", "metric=features", "layer=-1"},
               "no CLS token: the dominant tokens are the top ones by the attention they receive in the last block, "
               "and the contextual tokens are merged by the cosine of the LLM-input embeddings (libmtmd gives no keys)"},
              {"prumerge", Support::Refused, {},
               "PruMerge's outlier test reads the [CLS] query of CLIP's last layer (a single-head attention proxy); "
               "Qwen2.5-VL's ViT has no CLS token"},
              {"prumerge_plus", Support::Refused, {},
               "PruMerge+ needs PruMerge's [CLS]-query outliers; Qwen2.5-VL's ViT has no CLS token"},
              {"dfmr", Support::Adapted, {},
               "pools the merged-token grid of the LLM-input embeddings (libmtmd gives the merger's output, not the "
               "patch features), with the variation measured on those embeddings"},
              {"divprune", Support::Adapted, {},
               "DivPrune's rule unchanged (max-min diversity under cosine distance of the LLM-input embeddings), on the "
               "merged tokens; its official code covers LLaVA"},
              {"cdpruner", Support::Adapted, {"relevance=llm"},
               "no CLIP text tower: relevance from the LLM's own token embeddings of the prompt (relevance=llm)"},
              {"pool", Support::Adapted, {},
               "averages cells of the merged-token grid in the LLM-input space; a pooled token sits at its cell's "
               "top-left M-RoPE position"},
              {"random", Support::Official, {}, "baseline: uniformly random merged tokens"},
              {"none", Support::Official, {}, "every token"},
          },
      .taps_note = "libmtmd's graph with flash attention left on; the eval callback reads Qcur_rope / Kcur_rope of the "
                   "tapped blocks and vtprune recomputes softmax(QK^T/sqrt(d)) densely over the whole image without the "
                   "window mask (as the official FA2 path, qwen2_5_vl_HiPrune.py:201-209), per patch, then the mean over "
                   "each token's 4 patches, reordered from window order to raster order",
      .check_file = check_qwen25vl,
      .reference_depth = 32,
  };
  return f;
}

}  // namespace vtprune::family
