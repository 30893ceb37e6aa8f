// llama.cpp mmproj GGUF files for LLaVA-1.5 (clip vision tower + `mlp` projector): the loader, and a
// writer of random-weight files with the exact layout of llama.cpp's legacy conversion (for tests and
// `make-test-model`).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "model_impl.h"

namespace vtprune::vision {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

class MmprojReader {
 public:
  explicit MmprojReader(const std::filesystem::path& path) : path_(path) {
    gguf_init_params params{};
    params.no_alloc = true;
    params.ctx = nullptr;
    gguf_.reset(gguf_init_from_file(path.c_str(), params));
    if (!gguf_) throw Error("mmproj " + path.string() + ": not a readable GGUF file");
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) throw Error("mmproj " + path.string() + ": cannot open");
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) throw Error("mmproj " + path.string() + ": cannot read (" + ec.message() + ")");
  }

  // A size key, bounded before any arithmetic uses it.
  int size(const char* name, int64_t max) const { return checked_size(u32(name), max, where() + ": metadata " + name); }
  int64_t tensor_count() const { return gguf_get_n_tensors(gguf_.get()); }

  std::string where() const { return "mmproj " + path_.string(); }

  int64_t key(const char* name, bool required = true) const {
    const int64_t id = gguf_find_key(gguf_.get(), name);
    if (id < 0 && required) throw Error(where() + ": missing metadata key " + name);
    return id;
  }
  uint32_t u32(const char* name) const {
    const int64_t id = key(name);
    const auto type = gguf_get_kv_type(gguf_.get(), id);
    if (type == GGUF_TYPE_UINT32) return gguf_get_val_u32(gguf_.get(), id);
    if (type == GGUF_TYPE_INT32 && gguf_get_val_i32(gguf_.get(), id) >= 0) return static_cast<uint32_t>(gguf_get_val_i32(gguf_.get(), id));
    throw Error(where() + ": metadata key " + name + " has type " + gguf_type_name(type) + ", expected u32");
  }
  float f32(const char* name) const {
    const int64_t id = key(name);
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32) throw Error(where() + ": metadata key " + name + " is not f32");
    return gguf_get_val_f32(gguf_.get(), id);
  }
  std::string str(const char* name) const {
    const int64_t id = key(name);
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_STRING) throw Error(where() + ": metadata key " + name + " is not a string");
    return gguf_get_val_str(gguf_.get(), id);
  }
  bool boolean(const char* name, bool fallback) const {
    const int64_t id = key(name, false);
    if (id < 0) return fallback;
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_BOOL) throw Error(where() + ": metadata key " + name + " is not a bool");
    return gguf_get_val_bool(gguf_.get(), id);
  }
  std::array<float, 3> f32x3(const char* name) const {
    const int64_t id = key(name);
    if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32 ||
        gguf_get_arr_n(gguf_.get(), id) != 3) {
      throw Error(where() + ": metadata key " + name + " is not an array of 3 f32");
    }
    std::array<float, 3> v{};
    std::memcpy(v.data(), gguf_get_arr_data(gguf_.get(), id), sizeof(v));
    return v;
  }

  bool has_tensor(const std::string& name) const { return gguf_find_tensor(gguf_.get(), name.c_str()) >= 0; }
  std::vector<int64_t> tensor_shape(const std::string& name) const {
    const int64_t id = gguf_find_tensor(gguf_.get(), name.c_str());
    if (id < 0) throw Error(where() + ": missing tensor " + name);
    const int64_t* ne = gguf_get_tensor_ne(gguf_.get(), id);
    std::vector<int64_t> shape(ne, ne + GGML_MAX_DIMS);
    while (shape.size() > 1 && shape.back() == 1) shape.pop_back();
    return shape;
  }

  // Declares tensor `name` with the expected ggml shape. Vectors and embeddings (as_f32) are stored as
  // F32 whatever the file holds (F32/F16/BF16); matrices keep the file's type.
  ggml_tensor* add(WeightBuilder& builder, const std::string& name, std::initializer_list<int64_t> ne, bool as_f32) {
    const int64_t id = gguf_find_tensor(gguf_.get(), name.c_str());
    if (id < 0) throw Error(where() + ": missing tensor " + name);
    std::vector<int64_t> expected(ne);
    while (expected.size() > 1 && expected.back() == 1) expected.pop_back();
    if (tensor_shape(name) != expected) {
      throw Error(where() + ": tensor " + name + " has shape " + shape_string(tensor_shape(name)) + ", expected " +
                  shape_string(expected));
    }
    const ggml_type type = gguf_get_tensor_type(gguf_.get(), id);
    const bool float_type = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
    if (as_f32 && !float_type) {
      throw Error(where() + ": tensor " + name + " has type " + ggml_type_name(type) + ", expected F32, F16 or BF16");
    }
    if (!as_f32 && !float_type && !ggml_is_quantized(type)) {
      throw Error(where() + ": tensor " + name + " has unsupported type " + ggml_type_name(type));
    }
    const ggml_type dst_type = as_f32 ? GGML_TYPE_F32 : type;
    const size_t offset = gguf_get_data_offset(gguf_.get()) + gguf_get_tensor_offset(gguf_.get(), id);
    const size_t file_bytes = gguf_get_tensor_size(gguf_.get(), id);
    if (offset > file_size_ || file_bytes > file_size_ - offset) {  // the GGUF parser does not check this without data
      throw Error(where() + ": tensor " + name + " (" + std::to_string(file_bytes) + " bytes at " + std::to_string(offset) +
                  ") lies beyond the end of the " + std::to_string(file_size_) + "-byte file (truncated?)");
    }
    return builder.add(name, dst_type, ne, [this, name, type, dst_type, offset, file_bytes](void* dst, size_t bytes) {
      std::vector<uint8_t> raw;
      void* target = dst;
      if (type != dst_type) {
        raw.resize(file_bytes);
        target = raw.data();
      } else if (file_bytes != bytes) {
        throw Error(where() + ": tensor " + name + " holds " + std::to_string(file_bytes) + " bytes, expected " +
                    std::to_string(bytes));
      }
      if (std::fseek(file_.get(), static_cast<long>(offset), SEEK_SET) != 0 ||
          std::fread(target, 1, file_bytes, file_.get()) != file_bytes) {
        throw Error(where() + ": tensor " + name + " could not be read (truncated file?)");
      }
      if (type != dst_type) convert_to_f32(type, raw.data(), static_cast<float*>(dst), bytes / sizeof(float));
    });
  }

 private:
  std::filesystem::path path_;
  GgufPtr gguf_;
  FilePtr file_;
  uint64_t file_size_ = 0;
};

}  // namespace

