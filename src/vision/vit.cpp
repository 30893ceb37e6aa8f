// The ggml graph of a pre-norm ViT (timm ViT/DeiT, CLIP vision tower) with attention taps, and the
// VisionModel that owns its weights and its Compute (device + CPU under ggml's scheduler).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "model_impl.h"

namespace vtprune::vision {

namespace {



struct TapNodes {
  int layer = -1;
  ggml_tensor *received = nullptr, *cls_attention = nullptr, *attention = nullptr, *keys = nullptr,
              *cls_query = nullptr;
};

struct GraphNodes {
  ggml_tensor* pixels = nullptr;
  ggml_tensor* features = nullptr;
  ggml_tensor* cls_features = nullptr;
  ggml_tensor* projected = nullptr;
  ggml_tensor* logits = nullptr;
  std::vector<TapNodes> taps;
};

GraphNodes build_vit(ggml_context* ctx, ggml_cgraph* graph, const ModelData& model, const Needs& needs,
                     const EncodeOptions& options) {
  const Hparams& hp = model.hp;
  const Weights& w = model.weights;
  const int64_t D = hp.dim, H = hp.heads, d_head = D / H, N = hp.patches(), T = hp.tokens();
  const int G = hp.grid();
  // The CLS token's sequence position: first (HF/timm) or last (llama.cpp's graph, mtmd_compat).
  const int64_t cls_pos = hp.mtmd_compat ? T - 1 : 0;
  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(d_head));

  // Which blocks to run: through the feature layer, and further only for taps or the classifier.
  const int feature_block = options.stop_after_layer >= 0 ? options.stop_after_layer
                            : hp.mtmd_compat               ? hp.stored_layers - 2
                                                           : hp.feature_layer;
  int last_block = feature_block;
  for (const auto& tap : needs.taps) last_block = std::max(last_block, tap.layer);
  const bool want_logits = options.logits && w.head_w != nullptr;
  if (want_logits) last_block = hp.stored_layers - 1;

  GraphNodes nodes;
  nodes.pixels = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, hp.image_size, hp.image_size, 3);
  ggml_set_name(nodes.pixels, "pixels");
  ggml_set_input(nodes.pixels);

  // Patch embedding -> [D, N], patches row-major.
  ggml_tensor* x = nullptr;
  if (hp.mtmd_compat) {
    // llama.cpp's build_inp: ggml_conv_2d, whose im2col rounds the pixels to F16.
    // ggml_conv_2d's im2col takes the kernel's type, and the CPU matmul takes only F32 / F16 activations:
    // a BF16 kernel (convert_hf_to_gguf --outtype bf16) would abort there, so it is cast to F16 (exact for
    // BF16 values in F16's range).
    ggml_tensor* kernel = w.patch_w->type == GGML_TYPE_F16 || w.patch_w->type == GGML_TYPE_F32
                              ? w.patch_w
                              : ggml_cast(ctx, w.patch_w, GGML_TYPE_F16);
    x = ggml_conv_2d(ctx, kernel, nodes.pixels, hp.patch_size, hp.patch_size, 0, 0, 1, 1);  // [G, G, D]
    x = ggml_cont(ctx, ggml_transpose(ctx, ggml_reshape_2d(ctx, x, G * G, D)));
  } else {
    // im2col in F32 (ggml_conv_2d would round pixels to F16: ~1e-3 off a float64 reference), then one
    // matmul: [3*p*p, G*G] patches times the [3*p*p, D] kernel.
    ggml_tensor* cols = ggml_im2col(ctx, w.patch_w, nodes.pixels, hp.patch_size, hp.patch_size, 0, 0, 1, 1, true,
                                    GGML_TYPE_F32);  // [3*p*p, G, G]
    cols = ggml_reshape_2d(ctx, cols, cols->ne[0], G * G);
    ggml_tensor* kernel = ggml_reshape_2d(ctx, w.patch_w, cols->ne[0], D);
    x = matmul(ctx, kernel, cols);  // [D, N]
  }
  if (w.patch_b) x = ggml_add(ctx, x, w.patch_b);
  ggml_tensor* cls = ggml_reshape_2d(ctx, w.cls, D, 1);
  x = hp.mtmd_compat ? ggml_concat(ctx, x, cls, 1) : ggml_concat(ctx, cls, x, 1);
  x = ggml_add(ctx, x, w.pos);
  if (w.pre_ln_w) x = layer_norm(ctx, x, w.pre_ln_w, w.pre_ln_b, hp.eps);

