// Idefics3 / SmolVLM: a SigLIP ViT on fixed-size tiles (no CLS), its output pixel-shuffled so that each s x s block
// of patches becomes one LLM token (SmolVLM-256M / 500M: 512 px tiles of 16 px patches, s = 4 -> 64 tokens), then
// one linear projection. llama.cpp slices an image into a grid of tiles plus a downscaled overview (the
// "global" image), each its own chunk between <row_i_col_j> / <global-img> markers; vtprune prunes each tile on its
// own grid and splits an image's budget over its tiles.
#include "families.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {

namespace {

// The layout llama.cpp's converter writes (SmolVLMModel) and clip.cpp loads (PROJECTOR_TYPE_IDEFICS3).
VisionFacts check_idefics3(const io::GgufFile& f) {
  VisionFacts v = check_siglip_tower(f, /*default_merge=*/0);
  f.tensor("mm.model.fc.weight", {int64_t{v.width} * v.merge * v.merge, v.projector_dim});
  return v;
}

}  // namespace

const Family& idefics3() {
  static const Family f{
      .name = "idefics3",
      .description = "Idefics3 / SmolVLM (SigLIP on tiles + overview, pixel shuffle, one linear projection)",
      .projector_types = {"idefics3"},
      .encoder = Encoder::Mtmd,
      .geometry = {.has_cls = false, .merge = 4, .units = UnitLayout::RasterBlocks, .grid = TokenGrid::Square},
      .query_tensor = "Qcur-%d",
      .key_tensor = "Kcur-%d",
      .positions = Positions::Contiguous,
      .prompt = Prompt::FileTemplate,
      .methods =
          {
              {"hiprune", Support::Adapted, {"object_layer=9", "deep_layer=-1"},
               "HiPrune's code covers LLaVA and Qwen2.5-VL; here it selects per tile (as its LLaVA-NeXT code does per "
               "crop, the image's budget split evenly over its tiles) from the attention each token's s x s patches "
               "receive (mean), object block at LLaVA's relative depth"},
              {"fastervlm", Support::Adapted, {"rank_by=received", "layer=-1"},
               "no CLS token: per tile, the top tokens by the attention their patches receive in the last block"},
              {"visionzip", Support::Adapted, {"dominant_by=received", "metric=features", "layer=-1"},
               "no CLS token: per tile, dominant tokens by the attention received in the last block, contextual "
               "tokens merged by the cosine of the LLM-input embeddings"},
              {"prumerge", Support::Refused, {},
               "PruMerge's outlier test reads the [CLS] query of CLIP's last layer; the SigLIP ViT of Idefics3 / "
               "SmolVLM has no CLS token"},
              {"prumerge_plus", Support::Refused, {},
               "PruMerge+ needs PruMerge's [CLS]-query outliers; the SigLIP ViT of Idefics3 / SmolVLM has no CLS token"},
              {"dfmr", Support::Adapted, {},
               "per tile: pools the tile's token grid of LLM-input embeddings, the variation measured on them"},
              {"divprune", Support::Adapted, {},
               "DivPrune's rule unchanged (max-min diversity under cosine distance of the LLM-input embeddings), per "
               "tile; its official code covers LLaVA"},
              {"cdpruner", Support::Adapted, {"relevance=llm"},
               "no CLIP text tower: relevance from the LLM's own token embeddings of the prompt (relevance=llm), "
               "per tile"},
              {"pool", Support::Adapted, {},
               "averages cells of each tile's token grid in the LLM-input space; kept tokens are renumbered"},
              {"random", Support::Official, {}, "baseline: uniformly random tokens of each tile"},
              {"none", Support::Official, {}, "every token"},
          },
      .taps_note = "libmtmd's SigLIP graph, one encode per tile; the eval callback reads Qcur / Kcur of the tapped "
                   "blocks and vtprune computes softmax(QK^T/sqrt(d)) over the tile's patches, then the mean over each "
                   "token's s x s patch block",
      .check_file = check_idefics3,
      .reference_depth = 27,
  };
  return f;
}

}  // namespace vtprune::family
