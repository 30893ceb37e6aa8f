// CLIP's text tower (CLIPTextTransformer + text_projection) and image-side projection (post_layernorm +
// visual_projection) from Hugging Face safetensors, as ggml graphs on the CPU backend. The blocks reuse the
// vision encoder's helpers (linear, layer_norm, the MLP residual with quick-GELU); attention is the explicit
// softmax with a causal + padding mask.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>

#include "model_impl.h"
#include "safetensors_file.h"
#include "vtprune/text.h"

namespace vtprune::text {

using vision::BlockWeights;
using vision::ContextPtr;
using vision::GallocrPtr;

struct ClipTextModelImpl {
  std::filesystem::path path;
  std::unique_ptr<vision::Compute> compute;  // the device + CPU scheduler the towers run on
  vision::Weights weights;  // ctx + buffer own every tensor below
  vision::Hparams hp;       // width, heads, ff, eps, activation of the text blocks
  int layers = 0, context = 0, vocab = 0, embed_dim = 0, vision_width = 0;
  float vision_eps = 1e-5f;
  int64_t eos_token_id = 2;  // 2: the legacy configs -> pool at argmax(ids)
  ggml_tensor *tok_emb = nullptr, *pos_emb = nullptr, *final_w = nullptr, *final_b = nullptr, *text_proj = nullptr;
  ggml_tensor *post_w = nullptr, *post_b = nullptr, *visual_proj = nullptr;
  std::vector<BlockWeights> blocks;
  std::unique_ptr<ClipTokenizer> tokenizer;
};

namespace {

using json = nlohmann::json;

// The prefix before "text_model.embeddings.token_embedding.weight" ("" for CLIPModel / CLIPTextModel files).
std::string text_prefix(const vision::SafetensorsFile& file) {
  const std::string suffix = "text_model.embeddings.token_embedding.weight";
  for (const auto& [name, entry] : file.entries()) {
    if (name.size() >= suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return name.substr(0, name.size() - suffix.size());
    }
  }
  throw Error("CLIP text model " + file.path().string() +
              ": no tensor *text_model.embeddings.token_embedding.weight (not a CLIP checkpoint with a text tower?)");
}

const std::vector<int64_t>& matrix_shape(const vision::SafetensorsFile& file, const std::string& name, const std::string& where) {
  const auto& s = file.shape_of(name);
  if (s.size() != 2) throw Error(where + ": " + name + " has shape " + vision::shape_string(s) + ", expected a matrix");
  return s;
}

// Runs `graph` (allocated with a fresh allocator) after `set_inputs` filled its inputs, and returns the values
// of `output` (read before the allocator, which owns the graph's memory, is released).
std::vector<float> compute(ClipTextModelImpl& m, ggml_cgraph* graph, int threads, const std::function<void()>& set_inputs,
                           const ggml_tensor* output, const char* what) {
  vision::check_threads(threads);
  m.compute->run(graph, threads, set_inputs, std::string("CLIP ") + what);
  return vision::read_tensor(output);
}

}  // namespace

ClipTextModel::ClipTextModel(std::unique_ptr<ClipTextModelImpl> impl) : impl_(std::move(impl)) {}
ClipTextModel::ClipTextModel(ClipTextModel&&) noexcept = default;
ClipTextModel& ClipTextModel::operator=(ClipTextModel&&) noexcept = default;
ClipTextModel::~ClipTextModel() = default;

ClipTextModel ClipTextModel::load(const std::filesystem::path& path, const std::string& device) {
  const std::filesystem::path file_path = std::filesystem::is_directory(path) ? path / "model.safetensors" : path;
  const std::filesystem::path dir = file_path.parent_path();
  auto file = std::make_shared<vision::SafetensorsFile>(file_path);
  const std::string where = "CLIP text model " + file_path.string();
  auto m = std::make_unique<ClipTextModelImpl>();
  m->path = file_path;
  const std::string pre = text_prefix(*file), t = pre + "text_model.";

  const auto& tok = matrix_shape(*file, t + "embeddings.token_embedding.weight", where);
  const auto& pos = matrix_shape(*file, t + "embeddings.position_embedding.weight", where);
  vision::Hparams& hp = m->hp;
  hp.architecture = vision::Architecture::Clip;
  hp.dim = vision::checked_size(tok[1], 1 << 16, where + ": width (token_embedding dim 1)");
  m->vocab = vision::checked_size(tok[0], 1 << 22, where + ": vocabulary (token_embedding dim 0)");
  m->context = vision::checked_size(pos[0], 1 << 16, where + ": positions (position_embedding dim 0)");
  if (pos[1] != hp.dim) {
    throw Error(where + ": position_embedding has shape " + vision::shape_string(pos) + ", expected [T, " + std::to_string(hp.dim) + "]");
  }
  while (file->contains(t + "encoder.layers." + std::to_string(m->layers) + ".layer_norm1.weight")) ++m->layers;
  if (m->layers == 0) throw Error(where + ": no " + t + "encoder.layers.N.* tensors");
  const auto& fc1 = matrix_shape(*file, t + "encoder.layers.0.mlp.fc1.weight", where);
  if (fc1[1] != hp.dim) {
    throw Error(where + ": mlp.fc1.weight has shape " + vision::shape_string(fc1) + ", expected [F, " + std::to_string(hp.dim) + "]");
  }
  hp.ff = vision::checked_size(fc1[0], 1 << 20, where + ": FFN width (mlp.fc1.weight dim 0)");
  const auto& proj = matrix_shape(*file, pre + "text_projection.weight", where);
  if (proj[1] != hp.dim) {
    throw Error(where + ": text_projection.weight has shape " + vision::shape_string(proj) + ", expected [C, " + std::to_string(hp.dim) + "]");
  }
  m->embed_dim = vision::checked_size(proj[0], 1 << 16, where + ": projection width (text_projection dim 0)");
  hp.heads = hp.dim / 64;
  hp.eps = 1e-5f;
  hp.exact_quick_gelu = true;
  if (const auto cfg_file = dir / "config.json"; std::filesystem::exists(cfg_file)) {
    try {
      std::ifstream in(cfg_file);
      const json config = json::parse(in);
      const json& tc = config.contains("text_config") ? config.at("text_config") : config;
      if (tc.contains("num_attention_heads")) hp.heads = tc.at("num_attention_heads").get<int>();
      if (tc.contains("layer_norm_eps")) hp.eps = tc.at("layer_norm_eps").get<float>();
      if (tc.contains("eos_token_id")) m->eos_token_id = tc.at("eos_token_id").get<int64_t>();
      if (tc.contains("hidden_act")) {
        const auto act = tc.at("hidden_act").get<std::string>();
        if (act != "quick_gelu" && act != "gelu") throw Error("text_config.hidden_act " + act + " is not supported");
        hp.ffn_gelu_erf = act == "gelu";
      }
      if (config.contains("vision_config") && config.at("vision_config").contains("layer_norm_eps")) {
        m->vision_eps = config.at("vision_config").at("layer_norm_eps").get<float>();
      }
    } catch (const Error& e) {
      throw Error("config " + cfg_file.string() + ": " + e.what());
    } catch (const std::exception& e) {
      throw Error("config " + cfg_file.string() + ": unexpected value (" + e.what() + ")");
    }
  }
  if (hp.heads <= 0 || hp.dim % hp.heads != 0) {
    throw Error(where + ": width " + std::to_string(hp.dim) + " is not divisible by " + std::to_string(hp.heads) + " heads");
  }
  for (float eps : {hp.eps, m->vision_eps}) {
    if (!std::isfinite(eps) || eps <= 0.0f) throw Error(where + ": layer-norm epsilon " + std::to_string(eps) + " is not > 0");
  }
  const bool image_side = file->contains(pre + "visual_projection.weight");
  if (image_side) {
    const auto& vp = matrix_shape(*file, pre + "visual_projection.weight", where);
    if (vp[0] != m->embed_dim) {
      throw Error(where + ": visual_projection.weight has shape " + vision::shape_string(vp) + ", expected [" +
                  std::to_string(m->embed_dim) + ", D_vision] (the text projection's width)");
    }
    m->vision_width = vision::checked_size(vp[1], 1 << 16, where + ": vision width (visual_projection dim 1)");
  }

  const int64_t D = hp.dim, F = hp.ff, V = m->vocab, T = m->context, C = m->embed_dim, Dv = m->vision_width;
  vision::WeightBuilder builder(static_cast<size_t>(m->layers) * 20 + 16);
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape, std::initializer_list<int64_t> ne, bool keep) {
    return vision::add_tensor(builder, file, name, shape, ne, keep, name);
  };
  m->tok_emb = add(t + "embeddings.token_embedding.weight", {V, D}, {D, V}, true);  // get_rows reads F16/BF16 too
  m->pos_emb = add(t + "embeddings.position_embedding.weight", {T, D}, {D, T}, false);
  m->blocks.resize(static_cast<size_t>(m->layers));
  for (int il = 0; il < m->layers; ++il) {
    const std::string p = t + "encoder.layers." + std::to_string(il) + ".";
    BlockWeights& b = m->blocks[static_cast<size_t>(il)];
    b.ln1_w = add(p + "layer_norm1.weight", {D}, {D}, false);
    b.ln1_b = add(p + "layer_norm1.bias", {D}, {D}, false);
    ggml_tensor** qkvo[4][2] = {{&b.q_w, &b.q_b}, {&b.k_w, &b.k_b}, {&b.v_w, &b.v_b}, {&b.o_w, &b.o_b}};
    const char* names[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
    for (int i = 0; i < 4; ++i) {
      *qkvo[i][0] = add(p + "self_attn." + names[i] + ".weight", {D, D}, {D, D}, true);
      *qkvo[i][1] = add(p + "self_attn." + names[i] + ".bias", {D}, {D}, false);
    }
    b.ln2_w = add(p + "layer_norm2.weight", {D}, {D}, false);
    b.ln2_b = add(p + "layer_norm2.bias", {D}, {D}, false);
    b.fc1_w = add(p + "mlp.fc1.weight", {F, D}, {D, F}, true);
    b.fc1_b = add(p + "mlp.fc1.bias", {F}, {F}, false);
    b.fc2_w = add(p + "mlp.fc2.weight", {D, F}, {F, D}, true);
    b.fc2_b = add(p + "mlp.fc2.bias", {D}, {D}, false);
  }
  m->final_w = add(t + "final_layer_norm.weight", {D}, {D}, false);
  m->final_b = add(t + "final_layer_norm.bias", {D}, {D}, false);
  m->text_proj = add(pre + "text_projection.weight", {C, D}, {D, C}, true);
  if (image_side) {
    m->post_w = add(pre + "vision_model.post_layernorm.weight", {Dv}, {Dv}, false);
    m->post_b = add(pre + "vision_model.post_layernorm.bias", {Dv}, {Dv}, false);
    m->visual_proj = add(pre + "visual_projection.weight", {C, Dv}, {Dv, C}, true);
  }
  m->compute = std::make_unique<vision::Compute>(device, vision::kGraphNodes);
  builder.finish(m->compute->weight_buffer_type(), m->weights);
  if (std::filesystem::exists(dir / "vocab.json") && std::filesystem::exists(dir / "merges.txt")) {
    m->tokenizer = std::make_unique<ClipTokenizer>(ClipTokenizer::load_dir(dir));
  }
  return ClipTextModel(std::move(m));
}

int ClipTextModel::width() const { return impl_->hp.dim; }
int ClipTextModel::heads() const { return impl_->hp.heads; }
int ClipTextModel::layers() const { return impl_->layers; }
int ClipTextModel::context_length() const { return impl_->context; }
int ClipTextModel::vocab_size() const { return impl_->vocab; }
int ClipTextModel::embed_dim() const { return impl_->embed_dim; }
bool ClipTextModel::has_tokenizer() const { return impl_->tokenizer != nullptr; }
bool ClipTextModel::has_image_projection() const { return impl_->visual_proj != nullptr; }
int ClipTextModel::vision_width() const { return impl_->vision_width; }

const ClipTokenizer& ClipTextModel::tokenizer() const {
  if (!impl_->tokenizer) {
    throw Error("CLIP text model " + impl_->path.string() + ": no tokenizer (vocab.json + merges.txt beside the model)");
  }
  return *impl_->tokenizer;
}

Embeddings ClipTextModel::text_embeds(std::string_view text, int threads) const {
  return encode_ids(tokenizer().encode(text), threads);
}

Embeddings ClipTextModel::encode_ids(std::span<const int32_t> ids, int threads) const {
  ClipTextModelImpl& m = *impl_;
  const vision::Hparams& hp = m.hp;
  for (int32_t id : ids) {
    if (id < 0 || id >= m.vocab) {
      throw Error("CLIP text model: token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(m.vocab));
    }
  }
  const TokenSegments seg = split_segments(ids, m.context);
  const int64_t D = hp.dim, H = hp.heads, dh = D / H, T = seg.length, M = seg.count;
  // pooling position per segment: argmax of the ids (legacy eos_token_id == 2), else the first eos_token_id
  std::vector<int32_t> pool(static_cast<size_t>(M));
  for (int64_t s = 0; s < M; ++s) {
    const int32_t* row = seg.ids.data() + s * T;
    int64_t at = 0;
    if (m.eos_token_id == 2) {
      at = std::max_element(row, row + T) - row;  // first maximum
    } else {
      const int32_t* it = std::find(row, row + T, static_cast<int32_t>(m.eos_token_id));
      at = it == row + T ? 0 : it - row;
    }
    pool[static_cast<size_t>(s)] = static_cast<int32_t>(s * T + at);
  }
  // additive mask [T_k, T_q, 1, M]: causal, and padded keys masked (HF's causal + expanded attention mask)
  std::vector<float> mask(static_cast<size_t>(M * T * T));
  for (int64_t s = 0; s < M; ++s) {
    for (int64_t q = 0; q < T; ++q) {
      for (int64_t k = 0; k < T; ++k) {
        const bool visible = k <= q && seg.mask[static_cast<size_t>(s * T + k)];
        mask[static_cast<size_t>((s * T + q) * T + k)] = visible ? 0.0f : -INFINITY;
      }
    }
  }

  const size_t nodes = static_cast<size_t>(m.layers) * 48 + 64;
  ContextPtr ctx = vision::make_metadata_context(nodes, nodes);
  ggml_context* c = ctx.get();
  ggml_cgraph* graph = ggml_new_graph_custom(c, nodes, false);
  ggml_tensor* in_ids = ggml_new_tensor_1d(c, GGML_TYPE_I32, T * M);
  ggml_tensor* in_mask = ggml_new_tensor_4d(c, GGML_TYPE_F32, T, T, 1, M);
  ggml_tensor* in_pool = ggml_new_tensor_1d(c, GGML_TYPE_I32, M);
  for (ggml_tensor* x : {in_ids, in_mask, in_pool}) ggml_set_input(x);

  ggml_tensor* x = ggml_reshape_3d(c, ggml_get_rows(c, m.tok_emb, in_ids), D, T, M);
  x = ggml_add(c, x, ggml_view_2d(c, m.pos_emb, D, T, m.pos_emb->nb[1], 0));
  const float scale = 1.0f / std::sqrt(static_cast<float>(dh));
  for (const BlockWeights& b : m.blocks) {
    ggml_tensor* h = vision::layer_norm(c, x, b.ln1_w, b.ln1_b, hp.eps);
    // [D, T, M] -> [dh, T, H, M]
    auto heads = [&](ggml_tensor* t) { return ggml_cont(c, ggml_permute(c, ggml_reshape_4d(c, t, dh, H, T, M), 0, 2, 1, 3)); };
    ggml_tensor* q = heads(vision::linear(c, h, b.q_w, b.q_b));
    ggml_tensor* k = heads(vision::linear(c, h, b.k_w, b.k_b));
    ggml_tensor* v = vision::linear(c, h, b.v_w, b.v_b);
    ggml_tensor* kq = vision::matmul(c, k, q);                          // [T_k, T_q, H, M]
    ggml_tensor* attn = ggml_soft_max_ext(c, kq, in_mask, scale, 0.0f);
    ggml_tensor* vt = ggml_cont(c, ggml_permute(c, ggml_reshape_4d(c, v, dh, H, T, M), 1, 2, 0, 3));  // [T, dh, H, M]
    ggml_tensor* kqv = vision::matmul(c, vt, attn);                     // [dh, T_q, H, M]
    ggml_tensor* out = ggml_cont_3d(c, ggml_permute(c, kqv, 0, 2, 1, 3), D, T, M);
    x = ggml_add(c, x, vision::linear(c, out, b.o_w, b.o_b));
    x = vision::mlp_residual(c, hp, b, x);
  }
  x = vision::layer_norm(c, x, m.final_w, m.final_b, hp.eps);
  ggml_tensor* pooled = ggml_get_rows(c, ggml_reshape_2d(c, x, D, T * M), in_pool);  // [D, M]
  ggml_tensor* result = vision::mark_output(c, graph, vision::matmul(c, m.text_proj, pooled), "text_embeds");

  auto values = compute(m, graph, threads, [&] {
    ggml_backend_tensor_set(in_ids, seg.ids.data(), 0, ggml_nbytes(in_ids));
    ggml_backend_tensor_set(in_mask, mask.data(), 0, ggml_nbytes(in_mask));
    ggml_backend_tensor_set(in_pool, pool.data(), 0, ggml_nbytes(in_pool));
  }, result, "text tower");
  return {std::move(values), M, m.embed_dim};
}

Embeddings ClipTextModel::image_embeds(const MatrixView& features, int threads) const {
  ClipTextModelImpl& m = *impl_;
  if (!m.visual_proj) {
    throw Error("CLIP text model " + m.path.string() + ": no visual_projection / vision_model.post_layernorm (image_embeds "
                "need the full CLIP checkpoint)");
  }
  if (features.rows <= 0 || features.cols != m.vision_width ||
      features.data.size() != static_cast<size_t>(features.rows * features.cols)) {
    throw Error("CLIP image_embeds: features [" + std::to_string(features.rows) + " x " + std::to_string(features.cols) +
                "] do not match the vision width " + std::to_string(m.vision_width));
  }
  ContextPtr ctx = vision::make_metadata_context(16, 16);
  ggml_cgraph* graph = ggml_new_graph_custom(ctx.get(), 16, false);
  ggml_tensor* in = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, features.cols, features.rows);
  ggml_set_input(in);
  ggml_tensor* h = vision::layer_norm(ctx.get(), in, m.post_w, m.post_b, m.vision_eps);
  ggml_tensor* result = vision::mark_output(ctx.get(), graph, vision::matmul(ctx.get(), m.visual_proj, h), "image_embeds");
  auto values = compute(m, graph, threads, [&] { ggml_backend_tensor_set(in, features.data.data(), 0, ggml_nbytes(in)); },
                        result, "image_embeds");
  return {std::move(values), features.rows, m.embed_dim};
}

}  // namespace vtprune::text