void load_mmproj_gguf(const std::filesystem::path& path, const MmprojOptions& options, ggml_backend_t backend,
                      ModelData& model) {
  MmprojReader r(path);
  const std::string arch = r.str("general.architecture");
  if (arch != "clip") throw Error(r.where() + ": general.architecture is \"" + arch + "\", expected \"clip\"");
  if (!r.boolean("clip.has_vision_encoder", true)) throw Error(r.where() + ": the file has no vision encoder");
  const std::string projector = r.key("clip.projector_type", false) >= 0 ? r.str("clip.projector_type") : "mlp";
  if (projector != "mlp") {
    throw Error(r.where() + ": projector type \"" + projector + "\" is not supported (LLaVA-1.5 `mlp` only)");
  }
  Hparams& hp = model.hp;
  hp.architecture = Architecture::Clip;
  hp.image_size = r.size("clip.vision.image_size", 1 << 14);
  hp.patch_size = r.size("clip.vision.patch_size", 1 << 10);
  hp.dim = r.size("clip.vision.embedding_length", 1 << 16);
  hp.ff = r.size("clip.vision.feed_forward_length", 1 << 20);
  hp.heads = r.size("clip.vision.attention.head_count", 1 << 10);
  hp.eps = r.f32("clip.vision.attention.layer_norm_epsilon");
  // Each block has 16 tensors: a block count the file cannot hold is rejected before anything is sized by it.
  hp.stored_layers = r.size("clip.vision.block_count", std::max<int64_t>(1, r.tensor_count() / 16));
  if (hp.patch_size <= 0 || hp.image_size % hp.patch_size != 0 || hp.heads <= 0 || hp.dim % hp.heads != 0 ||
      hp.stored_layers <= 0 || hp.ff <= 0) {
    throw Error(r.where() + ": inconsistent hyper-parameters (image " + std::to_string(hp.image_size) + ", patch " +
                std::to_string(hp.patch_size) + ", width " + std::to_string(hp.dim) + ", heads " +
                std::to_string(hp.heads) + ", blocks " + std::to_string(hp.stored_layers) + ")");
  }
  hp.original_depth = options.original_depth > 0 ? options.original_depth : hp.stored_layers + 1;
  if (hp.original_depth < hp.stored_layers) {
    throw Error(r.where() + ": original depth " + std::to_string(hp.original_depth) + " is less than the " +
                std::to_string(hp.stored_layers) + " stored blocks");
  }
  hp.feature_layer = hp.original_depth - 2;  // LLaVA-1.5: vision_feature_layer = -2
  if (hp.feature_layer >= hp.stored_layers || hp.feature_layer < 0) {
    throw Error(r.where() + ": the feature layer " + std::to_string(hp.feature_layer) + " is not stored (" +
                std::to_string(hp.stored_layers) + " blocks)");
  }
  hp.mtmd_compat = options.mtmd_compat;
  if (hp.mtmd_compat && hp.stored_layers < 2) throw Error(r.where() + ": mtmd_compat needs at least 2 blocks");
  hp.f16_attention = options.f16_attention || options.mtmd_compat;
  hp.exact_quick_gelu = !options.mtmd_compat;
  hp.projector_gelu_erf = !options.mtmd_compat;
  hp.preprocess.kind = Preprocess::Kind::LlavaPadSquare;
  hp.preprocess.image_size = hp.image_size;
  hp.preprocess.mean = r.f32x3("clip.vision.image_mean");
  hp.preprocess.std = r.f32x3("clip.vision.image_std");
  check_numerics(hp, r.where());

  const int64_t D = hp.dim, F = hp.ff, T = hp.tokens(), P = hp.patch_size;
  WeightBuilder builder(static_cast<size_t>(hp.stored_layers) * 20 + 16);
  Weights& w = model.weights;
  w.patch_w = r.add(builder, "v.patch_embd.weight", {P, P, 3, D}, false);
  if (ggml_is_quantized(w.patch_w->type)) {
    // im2col + matmul reshape the kernel to rows of 3*p*p, which quantised blocks cannot follow.
    throw Error(r.where() + ": tensor v.patch_embd.weight is " + ggml_type_name(w.patch_w->type) +
                ", expected F32, F16 or BF16");
  }
  if (r.has_tensor("v.patch_embd.bias")) w.patch_b = r.add(builder, "v.patch_embd.bias", {D}, true);
  w.cls = r.add(builder, "v.class_embd", {D}, true);
  w.pos = r.add(builder, "v.position_embd.weight", {D, T}, true);
  w.pre_ln_w = r.add(builder, "v.pre_ln.weight", {D}, true);
  w.pre_ln_b = r.add(builder, "v.pre_ln.bias", {D}, true);
  w.blocks.resize(hp.stored_layers);
  for (int il = 0; il < hp.stored_layers; ++il) {
    const std::string p = "v.blk." + std::to_string(il) + ".";
    BlockWeights& b = w.blocks[il];
    b.ln1_w = r.add(builder, p + "ln1.weight", {D}, true);
    b.ln1_b = r.add(builder, p + "ln1.bias", {D}, true);
    b.q_w = r.add(builder, p + "attn_q.weight", {D, D}, false);
    b.q_b = r.add(builder, p + "attn_q.bias", {D}, true);
    b.k_w = r.add(builder, p + "attn_k.weight", {D, D}, false);
    b.k_b = r.add(builder, p + "attn_k.bias", {D}, true);
    b.v_w = r.add(builder, p + "attn_v.weight", {D, D}, false);
    b.v_b = r.add(builder, p + "attn_v.bias", {D}, true);
    b.o_w = r.add(builder, p + "attn_out.weight", {D, D}, false);
    b.o_b = r.add(builder, p + "attn_out.bias", {D}, true);
    b.ln2_w = r.add(builder, p + "ln2.weight", {D}, true);
    b.ln2_b = r.add(builder, p + "ln2.bias", {D}, true);
    // The legacy converter names fc1 `ffn_down` and fc2 `ffn_up`; detect it by shape as clip.cpp does
    // (fc1 maps D -> F, so its ggml shape is [D, F]).
    const auto down = r.tensor_shape(p + "ffn_down.weight");
    const bool swapped = !down.empty() && down[0] == D && D != F;
    const std::string fc1 = swapped ? "ffn_down" : "ffn_up", fc2 = swapped ? "ffn_up" : "ffn_down";
    b.fc1_w = r.add(builder, p + fc1 + ".weight", {D, F}, false);
    b.fc1_b = r.add(builder, p + fc1 + ".bias", {F}, true);
    b.fc2_w = r.add(builder, p + fc2 + ".weight", {F, D}, false);
    b.fc2_b = r.add(builder, p + fc2 + ".bias", {D}, true);
  }
  const auto mm0 = r.tensor_shape("mm.0.weight");
  if (mm0.size() != 2 || mm0[0] != D) {
    throw Error(r.where() + ": tensor mm.0.weight has shape " + shape_string(mm0) + ", expected [" + std::to_string(D) +
                ", hidden]");
  }
  const int64_t hidden = checked_size(mm0[1], 1 << 20, r.where() + ": mm.0.weight hidden width");
  const auto mm2 = r.tensor_shape("mm.2.weight");
  if (mm2.size() != 2 || mm2[0] != hidden) {
    throw Error(r.where() + ": tensor mm.2.weight has shape " + shape_string(mm2) + ", expected [" +
                std::to_string(hidden) + ", n_embd_llm]");
  }
  hp.projector_dim = checked_size(mm2[1], 1 << 20, r.where() + ": mm.2.weight output width");
  w.mm0_w = r.add(builder, "mm.0.weight", {D, hidden}, false);
  w.mm0_b = r.add(builder, "mm.0.bias", {hidden}, true);
  w.mm2_w = r.add(builder, "mm.2.weight", {hidden, hp.projector_dim}, false);
  w.mm2_b = r.add(builder, "mm.2.bias", {hp.projector_dim}, true);
  builder.finish(backend, w);
  model.path = path;
}