  for (int il = 0; il <= last_block; ++il) {
    const BlockWeights& b = w.blocks[il];
    const TapRequest* tap = needs.find(il);
    ggml_tensor* cur = layer_norm(ctx, x, b.ln1_w, b.ln1_b, hp.eps);
    ggml_tensor* q = linear(ctx, cur, b.q_w, b.q_b);  // [D, T]
    ggml_tensor* k = linear(ctx, cur, b.k_w, b.k_b);
    ggml_tensor* v = linear(ctx, cur, b.v_w, b.v_b);
    TapNodes tap_nodes;
    tap_nodes.layer = il;
    if (tap && tap->keys) tap_nodes.keys = mark_output(ctx, graph, k, "tap.keys");
    if (tap && tap->cls_query) {
      tap_nodes.cls_query = mark_output(ctx, graph, ggml_view_1d(ctx, q, D, cls_pos * q->nb[1]), "tap.cls_query");
    }
    const bool materialise = tap && (tap->received || tap->cls_attention || tap->attention);
    ggml_tensor* attn_out = nullptr;
    if (materialise) {
      // Heads [D, T] -> [d_head, H, T] -> [d_head, T, H], as contiguous copies: on permuted views the CPU
      // mul_mat falls back to one dot product per element instead of its tiled GEMM (profile: 2.4% of the
      // encode per tapped layer).
      const auto heads = [&](ggml_tensor* t) {
        return ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, t, d_head, H, T), 0, 2, 1, 3));
      };
      ggml_tensor* kq = matmul(ctx, heads(k), heads(q));  // [T_k, T_q, H]
      ggml_tensor* attn = ggml_soft_max_ext(ctx, kq, nullptr, kq_scale, 0.0f);
      if (tap->attention) tap_nodes.attention = mark_output(ctx, graph, attn, "tap.attention");  // [H][T_q][T_k]
      if (tap->received) {
        // mean over heads and queries of attn[h, q, k] = (1 / (T*H)) * attn[T_k, T*H] . ones[T*H]: one outer
        // product with a ones row sums over (q, h) without transposing the T x T x H matrix.
        ggml_tensor* rows = ggml_reshape_2d(ctx, attn, T, T * H);  // [T_k, T*H]
        ggml_tensor* ones = ggml_fill(ctx, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, 1, T * H), 1.0f);  // [1, T*H]
        ggml_tensor* sum = ggml_out_prod(ctx, rows, ones);  // [T_k, 1]
        tap_nodes.received = mark_output(ctx, graph, ggml_scale(ctx, sum, 1.0f / static_cast<float>(T * H)), "tap.received");
      }
      if (tap->cls_attention) {
        ggml_tensor* cls_rows = ggml_view_2d(ctx, attn, T, H, attn->nb[2], cls_pos * attn->nb[1]);  // [T_k, H]
        ggml_tensor* by_key = ggml_cont(ctx, ggml_transpose(ctx, ggml_cont(ctx, cls_rows)));      // [H, T_k]
        tap_nodes.cls_attention = mark_output(ctx, graph, ggml_mean(ctx, by_key), "tap.cls_attention");
      }
      ggml_tensor* vt = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_3d(ctx, v, d_head, H, T), 1, 2, 0, 3));  // [T, d, H]
      ggml_tensor* kqv = matmul(ctx, vt, attn);                                                            // [d, T_q, H]
      attn_out = ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), D, T);
    } else {
      attn_out = fused_attention(ctx, hp, q, k, v);
    }
    if (tap) nodes.taps.push_back(tap_nodes);
    x = ggml_add(ctx, x, linear(ctx, attn_out, b.o_w, b.o_b));
    x = mlp_residual(ctx, hp, b, x);

    if (il == feature_block) {
      // timm: features are forward_features' output (final norm applied); CLIP/LLaVA: the raw block output.
      // A partial forward (stop_after_layer) hands over the raw hidden states: the norm belongs to the head.
      ggml_tensor* feat = (hp.architecture == Architecture::Timm && w.norm_w && options.stop_after_layer < 0)
                              ? layer_norm(ctx, x, w.norm_w, w.norm_b, hp.eps)
                              : x;
      // Patches: rows 1..T-1 (CLS first). mtmd_compat: rows 1..T-1 as well, exactly what llama.cpp keeps.
      ggml_tensor* patches = ggml_view_2d(ctx, feat, D, N, feat->nb[1], feat->nb[1]);
      nodes.features = mark_output(ctx, graph, patches, "features");
      if (needs.cls_features) {
        nodes.cls_features = mark_output(ctx, graph, ggml_view_1d(ctx, feat, D, cls_pos * feat->nb[1]), "cls_features");
      }
      if (needs.projected && w.mm0_w) {
        nodes.projected = mark_output(ctx, graph, build_projector(ctx, w, hp, nodes.features), "projected");
      }
    }
  }
  if (want_logits) {
    ggml_tensor* cls_out = ggml_view_2d(ctx, x, D, 1, x->nb[1], cls_pos * x->nb[1]);
    cls_out = layer_norm(ctx, cls_out, w.norm_w, w.norm_b, hp.eps);
    nodes.logits = mark_output(ctx, graph, linear(ctx, cls_out, w.head_w, w.head_b), "logits");
  }
  return nodes;
}

