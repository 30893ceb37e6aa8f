// Flags shared by the commands that load a VLM pair: encoder choice, GPU offload, libmtmd's image limits, and
// CLIP's text tower for CDPruner's official relevance.
#include "commands.h"
#include "vtprune/pipeline.h"

namespace vtprune::cli {

void add_device_options(CLI::App& cmd, pipeline::VlmParams& vlm) {
  cmd.add_option("--encoder", vlm.encoder,
                 "which encoder serves the mmproj: auto (the family's: vtprune's graph for LLaVA-1.5, libmtmd for the "
                 "others), own or mtmd")
      ->check(CLI::IsMember({"auto", "own", "mtmd"}))
      ->capture_default_str();
  cmd.add_option("--n-gpu-layers", vlm.n_gpu_layers,
                 "LLM layers on the GPU (-ngl; -1 = all) when llama.cpp was built with a GPU backend (VTPRUNE_GPU)")
      ->capture_default_str();
  cmd.add_option("--rpc", vlm.rpc_servers,
                 "ggml RPC servers host:port (comma-separated, llama.cpp's --rpc; each host runs build/bin/ggml-rpc-server): "
                 "the -ngl layers go to them")
      ->delimiter(',');
  cmd.add_flag("--mmproj-offload", vlm.vision_gpu,
               "run the vision encoder on the GPU: libmtmd's, or vtprune's own graphs (LLaVA ViT with taps, projector, CLIP "
               "text tower) on the first GPU device (`vtprune devices`); off: the CPU");
  cmd.add_option("--flash-attn", vlm.flash_attn,
                 "llama.cpp's flash attention for the LLM and libmtmd's ViT: on, off or auto (its default). On CPU, off runs "
                 "long ViT sequences (Gemma 3's 4096 patches) several times faster")
      ->check(CLI::IsMember({"on", "off", "auto"}))
      ->capture_default_str();
  cmd.add_option("--image-min-tokens", vlm.image_min_tokens,
                 "dynamic-resolution families (Qwen2.5-VL): at least this many image tokens (llama.cpp's flag)");
  cmd.add_option("--image-max-tokens", vlm.image_max_tokens,
                 "dynamic-resolution families: at most this many image tokens (llama.cpp's flag)");
  cmd.add_option("--clip-text", vlm.clip_text_path,
                 "Hugging Face CLIP folder (model.safetensors with the text tower and visual_projection, vocab.json, "
                 "merges.txt; e.g. openai/clip-vit-large-patch14-336): CDPruner's official relevance=clip on LLaVA-1.5");
}

}  // namespace vtprune::cli
