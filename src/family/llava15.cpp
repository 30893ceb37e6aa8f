// LLaVA-1.5: CLIP ViT-L/14-336 (CLS first, 24 x 24 patches, one patch = one LLM token) + the `mlp` projector.
// vtprune's own graph serves it: llama.cpp's clip graph puts CLS last (#25814) and runs one layer short (#25817).
#include "families.h"

namespace vtprune::family {

const Family& llava15() {
  static const Family f{
      .name = "llava-1.5",
      .description = "LLaVA-1.5 (CLIP ViT-L/14-336 + mlp projector, 576 tokens)",
      .projector_types = {"mlp"},
      .encoder = Encoder::Own,
      .geometry = {.has_cls = true, .merge = 1, .window_order = false, .window_tokens = 0},
      .query_tensor = "Qcur-%d",
      .key_tensor = "Kcur-%d",
      .positions = Positions::Contiguous,
      .prompt = Prompt::Llava15,
      .methods =
          {
              {"hiprune", Support::Official, {}, "Danielement321/HiPrune@6e83a12 LLaVA/llava/model/llava_arch.py:140-184"},
              {"prumerge", Support::Official, {}, "42Shawn/LLaVA-PruMerge@097c041 clip_encoder.py:85-171 (layer 23: a Hugging Face CLIP tower; llama.cpp's mmproj drops it)"},
              {"prumerge_plus", Support::Official, {}, "42Shawn/LLaVA-PruMerge@097c041 clip_encoder.py:174-281"},
              {"dfmr", Support::Adapted, {}, "LLaVA-Zip has no public code: vtprune's reconstruction of the paper, every assumption an option (`vtprune methods dfmr`)"},
              {"visionzip", Support::Official, {}, "dvlab-research/VisionZip@3151f6d clip_encoder.py:42-85"},
              {"fastervlm", Support::Official, {}, "Theia-4869/FasterVLM@f5d5f12 llava_arch.py:141-155"},
              {"divprune", Support::Official, {}, "vbdi/divprune@799e2d9 llava_arch.py:147-171"},
              {"cdpruner", Support::Official, {}, "Theia-4869/CDPruner@9541616 llava_arch.py:141-188"},
              {"pool", Support::Official, {}, "baseline: average pooling of the 24 x 24 patch grid before the projector"},
              {"random", Support::Official, {}, "baseline"},
              {"none", Support::Official, {}, "every token"},
          },
      .taps_note = "in vtprune's graph: a tapped block materialises its softmax once and reduces it to the statistics "
                   "the method asked for; untapped blocks run flash attention",
      .reference_depth = 24,
  };
  return f;
}

}  // namespace vtprune::family
