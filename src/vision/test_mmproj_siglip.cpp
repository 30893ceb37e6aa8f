// Random-weight SigLIP mmproj files in llama.cpp's exact layout: Gemma 3 (Gemma3VisionModel in llama.cpp's
// converter; clip.cpp's PROJECTOR_TYPE_GEMMA3) and Idefics3 / SmolVLM (SmolVLMModel; PROJECTOR_TYPE_IDEFICS3).
#include <cmath>

#include "../io/gguf_stream_writer.h"
#include "model_impl.h"
#include "vtprune/vision.h"

namespace vtprune::vision {

SiglipMmprojShape siglip_mmproj_shape(std::string_view name) {
  if (name == "gemma3-4b") return {};
  if (name == "gemma3") {
    SiglipMmprojShape s;
    s.n_layer = 4;
    s.n_embd = 64;
    s.n_ff = 128;
    s.n_head = 4;
    s.image_size = 448;  // 32 x 32 patches, pooled 4 x 4 -> 8 x 8 = 64 tokens
    s.proj_out = 64;
    return s;
  }
  if (name == "smolvlm") {
    // SmolVLM-256M's geometry (512 px tiles of 16 px patches, scale factor 4 -> 8 x 8 = 64 tokens a tile) at a
    // tiny width; images are resized to a 1024 px longest edge: a 4:3 picture gives 2 x 2 tiles + the overview
    SiglipMmprojShape s;
    s.projector = "idefics3";
    s.n_layer = 4;
    s.n_embd = 64;
    s.n_ff = 128;
    s.n_head = 4;
    s.image_size = 512;
    s.patch_size = 16;
    s.merge = 4;
    s.longest_edge = 1024;
    s.proj_out = 64;
    return s;
  }
  throw Error("unknown SigLIP mmproj shape \"" + std::string(name) + "\" (gemma3 | gemma3-4b | smolvlm)");
}

namespace {

void write_siglip(const std::filesystem::path& path, const SiglipMmprojShape& s, uint64_t seed, WeightType weight_type,
                  bool header_only) {
  const int side = s.patch_size > 0 ? s.image_size / s.patch_size : 0;
  if (s.n_layer < 1 || s.n_embd < 1 || s.n_ff < 1 || s.n_head < 1 || s.n_embd % s.n_head != 0 || s.n_ff == s.n_embd ||
      s.patch_size < 1 || s.image_size % s.patch_size != 0 || s.merge < 1 || side % s.merge != 0 || s.proj_out < 1 ||
      (s.projector != "gemma3" && s.projector != "idefics3")) {
    throw Error("write_test_mmproj_siglip: invalid shape (" + s.projector + ", blocks " + std::to_string(s.n_layer) + ", width " +
                std::to_string(s.n_embd) + ", ff " + std::to_string(s.n_ff) + ", heads " + std::to_string(s.n_head) +
                ", image " + std::to_string(s.image_size) + " px in " + std::to_string(s.patch_size) + " px patches, merge " +
                std::to_string(s.merge) + ", proj_out " + std::to_string(s.proj_out) +
                "): needs positive sizes, heads dividing the width, n_ff != width, and a patch grid that splits into "
                "merge x merge blocks");
  }
  const int64_t D = s.n_embd, F = s.n_ff, P = s.patch_size, O = s.proj_out, N = int64_t{side} * side;
  const ggml_type wtype = weight_type == WeightType::F16    ? GGML_TYPE_F16
                          : weight_type == WeightType::BF16 ? GGML_TYPE_BF16
                          : weight_type == WeightType::Q8_0 ? GGML_TYPE_Q8_0
                                                            : GGML_TYPE_F32;
  // The converter keeps the patch embedding F16 in an F16 file (F32 otherwise); a matrix whose rows do not
  // split into quantisation blocks falls back to F16 (SigLIP's 4304-wide fc2 in a Q8_0 file).
  const ggml_type patch_type = wtype == GGML_TYPE_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
  const auto matrix_type = [&](int64_t row) {
    return ggml_is_quantized(wtype) && row % ggml_blck_size(wtype) != 0 ? GGML_TYPE_F16 : wtype;
  };
  std::vector<io::GeneratedTensor> t;
  const auto matrix = [&](std::string name, int64_t in, int64_t out, float gain = 1.0f) {
    t.push_back({std::move(name), matrix_type(in), {in, out, 1, 1}, 0.0f, gain / std::sqrt(static_cast<float>(in))});
  };
  const auto vec = [&](std::string name, int64_t n, float mean, float stddev) {
    t.push_back({std::move(name), GGML_TYPE_F32, {n, 1, 1, 1}, mean, stddev});
  };
  t.push_back({"v.patch_embd.weight", patch_type, {P, P, 3, D}, 0.0f, 1.0f / std::sqrt(static_cast<float>(3 * P * P))});
  vec("v.patch_embd.bias", D, 0.0f, 0.1f);
  t.push_back({"v.position_embd.weight", GGML_TYPE_F32, {D, N, 1, 1}, 0.0f, 0.5f});
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "v.blk." + std::to_string(il) + ".";
    // q/k larger than 1/sqrt(D) so that attention is peaked enough to be informative
    matrix(p + "attn_k.weight", D, D, 2.0f);
    vec(p + "attn_k.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_v.weight", D, D);
    vec(p + "attn_v.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_q.weight", D, D, 2.0f);
    vec(p + "attn_q.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_out.weight", D, D);
    vec(p + "attn_out.bias", D, 0.0f, 0.1f);
    vec(p + "ln1.weight", D, 1.0f, 0.1f);
    vec(p + "ln1.bias", D, 0.0f, 0.1f);
    matrix(p + "ffn_up.weight", D, F);  // SigLIP's fc1
    vec(p + "ffn_up.bias", F, 0.0f, 0.1f);
    matrix(p + "ffn_down.weight", F, D);  // fc2
    vec(p + "ffn_down.bias", D, 0.0f, 0.1f);
    vec(p + "ln2.weight", D, 1.0f, 0.1f);
    vec(p + "ln2.bias", D, 0.0f, 0.1f);
  }
  vec("v.post_ln.weight", D, 1.0f, 0.1f);
  vec("v.post_ln.bias", D, 0.0f, 0.1f);
  const bool gemma = s.projector == "gemma3";
  if (gemma) {
    // mm_input_projection_weight [D, O] as stored by Hugging Face: ggml ne = [O, D]; clip.cpp transposes it
    t.push_back({"mm.input_projection.weight", matrix_type(O), {O, D, 1, 1}, 0.0f, 1.0f / std::sqrt(static_cast<float>(D))});
    vec("mm.soft_emb_norm.weight", D, 1.0f, 0.1f);  // Gemma's RMSNorm weight, stored as 1 + w by the converter
  } else {
    // the connector's modality projection: one bias-free linear layer on the pixel-shuffled D s^2 features
    matrix("mm.model.fc.weight", D * s.merge * s.merge, O);
  }

