// LLaVA-NeXT (llava-v1.6): LLaVA-1.5's CLIP ViT-L/14-336 + `mlp` projector, applied to AnyRes tiles: an overview of
// the whole image and the crops of the best of the file's grid pinpoints (up to 1 + 4 tiles x 576 = 2880 tokens).
// vtprune's own graph serves it (llama.cpp's LLaVA graph puts CLS last and runs one layer short, #25814 / #25817)
// and vtprune does the AnyRes split as LLaVA-NeXT's own code does; each tile is one unit of 24 x 24 tokens.
#include "families.h"

namespace vtprune::family {

namespace {

const std::string kPerTile =
    "runs its LLaVA-1.5 rule on each 576-token tile (the overview and every crop), the image's budget split over "
    "the tiles by largest remainder";

}  // namespace

const Family& llava_next() {
  static const Family f = [] {
    Family next = llava15();  // the same tower, projector, CLS, taps, positions, prompt and reference depth
    next.name = "llava-next";
    next.description = "LLaVA-NeXT / 1.6 (CLIP ViT-L/14-336 + mlp projector on AnyRes tiles: overview + crops, up to 2880 tokens)";
    next.tiling = Tiling::AnyRes;
    next.methods = {
        {"hiprune", Support::Official, {},
         "Danielement321/HiPrune@6e83a12 LLaVA/llava/model/llava_arch.py:140-184 (per tile, int(budget / tiles) each; "
         "vtprune hands the remainder out so that the image keeps exactly its budget) and :186-263 (the 'spatial' "
         "layout: the overview's rows, then the crops' rows in the whole image's raster order)"},
        {"prumerge", Support::Adapted, {}, "PruMerge's code covers LLaVA-1.5; " + kPerTile},
        {"prumerge_plus", Support::Adapted, {}, "PruMerge+'s code covers LLaVA-1.5; " + kPerTile},
        {"dfmr", Support::Adapted, {}, "LLaVA-Zip has no public code; vtprune's reconstruction " + kPerTile},
        {"visionzip", Support::Adapted, {}, "vtprune " + kPerTile},
        {"fastervlm", Support::Adapted, {}, "vtprune " + kPerTile},
        {"divprune", Support::Adapted, {}, "vtprune " + kPerTile},
        {"cdpruner", Support::Adapted, {}, "vtprune " + kPerTile},
        {"pool", Support::Adapted, {}, "baseline: average pooling of each tile's 24 x 24 patch grid"},
        {"random", Support::Official, {}, "baseline: uniformly random tokens of each tile"},
        {"none", Support::Official, {}, "every token of every tile"},
    };
    next.taps_note = "in vtprune's graph, tile by tile: a tapped block materialises its softmax once and reduces it to "
                     "the statistics the method asked for; untapped blocks run flash attention";
    return next;
  }();
  return f;
}

}  // namespace vtprune::family