void validate_needs(const Hparams& hp, const Needs& needs, const std::filesystem::path& path) {
  for (const auto& tap : needs.taps) {
    if (tap.layer < 0 || tap.layer >= hp.original_depth) {
      throw Error("encoder " + path.string() + ": tap on layer " + std::to_string(tap.layer) + " is outside 0.." +
                  std::to_string(hp.original_depth - 1));
    }
    if (tap.layer >= hp.stored_layers) {
      throw Error("encoder " + path.string() + ": layer " + std::to_string(tap.layer) + " is not stored in this file (" +
                  std::to_string(hp.stored_layers) + " blocks; llama.cpp's LLaVA conversion drops the last layer). "
                  "Use a Hugging Face safetensors vision tower, or a method option that taps a stored layer");
    }
    if (hp.mtmd_compat) {
      throw Error("encoder " + path.string() + ": taps are not available in mtmd_compat mode (its sequence order "
                  "is llama.cpp's, not the CLS-first layout methods expect)");
    }
  }
}

}  // namespace

ggml_tensor* layer_norm(ggml_context* ctx, ggml_tensor* x, ggml_tensor* w, ggml_tensor* b, float eps) {
  x = ggml_norm(ctx, x, eps);
  x = ggml_mul(ctx, x, w);
  return ggml_add(ctx, x, b);
}

ggml_tensor* fused_attention(ggml_context* ctx, const Hparams& hp, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v) {
  const int64_t D = hp.dim, H = hp.heads, d_head = D / H, T = q->ne[1];
  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(d_head));
  // Heads: [D, T] -> [d_head, H, T] -> [d_head, T, H].
  const auto heads = [&](ggml_tensor* t) { return ggml_permute(ctx, ggml_reshape_3d(ctx, t, d_head, H, T), 0, 2, 1, 3); };
  // F32 K/V keeps this path within float rounding of the softmax (tapped) path; llama.cpp's clip graph casts
  // them to F16 (mtmd_compat and f16_attention do the same). Made contiguous per head: as permuted views every
  // 64-float K/V row sits D floats from the next, and the CPU kernel re-packs all of K and V for each query
  // tile, so the strided reads (one page per row) made attention ~1.5x slower.
  const auto kv = [&](ggml_tensor* t) { return hp.f16_attention ? ggml_cast(ctx, heads(t), GGML_TYPE_F16) : ggml_cont(ctx, heads(t)); };
  ggml_tensor* fa = ggml_flash_attn_ext(ctx, heads(q), kv(k), kv(v), nullptr, kq_scale, 0.0f, 0.0f);
  ggml_prec_set_acc(fa, GGML_PREC_F32);
  return ggml_reshape_2d(ctx, fa, D, T);  // the result is [d_head, H, T]
}

ggml_tensor* mlp_residual(ggml_context* ctx, const Hparams& hp, const BlockWeights& b, ggml_tensor* x) {
  ggml_tensor* cur = linear(ctx, layer_norm(ctx, x, b.ln2_w, b.ln2_b, hp.eps), b.fc1_w, b.fc1_b);
  if (hp.architecture == Architecture::Timm || hp.ffn_gelu_erf) {
    cur = ggml_gelu_erf(ctx, cur);
  } else if (hp.exact_quick_gelu) {
    // x * sigmoid(1.702 x) == silu(1.702 x) / 1.702: ggml's silu is SIMD, its sigmoid a scalar expf loop
    // (plus a separate mul): same values to float rounding, a fraction of the time.
    cur = ggml_scale(ctx, ggml_silu(ctx, ggml_scale(ctx, cur, 1.702f)), 1.0f / 1.702f);
  } else {
    cur = ggml_gelu_quick(ctx, cur);
  }
  return ggml_add(ctx, x, linear(ctx, cur, b.fc2_w, b.fc2_b));
}