  GgufPtr gguf(gguf_init_empty());
  gguf_context* g = gguf.get();
  // SigLIP's preprocessor: mean = std = 0.5
  set_mmproj_header(g, {.name = gemma ? "vtprune random Gemma 3 mmproj" : "vtprune random Idefics3 / SmolVLM mmproj", .wtype = wtype, .projection_dim = s.proj_out,
                        .image_size = s.image_size, .patch_size = s.patch_size, .width = s.n_embd, .ff = s.n_ff,
                        .blocks = s.n_layer, .heads = s.n_head, .mean = {0.5f, 0.5f, 0.5f}, .std = {0.5f, 0.5f, 0.5f}});
  gguf_set_val_str(g, "clip.projector_type", s.projector.c_str());
  gguf_set_val_f32(g, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
  gguf_set_val_bool(g, "clip.use_gelu", true);
  if (gemma) {
    // the converter writes the scale factor only when the pooled side differs from 16 (mm_tokens_per_image 256)
    if (side / s.merge != 16 || s.merge != 4) gguf_set_val_u32(g, "clip.vision.projector.scale_factor", static_cast<uint32_t>(s.merge));
  } else {
    gguf_set_val_u32(g, "clip.vision.projector.scale_factor", static_cast<uint32_t>(s.merge));
    if (s.longest_edge > 0) gguf_set_val_u32(g, "clip.vision.preproc_image_size", static_cast<uint32_t>(s.longest_edge));
  }
  gguf_set_val_u32(g, "general.quantization_version", GGML_QNT_VERSION);
  io::write_generated_gguf(g, t, path, seed, header_only);
}

}  // namespace

void write_test_mmproj_siglip(const std::filesystem::path& path, const SiglipMmprojShape& shape, uint64_t seed,
                              WeightType weight_type) {
  write_siglip(path, shape, seed, weight_type, /*header_only=*/false);
}

void write_test_mmproj_siglip_header(const std::filesystem::path& path, const SiglipMmprojShape& shape,
                                     WeightType weight_type) {
  write_siglip(path, shape, /*seed=*/0, weight_type, /*header_only=*/true);
}

}  // namespace vtprune::vision
