// The second half of a split timm classifier: blocks [first_block, depth) + final norm + head on a reduced
// sequence [CLS; kept tokens]. Its block is built from the same helpers as build_vit's untapped block
// (fused_attention, mlp_residual), so with every token kept it reproduces the full forward's logits to float
// rounding.
#include <algorithm>
#include <cmath>

#include "model_impl.h"

namespace vtprune::vision {

namespace {

constexpr size_t kTailGraphNodes = 2048;

// One pre-norm timm block on x = [D, T]: the untapped block of build_vit, from the same helpers.
ggml_tensor* timm_block(ggml_context* ctx, const BlockWeights& b, const Hparams& hp, ggml_tensor* x) {
  ggml_tensor* cur = layer_norm(ctx, x, b.ln1_w, b.ln1_b, hp.eps);
  ggml_tensor* attn = fused_attention(ctx, hp, linear(ctx, cur, b.q_w, b.q_b), linear(ctx, cur, b.k_w, b.k_b),
                                      linear(ctx, cur, b.v_w, b.v_b));
  x = ggml_add(ctx, x, linear(ctx, attn, b.o_w, b.o_b));
  return mlp_residual(ctx, hp, b, x);
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
  cls_out = layer_norm(ctx.get(), cls_out, w.norm_w, w.norm_b, hp.eps);
  ggml_tensor* logits = mark_output(ctx.get(), graph, linear(ctx.get(), cls_out, w.head_w, w.head_b), "tail.logits");

  impl_->compute->run(graph, threads, [&] {
    ggml_backend_tensor_set(in, cls.data(), 0, cls.size() * sizeof(float));
    if (tokens.rows > 0) ggml_backend_tensor_set(in, tokens.data.data(), in->nb[1], tokens.data.size() * sizeof(float));
  }, where);
  return read_tensor(logits);
}

}  // namespace vtprune::vision
