// FLOP counts of each TTFT stage, from the GGUF files' own tensor shapes.
#include <memory>
#include <string>
#include <string_view>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "ggml.h"
#include "gguf.h"
#pragma GCC diagnostic pop

#include "vtprune/reduce.h"  // vtprune::Error
#include "vtprune_bench.h"

namespace vtprune::bench {
namespace {

struct GgufDeleter {
  void operator()(gguf_context* g) const { gguf_free(g); }
};
struct GgmlDeleter {
  void operator()(ggml_context* c) const { ggml_free(c); }
};

// Metadata + tensor shapes of a GGUF file (no tensor data is read).
class GgufShapes {
 public:
  explicit GgufShapes(const std::filesystem::path& path) : path_(path) {
    ggml_context* meta = nullptr;
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/&meta};
    gguf_.reset(gguf_init_from_file(path.c_str(), params));
    meta_.reset(meta);
    if (!gguf_ || !meta_) throw Error(path.string() + ": not a readable GGUF file");
  }

  int64_t u32(const std::string& key) const {
    const int64_t id = gguf_find_key(gguf_.get(), key.c_str());
    if (id < 0) throw Error(path_.string() + ": metadata key " + key + " is missing");
    switch (gguf_get_kv_type(gguf_.get(), id)) {
      case GGUF_TYPE_UINT32: return gguf_get_val_u32(gguf_.get(), id);
      case GGUF_TYPE_INT32: return gguf_get_val_i32(gguf_.get(), id);
      case GGUF_TYPE_UINT64: return static_cast<int64_t>(gguf_get_val_u64(gguf_.get(), id));
      default: throw Error(path_.string() + ": metadata key " + key + " is not an integer");
    }
  }
  std::string str(const std::string& key) const {
    const int64_t id = gguf_find_key(gguf_.get(), key.c_str());
    if (id < 0 || gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_STRING) {
      throw Error(path_.string() + ": metadata key " + key + " is missing or not a string");
    }
    return gguf_get_val_str(gguf_.get(), id);
  }
  const ggml_tensor* tensor(const std::string& name) const {
    const ggml_tensor* t = ggml_get_tensor(meta_.get(), name.c_str());
    if (!t) throw Error(path_.string() + ": tensor " + name + " is missing");
    return t;
  }
  // Elements of every 2-D+ tensor whose name starts with `prefix` and ends with ".weight" (matrices only:
  // norms and biases cost no multiply-adds worth counting).
  int64_t matrix_params(std::string_view prefix) const {
    int64_t total = 0;
    for (ggml_tensor* t = ggml_get_first_tensor(meta_.get()); t; t = ggml_get_next_tensor(meta_.get(), t)) {
      const std::string_view name = ggml_get_name(t);
      if (name.starts_with(prefix) && name.ends_with(".weight") && t->ne[1] > 1) total += ggml_nelements(t);
    }
    return total;
  }

 private:
  std::filesystem::path path_;
  std::unique_ptr<gguf_context, GgufDeleter> gguf_;
  std::unique_ptr<ggml_context, GgmlDeleter> meta_;
};

}  // namespace

double FlopModel::vit_flops(int layers_run) const {
  const double T = static_cast<double>(vit_tokens), D = static_cast<double>(vit_dim);
  const double patch = 2.0 * static_cast<double>(vit_patches) * static_cast<double>(patch_embd_params);
  // per block: every weight once per token, plus QK^T and AV over all T x T pairs (bidirectional)
  const double block = 2.0 * T * static_cast<double>(vit_block_params) + 4.0 * T * T * D;
  return patch + layers_run * block;
}

double FlopModel::projector_flops(int64_t rows) const {
  return 2.0 * static_cast<double>(rows) * static_cast<double>(projector_params);
}

double FlopModel::prefill_flops(int64_t n_positions) const {
  const double n = static_cast<double>(n_positions);
  const double weights = 2.0 * static_cast<double>(llm_block_params) * n;
  // causal: position i attends to i + 1 keys; QK^T and AV each 2 x head_dim x heads per pair, per layer
  const double attention = static_cast<double>(llm_layers) * 2.0 * 2.0 * static_cast<double>(llm_head_dim) *
                           static_cast<double>(llm_heads) * n * (n + 1.0) / 2.0;
  const double head = 2.0 * static_cast<double>(llm_embd) * static_cast<double>(llm_vocab);  // last position only
  return weights + attention + head;
}

FlopModel read_flop_model(const std::filesystem::path& llm_gguf, const std::filesystem::path& mmproj_gguf) {
  FlopModel m;
  {
    const GgufShapes v(mmproj_gguf);
    const int64_t image = v.u32("clip.vision.image_size"), patch = v.u32("clip.vision.patch_size");
    m.vit_dim = v.u32("clip.vision.embedding_length");
    m.vit_stored_layers = v.u32("clip.vision.block_count");
    m.vit_patches = (image / patch) * (image / patch);
    m.vit_tokens = m.vit_patches + 1;  // + CLS
    m.vit_block_params = v.matrix_params("v.blk.") / std::max<int64_t>(1, m.vit_stored_layers);
    m.patch_embd_params = ggml_nelements(v.tensor("v.patch_embd.weight"));
    m.projector_params = v.matrix_params("mm.");
  }
  {
    const GgufShapes l(llm_gguf);
    const std::string arch = l.str("general.architecture");
    m.llm_layers = l.u32(arch + ".block_count");
    m.llm_embd = l.u32(arch + ".embedding_length");
    m.llm_heads = l.u32(arch + ".attention.head_count");
    m.llm_head_dim = m.llm_embd / std::max<int64_t>(1, m.llm_heads);
    m.llm_vocab = l.tensor("token_embd.weight")->ne[1];
    m.llm_block_params = l.matrix_params("blk.");
  }
  return m;
}

}  // namespace vtprune::bench
