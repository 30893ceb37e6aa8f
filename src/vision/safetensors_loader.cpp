// safetensors (8-byte little-endian header length, JSON header, raw data) and timm ViT/DeiT weights.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>

#include "model_impl.h"
#include "safetensors_file.h"

namespace vtprune::vision {
namespace {

using json = nlohmann::json;

std::optional<json> read_config(const std::filesystem::path& dir) {
  const auto file = dir / "config.json";
  if (!std::filesystem::exists(file)) return std::nullopt;
  std::ifstream in(file);
  try {
    return json::parse(in);
  } catch (const std::exception& e) {
    throw Error("config " + file.string() + ": not valid JSON (" + e.what() + ")");
  }
}

}  // namespace

void load_timm_safetensors(const std::filesystem::path& path, ggml_backend_buffer_type_t weight_type, ModelData& model) {
  const std::filesystem::path file_path = std::filesystem::is_directory(path) ? path / "model.safetensors" : path;
  const std::filesystem::path dir = file_path.parent_path();
  auto file = std::make_shared<SafetensorsFile>(file_path);
  Hparams& hp = model.hp;
  hp.architecture = Architecture::Timm;
  const std::string where = "timm model " + file_path.string();

  if (file->contains("dist_token")) {
    throw Error(where + ": distilled DeiT (dist_token) is not supported; use a non-distilled ViT/DeiT");
  }
  // Shapes come from the weights; what weights cannot tell (heads, eps, preprocessing) from config.json.
  if (!file->contains("patch_embed.proj.weight")) {
    throw Error(where + ": missing tensor patch_embed.proj.weight (not a timm ViT?)");
  }
  const auto& patch = file->shape_of("patch_embed.proj.weight");
  if (patch.size() != 4 || patch[1] != 3 || patch[2] != patch[3]) {
    throw Error(where + ": patch_embed.proj.weight has shape " + shape_string(patch) + ", expected [D, 3, p, p]");
  }
  hp.dim = checked_size(patch[0], 1 << 16, where + ": width (patch_embed.proj.weight dim 0)");
  hp.patch_size = checked_size(patch[2], 1 << 10, where + ": patch size (patch_embed.proj.weight dim 2)");
  const auto& pos = file->shape_of("pos_embed");
  if (pos.size() != 3 || pos[0] != 1 || pos[2] != hp.dim) {
    throw Error(where + ": pos_embed has shape " + shape_string(pos) + ", expected [1, T, " + std::to_string(hp.dim) + "]");
  }
  const int64_t n_patches = pos[1] - 1;
  const int grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_patches))));
  if (n_patches <= 0 || int64_t{grid} * grid != n_patches) {
    throw Error(where + ": pos_embed has " + std::to_string(pos[1]) + " positions, expected 1 + a square grid");
  }
  hp.image_size = checked_size(int64_t{grid} * hp.patch_size, 1 << 14, where + ": image size");
  int depth = 0;
  while (file->contains("blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
  if (depth == 0) throw Error(where + ": no blocks.N.* tensors");
  hp.stored_layers = hp.original_depth = depth;
  hp.feature_layer = depth - 1;
  const auto& fc1 = file->shape_of("blocks.0.mlp.fc1.weight");
  if (fc1.size() != 2 || fc1[1] != hp.dim) {
    throw Error(where + ": blocks.0.mlp.fc1.weight has shape " + shape_string(fc1) + ", expected [F, " + std::to_string(hp.dim) + "]");
  }
  hp.ff = checked_size(fc1[0], 1 << 20, where + ": FFN width (blocks.0.mlp.fc1.weight dim 0)");
  hp.heads = hp.dim / 64;  // timm ViTs use 64-wide heads; config.json overrides
  hp.eps = 1e-6f;
  hp.preprocess = Preprocess{};
  hp.preprocess.kind = Preprocess::Kind::TimmCenterCrop;
  hp.preprocess.image_size = hp.image_size;
  double crop_pct = 0.875;
  if (const auto config = read_config(dir)) {
    try {
      if (config->contains("model_args")) {
        const auto& args = config->at("model_args");
        if (args.contains("num_heads")) hp.heads = args.at("num_heads").get<int>();
        if (args.contains("layer_norm_eps")) hp.eps = args.at("layer_norm_eps").get<float>();
      }
      if (config->contains("pretrained_cfg")) {
        const auto& cfg = config->at("pretrained_cfg");
        if (cfg.contains("crop_pct")) crop_pct = cfg.at("crop_pct").get<double>();
        if (cfg.contains("interpolation") && cfg.at("interpolation").get<std::string>() != "bicubic") {
          throw Error("interpolation " + cfg.at("interpolation").get<std::string>() + " is not supported (bicubic only)");
        }
        if (cfg.contains("mean")) hp.preprocess.mean = cfg.at("mean").get<std::array<float, 3>>();
        if (cfg.contains("std")) hp.preprocess.std = cfg.at("std").get<std::array<float, 3>>();
      }
    } catch (const Error& e) {
      throw Error("config " + (dir / "config.json").string() + ": " + e.what());
    } catch (const std::exception& e) {
      throw Error("config " + (dir / "config.json").string() + ": unexpected value (" + e.what() + ")");
    }
  }
  if (hp.heads <= 0 || hp.dim % hp.heads != 0) {
    throw Error(where + ": width " + std::to_string(hp.dim) + " is not divisible by " + std::to_string(hp.heads) + " heads");
  }
  if (!(crop_pct >= 0.05 && crop_pct <= 1)) throw Error(where + ": crop_pct " + std::to_string(crop_pct) + " out of [0.05, 1]");
  check_numerics(hp, where);
  hp.preprocess.resize_shorter = static_cast<int>(std::floor(hp.image_size / crop_pct));  // timm's scale_size

  const int64_t D = hp.dim, F = hp.ff, T = n_patches + 1, P = hp.patch_size;
  const bool has_head = file->contains("head.weight");
  if (has_head) {
    const auto& head = file->shape_of("head.weight");
    if (head.size() != 2) throw Error(where + ": head.weight has shape " + shape_string(head) + ", expected [classes, D]");
    hp.num_classes = checked_size(head[0], 1 << 20, where + ": classes (head.weight dim 0)");
  }

  WeightBuilder builder(static_cast<size_t>(depth) * 20 + 16);
  Weights& w = model.weights;
  w.patch_w = add_tensor(builder, file, "patch_embed.proj.weight", {D, 3, P, P}, {P, P, 3, D}, true, "patch_embed.weight");
  w.patch_b = add_tensor(builder, file, "patch_embed.proj.bias", {D}, {D}, false, "patch_embed.bias");
  w.cls = add_tensor(builder, file, "cls_token", {1, 1, D}, {D}, false, "cls_token");
  w.pos = add_tensor(builder, file, "pos_embed", {1, T, D}, {D, T}, false, "pos_embed");
  w.blocks.resize(depth);
  for (int il = 0; il < depth; ++il) {
    const std::string p = "blocks." + std::to_string(il) + ".";
    BlockWeights& b = w.blocks[il];
    b.ln1_w = add_tensor(builder, file, p + "norm1.weight", {D}, {D}, false, p + "ln1.weight");
    b.ln1_b = add_tensor(builder, file, p + "norm1.bias", {D}, {D}, false, p + "ln1.bias");
    // The fused qkv projection [3D, D] is split into q, k, v (rows 0..D, D..2D, 2D..3D) so that keys and
    // the CLS query can be read out unchanged.
    b.q_w = add_tensor(builder, file, p + "attn.qkv.weight", {3 * D, D}, {D, D}, true, p + "q.weight", 0);
    b.k_w = add_tensor(builder, file, p + "attn.qkv.weight", {3 * D, D}, {D, D}, true, p + "k.weight", D * D);
    b.v_w = add_tensor(builder, file, p + "attn.qkv.weight", {3 * D, D}, {D, D}, true, p + "v.weight", 2 * D * D);
    b.q_b = add_tensor(builder, file, p + "attn.qkv.bias", {3 * D}, {D}, false, p + "q.bias", 0);
    b.k_b = add_tensor(builder, file, p + "attn.qkv.bias", {3 * D}, {D}, false, p + "k.bias", D);
    b.v_b = add_tensor(builder, file, p + "attn.qkv.bias", {3 * D}, {D}, false, p + "v.bias", 2 * D);
    b.o_w = add_tensor(builder, file, p + "attn.proj.weight", {D, D}, {D, D}, true, p + "out.weight");
    b.o_b = add_tensor(builder, file, p + "attn.proj.bias", {D}, {D}, false, p + "out.bias");
    b.ln2_w = add_tensor(builder, file, p + "norm2.weight", {D}, {D}, false, p + "ln2.weight");
    b.ln2_b = add_tensor(builder, file, p + "norm2.bias", {D}, {D}, false, p + "ln2.bias");
    b.fc1_w = add_tensor(builder, file, p + "mlp.fc1.weight", {F, D}, {D, F}, true, p + "fc1.weight");
    b.fc1_b = add_tensor(builder, file, p + "mlp.fc1.bias", {F}, {F}, false, p + "fc1.bias");
    b.fc2_w = add_tensor(builder, file, p + "mlp.fc2.weight", {D, F}, {F, D}, true, p + "fc2.weight");
    b.fc2_b = add_tensor(builder, file, p + "mlp.fc2.bias", {D}, {D}, false, p + "fc2.bias");
  }
  w.norm_w = add_tensor(builder, file, "norm.weight", {D}, {D}, false, "norm.weight");
  w.norm_b = add_tensor(builder, file, "norm.bias", {D}, {D}, false, "norm.bias");
  if (has_head) {
    const int64_t C = hp.num_classes;
    w.head_w = add_tensor(builder, file, "head.weight", {C, D}, {D, C}, true, "head.weight");
    w.head_b = add_tensor(builder, file, "head.bias", {C}, {C}, false, "head.bias");
  }
  builder.finish(weight_type, w);
  model.path = file_path;
}

// ---------------------------------------------------------------------------------------------------
// Hugging Face CLIP vision towers.

namespace {

// The prefix before "embeddings.patch_embedding.weight" of the vision tower (e.g. "vision_model." or
// "vision_tower.vision_model."), or throws.
std::string clip_prefix(const SafetensorsFile& file) {
  const std::string suffix = "embeddings.patch_embedding.weight";
  for (const auto& [name, entry] : file.entries()) {
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        name.find("text_model") == std::string::npos) {
      return name.substr(0, name.size() - suffix.size());
    }
  }
  throw Error("CLIP model " + file.path().string() + ": no tensor *embeddings.patch_embedding.weight (not a CLIP vision tower?)");
}

// The LLaVA projector's two linear layers in `file`: (first, second) names without ".weight", or empty.
std::pair<std::string, std::string> find_projector(const SafetensorsFile& file) {
  for (const auto& [name, entry] : file.entries()) {
    for (const auto& [a, b] : {std::pair<std::string, std::string>{"mm_projector.0.weight", "mm_projector.2"},
                               {"multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_2"}}) {
      if (name.size() >= a.size() && name.compare(name.size() - a.size(), a.size(), a) == 0) {
        const std::string prefix = name.substr(0, name.size() - a.size());
        return {prefix + a.substr(0, a.size() - 7), prefix + b};
      }
    }
  }
  return {};
}

}  // namespace

