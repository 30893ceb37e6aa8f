// The second half of a split timm classifier: blocks [first_block, depth) + final norm + head on a reduced
// sequence [CLS; kept tokens]. It mirrors vit.cpp's untapped block (flash attention with F32 K/V and F32
// accumulation, exact GELU), so with every token kept it reproduces the full forward's logits to float
// rounding. Kept separate from build_vit so the two can evolve independently (taps live only there).
#include <algorithm>
#include <cmath>

#include "model_impl.h"

namespace vtprune::vision {

namespace {

constexpr size_t kTailGraphNodes = 2048;

ggml_tensor* tail_layer_norm(ggml_context* ctx, ggml_tensor* x, ggml_tensor* w, ggml_tensor* b, float eps) {
  return ggml_add(ctx, ggml_mul(ctx, ggml_norm(ctx, x, eps), w), b);
}

// One pre-norm timm block on x = [D, T].
ggml_tensor* timm_block(ggml_context* ctx, const BlockWeights& b, const Hparams& hp, ggml_tensor* x) {
  const int64_t D = hp.dim, H = hp.heads, d_head = D / H, T = x->ne[1];
  const float kq_scale = 1.0f / std::sqrt(static_cast<float>(d_head));
  ggml_tensor* cur = tail_layer_norm(ctx, x, b.ln1_w, b.ln1_b, hp.eps);
  ggml_tensor* q = linear(ctx, cur, b.q_w, b.q_b);
  ggml_tensor* k = linear(ctx, cur, b.k_w, b.k_b);
  ggml_tensor* v = linear(ctx, cur, b.v_w, b.v_b);
  ggml_tensor* qh = ggml_permute(ctx, ggml_reshape_3d(ctx, q, d_head, H, T), 0, 2, 1, 3);
  ggml_tensor* kh = ggml_permute(ctx, ggml_reshape_3d(ctx, k, d_head, H, T), 0, 2, 1, 3);
  ggml_tensor* vh = ggml_permute(ctx, ggml_reshape_3d(ctx, v, d_head, H, T), 0, 2, 1, 3);
  // Contiguous per-head K/V, as vit.cpp: the CPU kernel reads strided views much more slowly.
  ggml_tensor* fa = ggml_flash_attn_ext(ctx, qh, ggml_cont(ctx, kh), ggml_cont(ctx, vh), nullptr, kq_scale, 0.0f, 0.0f);
  ggml_prec_set_acc(fa, GGML_PREC_F32);
  x = ggml_add(ctx, x, linear(ctx, ggml_reshape_2d(ctx, fa, D, T), b.o_w, b.o_b));
  cur = tail_layer_norm(ctx, x, b.ln2_w, b.ln2_b, hp.eps);
  cur = ggml_gelu_erf(ctx, linear(ctx, cur, b.fc1_w, b.fc1_b));
  return ggml_add(ctx, x, linear(ctx, cur, b.fc2_w, b.fc2_b));
}

}  // namespace

std::vector<float> VisionModel::classify_tokens(std::span<const float> cls, const MatrixView& tokens, int first_block,
                                                int threads) {
  const Hparams& hp = impl_->model->hp;
  const Weights& w = impl_->model->weights;
  const std::string where = "classify_tokens (" + impl_->model->path.string() + ")";
  check_threads(threads);
  if (hp.architecture != Architecture::Timm || !w.head_w || !w.norm_w) {
    throw Error(where + ": needs a timm classifier (final norm + head)");
  }
  if (first_block < 0 || first_block > hp.stored_layers) {
    throw Error(where + ": first_block " + std::to_string(first_block) + " is outside 0.." + std::to_string(hp.stored_layers));
  }
  if (cls.size() != static_cast<size_t>(hp.dim)) {
    throw Error(where + ": CLS row has " + std::to_string(cls.size()) + " values, the model width is " + std::to_string(hp.dim));
  }
  if (tokens.rows < 0 || (tokens.rows > 0 && tokens.cols != hp.dim) ||
      tokens.data.size() != static_cast<size_t>(tokens.rows * std::max<int64_t>(tokens.cols, 0))) {
    throw Error(where + ": tokens [" + std::to_string(tokens.rows) + " x " + std::to_string(tokens.cols) + "] with " +
                std::to_string(tokens.data.size()) + " values do not match the model width " + std::to_string(hp.dim));
  }
  const int64_t T = tokens.rows + 1;
  ContextPtr ctx = make_metadata_context(kTailGraphNodes, kTailGraphNodes);
  ggml_cgraph* graph = ggml_new_graph_custom(ctx.get(), kTailGraphNodes, false);
  ggml_tensor* in = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, hp.dim, T);
  ggml_set_name(in, "tail.input");
  ggml_set_input(in);
  ggml_tensor* x = in;
  for (int il = first_block; il < hp.stored_layers; ++il) x = timm_block(ctx.get(), w.blocks[static_cast<size_t>(il)], hp, x);
  ggml_tensor* cls_out = ggml_view_2d(ctx.get(), x, hp.dim, 1, x->nb[1], 0);
  cls_out = tail_layer_norm(ctx.get(), cls_out, w.norm_w, w.norm_b, hp.eps);
  ggml_tensor* logits = mark_output(ctx.get(), graph, linear(ctx.get(), cls_out, w.head_w, w.head_b), "tail.logits");

  if (!impl_->tail_allocator) {
    impl_->tail_allocator.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(impl_->backend.get())));
  }
  if (!ggml_gallocr_alloc_graph(impl_->tail_allocator.get(), graph)) throw Error(where + ": could not allocate the graph");
  ggml_backend_tensor_set(in, cls.data(), 0, cls.size() * sizeof(float));
  if (tokens.rows > 0) ggml_backend_tensor_set(in, tokens.data.data(), in->nb[1], tokens.data.size() * sizeof(float));
  ggml_backend_cpu_set_n_threads(impl_->backend.get(), threads);
  if (ggml_backend_graph_compute(impl_->backend.get(), graph) != GGML_STATUS_SUCCESS) {
    throw Error(where + ": graph compute failed");
  }
  return read_tensor(logits);
}

}  // namespace vtprune::vision
