// The SigLIP vision tower as llama.cpp's converter writes it (clip.cpp's clip_graph_siglip): learned position
// embeddings, LayerNorm blocks with biased q/k/v/out and a GELU MLP (fc1 stored as ffn_up, fc2 as ffn_down),
// a final post_ln; no CLS token. Gemma 3 and Idefics3 / SmolVLM put their own projector after it.
#include "families.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {

VisionFacts check_siglip_tower(const io::GgufFile& f, int default_merge) {
  int ff = 0;
  VisionFacts v = read_vision_sizes(f, &ff);
  const int image = f.size("clip.vision.image_size", 1 << 14);
  if (!f.has("clip.vision.projector.scale_factor") && default_merge < 1) {
    throw InputError(f.where() + ": no clip.vision.projector.scale_factor (how many patches a side form one LLM token)");
  }
  v.merge = f.has("clip.vision.projector.scale_factor") ? f.size("clip.vision.projector.scale_factor", 64) : default_merge;
  if (v.width % v.heads != 0) {
    throw InputError(f.where() + ": width " + std::to_string(v.width) + " does not split into " + std::to_string(v.heads) + " heads");
  }
  if (image % v.patch_size != 0 || (image / v.patch_size) % v.merge != 0) {
    throw InputError(f.where() + ": a " + std::to_string(image) + " px image in " + std::to_string(v.patch_size) +
                     " px patches does not split into " + std::to_string(v.merge) + "x" + std::to_string(v.merge) +
                     " blocks (clip.vision.image_size / patch_size / projector.scale_factor)");
  }
  v.head_dim = v.width / v.heads;
  const int64_t d = v.width, p = v.patch_size, side = image / p;
  f.tensor("v.patch_embd.weight", {p, p, 3, d});
  f.tensor("v.patch_embd.bias", {d});
  f.tensor("v.position_embd.weight", {d, side * side});
  for (int i = 0; i < v.layers; ++i) {
    const std::string b = "v.blk." + std::to_string(i) + ".";
    for (const char* m : {"ln1", "ln2"}) {
      f.tensor(b + m + ".weight", {d});
      f.tensor(b + m + ".bias", {d});
    }
    for (const char* m : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
      f.tensor(b + m + ".weight", {d, d});
      f.tensor(b + m + ".bias", {d});
    }
    f.tensor(b + "ffn_up.weight", {d, ff});
    f.tensor(b + "ffn_up.bias", {ff});
    f.tensor(b + "ffn_down.weight", {ff, d});
    f.tensor(b + "ffn_down.bias", {d});
  }
  f.tensor("v.post_ln.weight", {d});
  f.tensor("v.post_ln.bias", {d});
  return v;
}

}  // namespace vtprune::family
