// The LLaVA-1.5 `mlp` projector (mm.0 -> GELU -> mm.2), as a node builder for the encoder graph and as a
// separate small graph run on the tokens a reduction kept (any count).
#include "model_impl.h"

namespace vtprune::vision {

ggml_tensor* build_projector(ggml_context* ctx, const Weights& w, const Hparams& hp, ggml_tensor* x) {
  x = linear(ctx, x, w.mm0_w, w.mm0_b);
  // LLaVA uses nn.GELU() (exact erf); llama.cpp's graph uses the tanh approximation (mtmd_compat).
  x = hp.projector_gelu_erf ? ggml_gelu_erf(ctx, x) : ggml_gelu(ctx, x);
  return linear(ctx, x, w.mm2_w, w.mm2_b);
}

std::vector<float> VisionModel::project(const MatrixView& tokens, int threads) {
  const Hparams& hp = impl_->model->hp;
  const Weights& w = impl_->model->weights;
  check_threads(threads);
  if (!w.mm0_w) throw Error("model " + impl_->model->path.string() + " has no projector");
  if (tokens.rows <= 0 || tokens.cols != hp.dim || tokens.data.size() != static_cast<size_t>(tokens.rows * tokens.cols)) {
    throw Error("projector: tokens [" + std::to_string(tokens.rows) + " x " + std::to_string(tokens.cols) +
                "] do not match the model width " + std::to_string(hp.dim));
  }
  // A small separate graph, sized by the kept tokens only.
  ContextPtr ctx = make_metadata_context(64, 64);
  ggml_cgraph* graph = ggml_new_graph_custom(ctx.get(), 64, false);
  ggml_tensor* in = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, hp.dim, tokens.rows);
  ggml_set_input(in);
  ggml_tensor* out = mark_output(ctx.get(), graph, build_projector(ctx.get(), w, hp, in), "projected");
  impl_->compute->run(graph, threads, [&] { ggml_backend_tensor_set(in, tokens.data.data(), 0, ggml_nbytes(in)); },
                      "projector (" + impl_->model->path.string() + ")");
  return read_tensor(out);
}


}  // namespace vtprune::vision