void load_clip_safetensors(const std::filesystem::path& path, const ClipOptions& options, ggml_backend_buffer_type_t weight_type,
                           ModelData& model) {
  const std::filesystem::path file_path = std::filesystem::is_directory(path) ? path / "model.safetensors" : path;
  const std::filesystem::path dir = file_path.parent_path();
  auto file = std::make_shared<SafetensorsFile>(file_path);
  const std::string where = "CLIP model " + file_path.string();
  const std::string pre = clip_prefix(*file);
  Hparams& hp = model.hp;
  hp.architecture = Architecture::Clip;

  const auto& patch = file->shape_of(pre + "embeddings.patch_embedding.weight");
  if (patch.size() != 4 || patch[1] != 3 || patch[2] != patch[3]) {
    throw Error(where + ": " + pre + "embeddings.patch_embedding.weight has shape " + shape_string(patch) +
                ", expected [D, 3, p, p]");
  }
  hp.dim = checked_size(patch[0], 1 << 16, where + ": width (patch_embedding dim 0)");
  hp.patch_size = checked_size(patch[2], 1 << 10, where + ": patch size (patch_embedding dim 2)");
  const auto& pos = file->shape_of(pre + "embeddings.position_embedding.weight");
  if (pos.size() != 2 || pos[1] != hp.dim) {
    throw Error(where + ": position_embedding has shape " + shape_string(pos) + ", expected [T, " + std::to_string(hp.dim) + "]");
  }
  const int64_t n_patches = pos[0] - 1;
  const int grid = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n_patches))));
  if (n_patches <= 0 || int64_t{grid} * grid != n_patches) {
    throw Error(where + ": position_embedding has " + std::to_string(pos[0]) + " positions, expected 1 + a square grid");
  }
  hp.image_size = checked_size(int64_t{grid} * hp.patch_size, 1 << 14, where + ": image size");
  int depth = 0;
  while (file->contains(pre + "encoder.layers." + std::to_string(depth) + ".layer_norm1.weight")) ++depth;
  if (depth == 0) throw Error(where + ": no " + pre + "encoder.layers.N.* tensors");
  hp.stored_layers = hp.original_depth = depth;
  hp.feature_layer = options.feature_layer < 0 ? depth + options.feature_layer : options.feature_layer;
  if (hp.feature_layer < 0 || hp.feature_layer >= depth) {
    throw Error(where + ": feature layer " + std::to_string(options.feature_layer) + " is outside the " +
                std::to_string(depth) + " layers");
  }
  const auto& fc1 = file->shape_of(pre + "encoder.layers.0.mlp.fc1.weight");
  if (fc1.size() != 2 || fc1[1] != hp.dim) {
    throw Error(where + ": mlp.fc1.weight has shape " + shape_string(fc1) + ", expected [F, " + std::to_string(hp.dim) + "]");
  }
  hp.ff = checked_size(fc1[0], 1 << 20, where + ": FFN width (mlp.fc1.weight dim 0)");
  hp.heads = hp.dim / 64;
  hp.eps = 1e-5f;
  hp.preprocess.kind = Preprocess::Kind::LlavaPadSquare;
  hp.preprocess.image_size = hp.image_size;
  hp.preprocess.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  hp.preprocess.std = {0.26862954f, 0.26130258f, 0.27577711f};
  if (const auto config = read_config(dir)) {
    try {
      const auto& vc = config->contains("vision_config") ? config->at("vision_config") : *config;
      if (vc.contains("num_attention_heads")) hp.heads = vc.at("num_attention_heads").get<int>();
      if (vc.contains("layer_norm_eps")) hp.eps = vc.at("layer_norm_eps").get<float>();
      if (vc.contains("hidden_act")) {
        const auto act = vc.at("hidden_act").get<std::string>();
        if (act != "quick_gelu" && act != "gelu") throw Error("hidden_act " + act + " is not supported");
        hp.ffn_gelu_erf = act == "gelu";
      }
    } catch (const Error& e) {
      throw Error("config " + (dir / "config.json").string() + ": " + e.what());
    } catch (const std::exception& e) {
      throw Error("config " + (dir / "config.json").string() + ": unexpected value (" + e.what() + ")");
    }
  }
  if (const auto pp = dir / "preprocessor_config.json"; std::filesystem::exists(pp)) {
    try {
      std::ifstream in(pp);
      const auto j = json::parse(in);
      if (j.contains("image_mean")) hp.preprocess.mean = j.at("image_mean").get<std::array<float, 3>>();
      if (j.contains("image_std")) hp.preprocess.std = j.at("image_std").get<std::array<float, 3>>();
    } catch (const std::exception& e) {
      throw Error("preprocessor config " + pp.string() + ": " + e.what());
    }
  }
  if (hp.heads <= 0 || hp.dim % hp.heads != 0) {
    throw Error(where + ": width " + std::to_string(hp.dim) + " is not divisible by " + std::to_string(hp.heads) + " heads");
  }
  check_numerics(hp, where);

  const int64_t D = hp.dim, F = hp.ff, T = n_patches + 1, P = hp.patch_size;
  WeightBuilder builder(static_cast<size_t>(depth) * 20 + 16);
  Weights& w = model.weights;
  w.patch_w = add_tensor(builder, file, pre + "embeddings.patch_embedding.weight", {D, 3, P, P}, {P, P, 3, D}, true, "patch_embed.weight");
  w.cls = add_tensor(builder, file, pre + "embeddings.class_embedding", {D}, {D}, false, "cls_token");
  w.pos = add_tensor(builder, file, pre + "embeddings.position_embedding.weight", {T, D}, {D, T}, false, "pos_embed");
  w.pre_ln_w = add_tensor(builder, file, pre + "pre_layrnorm.weight", {D}, {D}, false, "pre_ln.weight");
  w.pre_ln_b = add_tensor(builder, file, pre + "pre_layrnorm.bias", {D}, {D}, false, "pre_ln.bias");
  w.blocks.resize(depth);
  for (int il = 0; il < depth; ++il) {
    const std::string p = pre + "encoder.layers." + std::to_string(il) + ".";
    const std::string n = "blk." + std::to_string(il) + ".";
    BlockWeights& b = w.blocks[il];
    b.ln1_w = add_tensor(builder, file, p + "layer_norm1.weight", {D}, {D}, false, n + "ln1.weight");
    b.ln1_b = add_tensor(builder, file, p + "layer_norm1.bias", {D}, {D}, false, n + "ln1.bias");
    ggml_tensor** qkvo[4][2] = {{&b.q_w, &b.q_b}, {&b.k_w, &b.k_b}, {&b.v_w, &b.v_b}, {&b.o_w, &b.o_b}};
    const char* names[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < 4; ++i) {
      const std::string a = p + "self_attn." + names[i];
      *qkvo[i][0] = add_tensor(builder, file, a + ".weight", {D, D}, {D, D}, true, n + names[i] + ".weight");
      *qkvo[i][1] = add_tensor(builder, file, a + ".bias", {D}, {D}, false, n + names[i] + ".bias");
    }
    b.ln2_w = add_tensor(builder, file, p + "layer_norm2.weight", {D}, {D}, false, n + "ln2.weight");
    b.ln2_b = add_tensor(builder, file, p + "layer_norm2.bias", {D}, {D}, false, n + "ln2.bias");
    b.fc1_w = add_tensor(builder, file, p + "mlp.fc1.weight", {F, D}, {D, F}, true, n + "fc1.weight");
    b.fc1_b = add_tensor(builder, file, p + "mlp.fc1.bias", {F}, {F}, false, n + "fc1.bias");
    b.fc2_w = add_tensor(builder, file, p + "mlp.fc2.weight", {D, F}, {F, D}, true, n + "fc2.weight");
    b.fc2_b = add_tensor(builder, file, p + "mlp.fc2.bias", {D}, {D}, false, n + "fc2.bias");
  }
  // The projector: in its own file, or next to the tower.
  auto projector_file = options.projector.empty() ? file : std::make_shared<SafetensorsFile>(options.projector);
  const auto [first, second] = find_projector(*projector_file);
  if (!options.projector.empty() && first.empty()) {
    throw Error("projector " + options.projector.string() + ": no mm_projector.0 / multi_modal_projector.linear_1 tensors");
  }
  if (!first.empty()) {
    const auto& mm0 = projector_file->shape_of(first + ".weight");
    if (mm0.size() != 2 || mm0[1] != D) {
      throw Error("projector " + projector_file->path().string() + ": " + first + ".weight has shape " + shape_string(mm0) +
                  ", expected [hidden, " + std::to_string(D) + "]");
    }
    const int64_t hidden = checked_size(mm0[0], 1 << 20, "projector " + projector_file->path().string() + ": hidden width");
    const auto& mm2 = projector_file->shape_of(second + ".weight");
    if (mm2.size() != 2 || mm2[1] != hidden) {
      throw Error("projector " + projector_file->path().string() + ": " + second + ".weight has shape " +
                  shape_string(mm2) + ", expected [out, " + std::to_string(hidden) + "]");
    }
    hp.projector_dim = checked_size(mm2[0], 1 << 20, "projector " + projector_file->path().string() + ": output width");
    const int64_t O = hp.projector_dim;
    w.mm0_w = add_tensor(builder, projector_file, first + ".weight", {hidden, D}, {D, hidden}, true, "mm.0.weight");
    w.mm0_b = add_tensor(builder, projector_file, first + ".bias", {hidden}, {hidden}, false, "mm.0.bias");
    w.mm2_w = add_tensor(builder, projector_file, second + ".weight", {O, hidden}, {hidden, O}, true, "mm.2.weight");
    w.mm2_b = add_tensor(builder, projector_file, second + ".bias", {O}, {O}, false, "mm.2.bias");
  }
  builder.finish(weight_type, w);
  model.path = file_path;
}

}  // namespace vtprune::vision
