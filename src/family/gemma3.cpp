// Gemma 3: a SigLIP ViT (no CLS, 896 px in 14 px patches = 64 x 64) whose output is average-pooled in 4 x 4
// blocks to 16 x 16 = 256 LLM tokens, RMS-normed and projected; the LLM (1-D positions) attends over an image's
// tokens without the causal mask. libmtmd serves it; the taps read the Q and K of the tapped SigLIP blocks.
#include "families.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {

namespace {

// The layout llama.cpp's converter writes (Gemma3VisionModel) and clip.cpp loads (PROJECTOR_TYPE_GEMMA3).
VisionFacts check_gemma3(const io::GgufFile& f) {
  VisionFacts v = check_siglip_tower(f, /*default_merge=*/4);  // clip.cpp: n_merge = 4 unless the file says
  f.tensor("mm.input_projection.weight", {v.projector_dim, v.width});
  f.tensor("mm.soft_emb_norm.weight", {v.width});
  return v;
}

}  // namespace

const Family& gemma3() {
  static const Family f{
      .name = "gemma3",
      .description = "Gemma 3 (SigLIP ViT, 4 x 4 average pooling to 256 tokens, non-causal image block in the LLM)",
      .projector_types = {"gemma3"},
      .encoder = Encoder::Mtmd,
      .geometry = {.has_cls = false, .merge = 4, .units = UnitLayout::RasterBlocks, .grid = TokenGrid::Square},
      .query_tensor = "Qcur-%d",
      .key_tensor = "Kcur-%d",
      .positions = Positions::Contiguous,
      .bidirectional_image = true,
      .prompt = Prompt::FileTemplate,
      .methods =
          {
              {"hiprune", Support::Adapted, {"object_layer=9", "deep_layer=-1"},
               "HiPrune's code covers LLaVA and Qwen2.5-VL; on SigLIP (no CLS) the anchors, buffers and registers "
               "come from the attention each pooled token's 16 patches receive (mean), object block at LLaVA's "
               "relative depth (9 of 24 -> 10 of 27, 1-based)"},
              {"fastervlm", Support::Adapted, {"rank_by=received", "layer=-1"},
               "no CLS token: the top-B pooled tokens by the attention their patches receive in the last block "
               "(mean over heads, queries and the token's 16 patches), instead of the CLS row"},
              {"visionzip", Support::Adapted, {"dominant_by=received", "metric=features", "layer=-1"},
               "no CLS token: dominant tokens by the attention received in the last block, contextual tokens merged "
               "by the cosine of the LLM-input embeddings (libmtmd gives no keys)"},
              {"prumerge", Support::Refused, {},
               "PruMerge's outlier test reads the [CLS] query of CLIP's last layer; Gemma 3's SigLIP ViT has no CLS "
               "token"},
              {"prumerge_plus", Support::Refused, {},
               "PruMerge+ needs PruMerge's [CLS]-query outliers; Gemma 3's SigLIP ViT has no CLS token"},
              {"dfmr", Support::Adapted, {},
               "pools the 16 x 16 grid of LLM-input embeddings (libmtmd gives the projector's output), with the "
               "variation measured on those embeddings"},
              {"divprune", Support::Adapted, {},
               "DivPrune's rule unchanged (max-min diversity under cosine distance) on the LLM-input embeddings of "
               "the pooled tokens; its official code covers LLaVA"},
              {"cdpruner", Support::Adapted, {"relevance=llm"},
               "no CLIP text tower: relevance from the LLM's own token embeddings of the prompt (relevance=llm)"},
              {"pool", Support::Adapted, {},
               "averages cells of the 16 x 16 token grid in the LLM-input space (after Gemma's own 4 x 4 pooling); "
               "kept tokens are renumbered"},
              {"random", Support::Official, {}, "baseline: uniformly random pooled tokens"},
              {"none", Support::Official, {}, "every token"},
          },
      .taps_note = "libmtmd's SigLIP graph; the eval callback reads Qcur / Kcur of the tapped blocks (no position "
                   "rotation: SigLIP adds learned position embeddings before the blocks) and vtprune computes "
                   "softmax(QK^T/sqrt(d)) over all patches, then the mean over each token's 4 x 4 patch block",
      .check_file = check_gemma3,
      .reference_depth = 27,
  };
  return f;
}

}  // namespace vtprune::family