ggml_tensor* matmul(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b) {
  ggml_tensor* out = ggml_mul_mat(ctx, a, b);
  ggml_prec_set_acc(out, GGML_PREC_F32);
  return out;
}

ggml_tensor* linear(ggml_context* ctx, ggml_tensor* x, ggml_tensor* w, ggml_tensor* b) {
  x = matmul(ctx, w, x);
  return b ? ggml_add(ctx, x, b) : x;
}

ggml_tensor* mark_output(ggml_context* ctx, ggml_cgraph* graph, ggml_tensor* t, const char* name) {
  t = ggml_cont(ctx, t);
  ggml_set_name(t, name);
  ggml_set_output(t);
  ggml_build_forward_expand(graph, t);
  return t;
}

std::vector<float> read_tensor(const ggml_tensor* t) {
  std::vector<float> out(static_cast<size_t>(ggml_nelements(t)));
  ggml_backend_tensor_get(t, out.data(), 0, ggml_nbytes(t));
  return out;
}

void check_threads(int threads) {
  if (threads < 1 || threads > 512) throw Error("threads must be in 1..512, got " + std::to_string(threads));
}

EncoderOutput EncoderResult::view() const {
  EncoderOutput out;
  out.info = info;
  const int64_t n = info.grid.size();
  if (!features.empty()) out.features = MatrixView{features, n, dim};
  out.cls_features = cls_features;
  if (!projected.empty()) out.projected = MatrixView{projected, n, projected_dim};
  if (projected_features) out.projected = out.features;
  for (const auto& t : taps) {
    LayerTap tap;
    tap.layer = t.layer;
    tap.received = t.received;
    tap.cls_attention = t.cls_attention;
    tap.attention = t.attention;
    if (!t.keys.empty()) tap.keys = MatrixView{t.keys, static_cast<int64_t>(t.keys.size()) / dim, dim};
    tap.cls_query = t.cls_query;
    out.taps.push_back(tap);
  }
  return out;
}

VisionModel::VisionModel(std::unique_ptr<VisionModelImpl> impl) : impl_(std::move(impl)) {}
VisionModel::VisionModel(VisionModel&&) noexcept = default;
VisionModel& VisionModel::operator=(VisionModel&&) noexcept = default;
VisionModel::~VisionModel() = default;

void VisionModel::check(const Needs& needs) const { validate_needs(impl_->model->hp, needs, impl_->model->path); }

VisionModel VisionModel::share() const {
  auto impl = std::make_unique<VisionModelImpl>();
  // Another backend on the same device computes with the weights already in that device's memory.
  impl->compute = std::make_unique<Compute>(impl_->compute->choice(), kGraphNodes);
  impl->model = impl_->model;
  return VisionModel(std::move(impl));
}

VisionModel VisionModel::from_safetensors_timm(const std::filesystem::path& path, const TimmOptions& options) {
  auto impl = std::make_unique<VisionModelImpl>();
  impl->compute = std::make_unique<Compute>(options.device, kGraphNodes);
  auto model = std::make_shared<ModelData>();
  load_timm_safetensors(path, impl->compute->weight_buffer_type(), *model);
  impl->model = std::move(model);
  return VisionModel(std::move(impl));
}

VisionModel VisionModel::from_safetensors_clip(const std::filesystem::path& path, const ClipOptions& options) {
  auto impl = std::make_unique<VisionModelImpl>();
  impl->compute = std::make_unique<Compute>(options.device, kGraphNodes);
  auto model = std::make_shared<ModelData>();
  load_clip_safetensors(path, options, impl->compute->weight_buffer_type(), *model);
  impl->model = std::move(model);
  return VisionModel(std::move(impl));
}

VisionModel VisionModel::from_mmproj(const std::filesystem::path& path, const MmprojOptions& options) {
  auto impl = std::make_unique<VisionModelImpl>();
  impl->compute = std::make_unique<Compute>(options.device, kGraphNodes);
  auto model = std::make_shared<ModelData>();
  load_mmproj_gguf(path, options, impl->compute->weight_buffer_type(), *model);
  impl->model = std::move(model);
  return VisionModel(std::move(impl));
}