// ---------------------------------------------------------------------------------------------------

WeightType parse_mmproj_weight_type(std::string_view name) {
  if (name == "f32") return WeightType::F32;
  if (name == "f16") return WeightType::F16;
  if (name == "bf16") return WeightType::BF16;
  if (name == "q8_0") return WeightType::Q8_0;
  throw Error("unknown mmproj weight type \"" + std::string(name) + "\" (f32 | f16 | bf16 | q8_0)");
}

void write_test_mmproj(const std::filesystem::path& path, const MmprojShape& s, uint64_t seed, WeightType weight_type) {
  if (s.n_layer < 1 || s.n_embd < 1 || s.n_ff < 1 || s.n_head < 1 || s.n_embd % s.n_head != 0 || s.patch_size < 1 ||
      s.image_size % s.patch_size != 0 || s.proj_out < 1) {
    throw Error("write_test_mmproj: invalid shape (layers " + std::to_string(s.n_layer) + ", width " +
                std::to_string(s.n_embd) + ", heads " + std::to_string(s.n_head) + ", image " +
                std::to_string(s.image_size) + ", patch " + std::to_string(s.patch_size) + ")");
  }
  const int64_t D = s.n_embd, F = s.n_ff, P = s.patch_size, G = s.image_size / s.patch_size, T = G * G + 1;
  const int64_t hidden = s.proj_out;  // LLaVA-1.5: mm.0 maps D -> n_embd_llm, mm.2 n_embd_llm -> n_embd_llm
  const ggml_type wtype = weight_type == WeightType::F16    ? GGML_TYPE_F16
                          : weight_type == WeightType::BF16 ? GGML_TYPE_BF16
                          : weight_type == WeightType::Q8_0 ? GGML_TYPE_Q8_0
                                                            : GGML_TYPE_F32;
  // The conv kernel stays F16 unless everything is F32, as llama.cpp's converters and quantiser keep it (its
  // clip graph's conv_2d takes only F16 / F32 kernels).
  const ggml_type patch_type = wtype == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
  if (ggml_is_quantized(wtype)) {
    const int64_t block = ggml_blck_size(wtype);
    for (const int64_t row : {D, F, hidden}) {
      if (row % block != 0) {
        throw Error("write_test_mmproj: " + std::string(ggml_type_name(wtype)) + " needs widths that are multiples of " +
                    std::to_string(block) + ", not " + std::to_string(row));
      }
    }
  }

  // Exact data size: matrices in the weight type, everything else F32 (plus alignment slack per tensor).
  size_t total = 0;
  const auto count = [&](int64_t n, ggml_type type) { total += ggml_row_size(type, n) + 64; };
  count(D + D * T + 2 * D, GGML_TYPE_F32);
  count(P * P * 3 * D, patch_type);
  for (int i = 0; i < s.n_layer; ++i) {
    count(4 * D * D + 2 * D * F, wtype);
    count(8 * D + F + D, GGML_TYPE_F32);
  }
  count(D * hidden + hidden * s.proj_out, wtype);
  count(hidden + s.proj_out, GGML_TYPE_F32);
  ggml_init_params params{};
  params.mem_size = total + ggml_tensor_overhead() * (static_cast<size_t>(s.n_layer) * 16 + 16);
  params.no_alloc = false;
  ContextPtr ctx(ggml_init(params));
  if (!ctx) throw Error("write_test_mmproj: cannot allocate " + std::to_string(params.mem_size) + " bytes");
  GgufPtr gguf(gguf_init_empty());

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values;
  // Weights ~ N(0, 1/fan_in) keep activations O(1) through the layers, so attention is not degenerate.
  const auto add = [&](const std::string& name, ggml_type type, std::initializer_list<int64_t> ne, float mean, float stddev) {
    int64_t dims[4] = {1, 1, 1, 1};
    int n = 0;
    for (int64_t d : ne) dims[n++] = d;
    ggml_tensor* t = ggml_new_tensor(ctx.get(), type, n, dims);
    ggml_set_name(t, name.c_str());
    values.resize(static_cast<size_t>(ggml_nelements(t)));
    for (float& v : values) v = mean + stddev * normal(rng);
    if (type == GGML_TYPE_F16) {
      ggml_fp32_to_fp16_row(values.data(), static_cast<ggml_fp16_t*>(t->data), ggml_nelements(t));
    } else if (type == GGML_TYPE_BF16) {
      ggml_fp32_to_bf16_row(values.data(), static_cast<ggml_bf16_t*>(t->data), ggml_nelements(t));
    } else if (ggml_is_quantized(type)) {
      ggml_quantize_chunk(type, values.data(), t->data, 0, ggml_nrows(t), t->ne[0], nullptr);
    } else {
      std::memcpy(t->data, values.data(), ggml_nbytes(t));
    }
    gguf_add_tensor(gguf.get(), t);
  };
  const float in_d = 1.0f / std::sqrt(static_cast<float>(D)), in_f = 1.0f / std::sqrt(static_cast<float>(F));
  add("v.class_embd", GGML_TYPE_F32, {D}, 0.0f, 0.5f);
  add("v.patch_embd.weight", patch_type, {P, P, 3, D}, 0.0f, 1.0f / std::sqrt(static_cast<float>(P * P * 3)));
  add("v.position_embd.weight", GGML_TYPE_F32, {D, T}, 0.0f, 0.5f);
  add("v.pre_ln.weight", GGML_TYPE_F32, {D}, 1.0f, 0.1f);
  add("v.pre_ln.bias", GGML_TYPE_F32, {D}, 0.0f, 0.1f);
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "v.blk." + std::to_string(il) + ".";
    for (const char* proj : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
      // q/k larger than 1/sqrt(D) so that the softmax is peaked enough to be informative.
      const float scale = (std::strcmp(proj, "attn_q") == 0 || std::strcmp(proj, "attn_k") == 0) ? 2.0f : 1.0f;
      add(p + proj + ".weight", wtype, {D, D}, 0.0f, scale * in_d);
      add(p + proj + ".bias", GGML_TYPE_F32, {D}, 0.0f, 0.1f);
    }
    add(p + "ln1.weight", GGML_TYPE_F32, {D}, 1.0f, 0.1f);
    add(p + "ln1.bias", GGML_TYPE_F32, {D}, 0.0f, 0.1f);
    add(p + "ln2.weight", GGML_TYPE_F32, {D}, 1.0f, 0.1f);
    add(p + "ln2.bias", GGML_TYPE_F32, {D}, 0.0f, 0.1f);
    // Legacy naming: fc1 is stored as ffn_down [D, F], fc2 as ffn_up [F, D].
    add(p + "ffn_down.weight", wtype, {D, F}, 0.0f, in_d);
    add(p + "ffn_down.bias", GGML_TYPE_F32, {F}, 0.0f, 0.1f);
    add(p + "ffn_up.weight", wtype, {F, D}, 0.0f, in_f);
    add(p + "ffn_up.bias", GGML_TYPE_F32, {D}, 0.0f, 0.1f);
  }
  add("mm.0.weight", wtype, {D, hidden}, 0.0f, in_d);
  add("mm.0.bias", GGML_TYPE_F32, {hidden}, 0.0f, 0.1f);
  add("mm.2.weight", wtype, {hidden, s.proj_out}, 0.0f, 1.0f / std::sqrt(static_cast<float>(hidden)));
  add("mm.2.bias", GGML_TYPE_F32, {s.proj_out}, 0.0f, 0.1f);

  gguf_context* g = gguf.get();
  gguf_set_val_str(g, "general.architecture", "clip");
  gguf_set_val_str(g, "general.name", "vtprune random LLaVA-1.5 mmproj");
  // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32
  gguf_set_val_u32(g, "general.file_type", wtype == GGML_TYPE_F16    ? 1
                                           : wtype == GGML_TYPE_Q8_0 ? 7
                                           : wtype == GGML_TYPE_BF16 ? 32
                                                                     : 0);
  gguf_set_val_bool(g, "clip.has_text_encoder", false);
  gguf_set_val_bool(g, "clip.has_vision_encoder", true);
  gguf_set_val_bool(g, "clip.has_llava_projector", true);
  gguf_set_val_str(g, "clip.projector_type", "mlp");
  gguf_set_val_bool(g, "clip.use_gelu", false);
  gguf_set_val_u32(g, "clip.vision.image_size", static_cast<uint32_t>(s.image_size));
  gguf_set_val_u32(g, "clip.vision.patch_size", static_cast<uint32_t>(s.patch_size));
  gguf_set_val_u32(g, "clip.vision.embedding_length", static_cast<uint32_t>(s.n_embd));
  gguf_set_val_u32(g, "clip.vision.feed_forward_length", static_cast<uint32_t>(s.n_ff));
  gguf_set_val_u32(g, "clip.vision.projection_dim", static_cast<uint32_t>(s.n_embd));
  gguf_set_val_u32(g, "clip.vision.attention.head_count", static_cast<uint32_t>(s.n_head));
  gguf_set_val_f32(g, "clip.vision.attention.layer_norm_epsilon", 1e-5f);
  gguf_set_val_u32(g, "clip.vision.block_count", static_cast<uint32_t>(s.n_layer));
  const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  const float stddev[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  gguf_set_arr_data(g, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, mean, 3);
  gguf_set_arr_data(g, "clip.vision.image_std", GGUF_TYPE_FLOAT32, stddev, 3);

  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (!gguf_write_to_file(g, path.c_str(), false)) throw Error("write_test_mmproj: cannot write " + path.string());
}

}  // namespace vtprune::vision
