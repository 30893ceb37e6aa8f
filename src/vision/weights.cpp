// Weight allocation shared by the loaders: tensors are declared first, then allocated in one backend
// buffer and filled.
#include <cmath>
#include <cstring>

#include "model_impl.h"

namespace vtprune::vision {

ContextPtr make_metadata_context(size_t max_tensors, size_t graph_nodes) {
  ggml_init_params params{};
  params.mem_size = ggml_tensor_overhead() * max_tensors +
                    (graph_nodes > 0 ? ggml_graph_overhead_custom(graph_nodes, false) : 0) + 1024;
  params.mem_buffer = nullptr;
  params.no_alloc = true;
  ContextPtr ctx(ggml_init(params));
  if (!ctx) throw Error("ggml_init failed for a metadata context of " + std::to_string(params.mem_size) + " bytes");
  return ctx;
}

WeightBuilder::WeightBuilder(size_t max_tensors) : ctx_(make_metadata_context(max_tensors)) {}

ggml_tensor* WeightBuilder::add(const std::string& name, ggml_type type, std::initializer_list<int64_t> ne, Fill fill) {
  int64_t dims[4] = {1, 1, 1, 1};
  int n = 0;
  for (int64_t d : ne) dims[n++] = d;
  ggml_tensor* t = ggml_new_tensor(ctx_.get(), type, n, dims);
  ggml_set_name(t, name.c_str());
  fills_.emplace_back(t, std::move(fill));
  return t;
}

void WeightBuilder::finish(ggml_backend_buffer_type_t type, Weights& weights) {
  BufferPtr buffer(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), type));
  if (!buffer) throw Error(std::string("could not allocate the weight buffer in ") + ggml_backend_buft_name(type));
  ggml_backend_buffer_set_usage(buffer.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  std::vector<uint8_t> staging;
  for (auto& [tensor, fill] : fills_) {
    const size_t bytes = ggml_nbytes(tensor);
    staging.resize(bytes);
    fill(staging.data(), bytes);
    ggml_backend_tensor_set(tensor, staging.data(), 0, bytes);
  }
  fills_.clear();
  weights.ctx = std::move(ctx_);
  weights.buffer = std::move(buffer);
}

void convert_to_f32(ggml_type src_type, const void* src, float* dst, size_t count) {
  switch (src_type) {
    case GGML_TYPE_F32:
      std::memcpy(dst, src, count * sizeof(float));
      return;
    case GGML_TYPE_F16:
      ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t*>(src), dst, static_cast<int64_t>(count));
      return;
    case GGML_TYPE_BF16:
      ggml_bf16_to_fp32_row(static_cast<const ggml_bf16_t*>(src), dst, static_cast<int64_t>(count));
      return;
    default:
      throw Error(std::string("cannot convert ") + ggml_type_name(src_type) + " to F32");
  }
}

int checked_size(int64_t value, int64_t max, const std::string& what) {
  if (value < 1 || value > max) {
    throw Error(what + " = " + std::to_string(value) + " is outside 1.." + std::to_string(max));
  }
  return static_cast<int>(value);
}

void check_numerics(const Hparams& hp, const std::string& where) {
  if (!std::isfinite(hp.eps) || hp.eps <= 0.0f) throw Error(where + ": layer-norm epsilon " + std::to_string(hp.eps) + " is not > 0");
  for (int c = 0; c < 3; ++c) {
    if (!std::isfinite(hp.preprocess.mean[c]) || !std::isfinite(hp.preprocess.std[c]) || hp.preprocess.std[c] <= 0.0f) {
      throw Error(where + ": image mean / std channel " + std::to_string(c) + " (" + std::to_string(hp.preprocess.mean[c]) +
                  ", " + std::to_string(hp.preprocess.std[c]) + ") must be finite with std > 0");
    }
  }
}

std::string shape_string(std::initializer_list<int64_t> ne) { return shape_string(std::vector<int64_t>(ne)); }

std::string shape_string(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace vtprune::vision