Architecture VisionModel::architecture() const { return impl_->model->hp.architecture; }
const Preprocess& VisionModel::preprocess_recipe() const { return impl_->model->hp.preprocess; }
int VisionModel::stored_layers() const { return impl_->model->hp.stored_layers; }
int VisionModel::dim() const { return impl_->model->hp.dim; }
int VisionModel::num_classes() const { return impl_->model->hp.num_classes; }
int VisionModel::projector_dim() const { return impl_->model->hp.projector_dim; }
std::span<const float> VisionModel::image_newline() const { return impl_->model->image_newline; }
const std::filesystem::path& VisionModel::path() const { return impl_->model->path; }
std::string VisionModel::device_name() const { return impl_->compute->device_name(); }

EncoderInfo VisionModel::info() const {
  const Hparams& hp = impl_->model->hp;
  EncoderInfo info;
  info.grid = Grid{hp.grid(), hp.grid()};
  info.has_cls = true;
  info.heads = hp.heads;
  info.num_layers = hp.original_depth;
  info.feature_layer = hp.feature_layer;
  return info;
}

EncoderResult VisionModel::encode(const Image& image, const Needs& needs, const EncodeOptions& options) {
  const Hparams& hp = impl_->model->hp;
  check_threads(options.threads);
  if (image.width != hp.image_size || image.height != hp.image_size ||
      image.data.size() != static_cast<size_t>(3) * image.width * image.height) {
    throw Error("encoder " + impl_->model->path.string() + ": image is " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " with " + std::to_string(image.data.size()) + " values, expected 3x" +
                std::to_string(hp.image_size) + "x" + std::to_string(hp.image_size));
  }
  check(needs);
  if (options.stop_after_layer >= hp.stored_layers || (options.stop_after_layer >= 0 && hp.mtmd_compat)) {
    throw Error("encoder " + impl_->model->path.string() + ": stop_after_layer " + std::to_string(options.stop_after_layer) +
                (hp.mtmd_compat ? " is not available in mtmd_compat mode" : " is outside the " + std::to_string(hp.stored_layers) + " stored blocks"));
  }
  if (needs.projected && !impl_->model->weights.mm0_w) {
    throw Error("encoder " + impl_->model->path.string() + ": projected embeddings asked for, but the model has no projector");
  }

  ContextPtr ctx = make_metadata_context(kGraphNodes, kGraphNodes);
  ggml_cgraph* graph = ggml_new_graph_custom(ctx.get(), kGraphNodes, false);
  GraphNodes nodes = build_vit(ctx.get(), graph, *impl_->model, needs, options);

  const auto start = std::chrono::steady_clock::now();
  impl_->compute->run(graph, options.threads,
                      [&] { ggml_backend_tensor_set(nodes.pixels, image.data.data(), 0, ggml_nbytes(nodes.pixels)); },
                      "encoder " + impl_->model->path.string());
  const auto stop = std::chrono::steady_clock::now();

  EncoderResult result;
  result.info = info();
  if (options.stop_after_layer >= 0) result.info.feature_layer = options.stop_after_layer;
  result.dim = hp.dim;
  result.encode_ms = std::chrono::duration<double, std::milli>(stop - start).count();
  result.features = read_tensor(nodes.features);
  if (nodes.cls_features) result.cls_features = read_tensor(nodes.cls_features);
  if (nodes.projected) {
    result.projected = read_tensor(nodes.projected);
    result.projected_dim = hp.projector_dim;
  }
  if (nodes.logits) result.logits = read_tensor(nodes.logits);
  for (const auto& t : nodes.taps) {
    EncoderResult::Tap tap;
    tap.layer = t.layer;
    if (t.received) tap.received = read_tensor(t.received);
    if (t.cls_attention) tap.cls_attention = read_tensor(t.cls_attention);
    if (t.attention) tap.attention = read_tensor(t.attention);
    if (t.keys) tap.keys = read_tensor(t.keys);
    if (t.cls_query) tap.cls_query = read_tensor(t.cls_query);
    result.taps.push_back(std::move(tap));
  }
  return result;
}

std::vector<int> top_k_classes(std::span<const float> logits, int k) {
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  k = std::clamp(k, 0, static_cast<int>(order.size()));
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order.resize(k);
  return order;
}

}  // namespace vtprune::vision
