// llama.cpp mmproj GGUF files for LLaVA-1.5 (clip vision tower + `mlp` projector): the loader, and a
// writer of random-weight files with the exact layout of llama.cpp's legacy conversion (for tests and
// `make-test-model`); and a writer of random Qwen2.5-VL mmproj files (`qwen2.5vl_merger`) in the layout of
// llama.cpp's converter.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "../io/gguf_stream_writer.h"
#include "model_impl.h"
#include "vtprune/gguf_file.h"

namespace vtprune::vision {
namespace {

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

// The mmproj's header through the project's one checked GGUF reader (io::GgufFile: every tensor's data inside
// the file, typed keys, bounded sizes), plus the file handle the tensor data is read from.
class MmprojReader {
 public:
  explicit MmprojReader(const std::filesystem::path& path) : gguf_(path, "mmproj") {
    file_.reset(std::fopen(path.c_str(), "rb"));
    if (!file_) throw Error(where() + ": cannot open");
  }

  // A size key, bounded before any arithmetic uses it.
  int size(const char* name, int64_t max) const { return checked_size(gguf_.u32(name), max, where() + ": metadata " + name); }
  int64_t tensor_count() const { return gguf_.tensor_count(); }
  std::string where() const { return gguf_.where(); }
  bool has(const char* name) const { return gguf_.has(name); }
  float f32(const char* name) const { return gguf_.f32(name); }
  std::string str(const char* name) const { return gguf_.str(name); }
  bool boolean(const char* name, bool fallback) const { return gguf_.boolean(name, fallback); }
  std::vector<int64_t> ints(const char* name) const { return gguf_.ints(name); }
  std::array<float, 3> f32x3(const char* name) const {
    const std::vector<float> v = gguf_.floats(name);
    if (!gguf_.has(name)) throw Error(where() + ": missing metadata key " + std::string(name));
    if (v.size() != 3) throw Error(where() + ": metadata key " + std::string(name) + " is not an array of 3 f32");
    return {v[0], v[1], v[2]};
  }

  bool has_tensor(const std::string& name) const { return gguf_.find_tensor(name) != nullptr; }
  // A small F32 / F16 / BF16 vector of `n` values, read now (not a graph weight).
  std::vector<float> read_f32(const std::string& name, int64_t n) {
    const io::GgufTensorInfo& info = gguf_.tensor(name, {n});
    const auto type = static_cast<ggml_type>(info.type);
    if (type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16) {
      throw Error(where() + ": tensor " + name + " has type " + ggml_type_name(type) + ", expected F32, F16 or BF16");
    }
    std::vector<uint8_t> raw(info.bytes);
    if (std::fseek(file_.get(), static_cast<long>(info.offset), SEEK_SET) != 0 ||
        std::fread(raw.data(), 1, raw.size(), file_.get()) != raw.size()) {
      throw Error(where() + ": tensor " + name + " could not be read (truncated file?)");
    }
    std::vector<float> out(static_cast<size_t>(n));
    if (type == GGML_TYPE_F32) {
      std::memcpy(out.data(), raw.data(), out.size() * sizeof(float));
    } else {
      convert_to_f32(type, raw.data(), out.data(), out.size());
    }
    return out;
  }
  std::vector<int64_t> tensor_shape(const std::string& name) const {
    const io::GgufTensorInfo* t = gguf_.find_tensor(name);
    if (!t) throw Error(where() + ": missing tensor " + name);
    return t->ne;
  }

  // Declares tensor `name` with the expected ggml shape. Vectors and embeddings (as_f32) are stored as
  // F32 whatever the file holds (F32/F16/BF16); matrices keep the file's type.
  ggml_tensor* add(WeightBuilder& builder, const std::string& name, std::initializer_list<int64_t> ne, bool as_f32) {
    const io::GgufTensorInfo& info = gguf_.tensor(name, std::vector<int64_t>(ne));
    const auto type = static_cast<ggml_type>(info.type);
    const bool float_type = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16;
    if (as_f32 && !float_type) {
      throw Error(where() + ": tensor " + name + " has type " + ggml_type_name(type) + ", expected F32, F16 or BF16");
    }
    if (!as_f32 && !float_type && !ggml_is_quantized(type)) {
      throw Error(where() + ": tensor " + name + " has unsupported type " + ggml_type_name(type));
    }
    const ggml_type dst_type = as_f32 ? GGML_TYPE_F32 : type;
    const size_t offset = info.offset;       // inside the file: GgufFile checked every tensor's extent
    const size_t file_bytes = info.bytes;
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
  io::GgufFile gguf_;
  FilePtr file_;
};

// LLaVA-NeXT (AnyRes): clip.vision.image_grid_pinpoints, (width, height) pairs flattened, each side a multiple of
// the tile (clip.cpp reads them the same way); bounded so that a crop grid stays a few dozen tiles.
std::vector<std::array<int, 2>> anyres_pinpoints(const MmprojReader& r, int tile) {
  const char* key = "clip.vision.image_grid_pinpoints";
  if (!r.has(key)) return {};
  const std::vector<int64_t> flat = r.ints(key);
  if (flat.empty() || flat.size() % 2 != 0) {
    throw Error(r.where() + ": metadata " + key + " holds " + std::to_string(flat.size()) +
                " integers, expected (width, height) pairs");
  }
  constexpr int64_t kMaxTilesPerSide = 8;
  std::vector<std::array<int, 2>> out;
  for (size_t i = 0; i < flat.size(); i += 2) {
    const int64_t w = flat[i], h = flat[i + 1];
    if (w <= 0 || h <= 0 || w % tile != 0 || h % tile != 0 || w / tile > kMaxTilesPerSide || h / tile > kMaxTilesPerSide) {
      throw Error(r.where() + ": metadata " + key + " has the resolution " + std::to_string(w) + "x" + std::to_string(h) +
                  ", expected positive multiples of the " + std::to_string(tile) + " px image size, at most " +
                  std::to_string(kMaxTilesPerSide) + " tiles a side");
    }
    out.push_back({static_cast<int>(w), static_cast<int>(h)});
  }
  return out;
}

}  // namespace

void load_mmproj_gguf(const std::filesystem::path& path, const MmprojOptions& options, ggml_backend_buffer_type_t weight_type,
                      ModelData& model) {
  MmprojReader r(path);
  const std::string arch = r.str("general.architecture");
  if (arch != "clip") throw Error(r.where() + ": general.architecture is \"" + arch + "\", expected \"clip\"");
  if (!r.boolean("clip.has_vision_encoder", true)) throw Error(r.where() + ": the file has no vision encoder");
  const std::string projector = r.has("clip.projector_type") ? r.str("clip.projector_type") : "mlp";
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
  hp.preprocess.anyres_pinpoints = anyres_pinpoints(r, hp.image_size);
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
  if (r.has_tensor("v.image_newline")) model.image_newline = r.read_f32("v.image_newline", hp.projector_dim);
  builder.finish(weight_type, w);
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
  if (!s.anyres_pinpoints.empty() && s.image_newline) count(s.proj_out, GGML_TYPE_F32);
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
  if (!s.anyres_pinpoints.empty() && s.image_newline) add("v.image_newline", GGML_TYPE_F32, {s.proj_out}, 0.0f, 0.5f);

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
  if (!s.anyres_pinpoints.empty()) {
    gguf_set_val_str(g, "general.name", "vtprune random LLaVA-NeXT mmproj");
    std::vector<int32_t> flat;
    for (const auto& [w, h] : s.anyres_pinpoints) flat.insert(flat.end(), {w, h});
    gguf_set_arr_data(g, "clip.vision.image_grid_pinpoints", GGUF_TYPE_INT32, flat.data(), static_cast<int>(flat.size()));
    gguf_set_val_str(g, "clip.vision.mm_patch_merge_type", "spatial_unpad");
  }

  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (!gguf_write_to_file(g, path.c_str(), false)) throw Error("write_test_mmproj: cannot write " + path.string());
}

void set_mmproj_header(gguf_context* g, const MmprojHeader& h) {
  gguf_set_val_str(g, "general.architecture", "clip");
  gguf_set_val_str(g, "general.type", "mmproj");
  gguf_set_val_str(g, "general.name", h.name);
  // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32
  gguf_set_val_u32(g, "general.file_type", h.wtype == GGML_TYPE_F16    ? 1
                                           : h.wtype == GGML_TYPE_Q8_0 ? 7
                                           : h.wtype == GGML_TYPE_BF16 ? 32
                                                                       : 0);
  gguf_set_val_bool(g, "clip.has_vision_encoder", true);
  gguf_set_val_u32(g, "clip.vision.projection_dim", static_cast<uint32_t>(h.projection_dim));
  gguf_set_val_u32(g, "clip.vision.image_size", static_cast<uint32_t>(h.image_size));
  gguf_set_val_u32(g, "clip.vision.patch_size", static_cast<uint32_t>(h.patch_size));
  gguf_set_val_u32(g, "clip.vision.embedding_length", static_cast<uint32_t>(h.width));
  gguf_set_val_u32(g, "clip.vision.feed_forward_length", static_cast<uint32_t>(h.ff));
  gguf_set_val_u32(g, "clip.vision.block_count", static_cast<uint32_t>(h.blocks));
  gguf_set_val_u32(g, "clip.vision.attention.head_count", static_cast<uint32_t>(h.heads));
  gguf_set_arr_data(g, "clip.vision.image_mean", GGUF_TYPE_FLOAT32, h.mean.data(), 3);
  gguf_set_arr_data(g, "clip.vision.image_std", GGUF_TYPE_FLOAT32, h.std.data(), 3);
}

// ---------------------------------------------------------------------------------------------------
// Random Qwen2.5-VL mmproj files

Qwen25VlMmprojShape qwen25vl_mmproj_shape(std::string_view name) {
  if (name == "qwen2.5-vl-3b") return {};
  if (name == "qwen2.5-vl") {
    Qwen25VlMmprojShape s;
    s.n_layer = 4;
    s.n_embd = 64;
    s.n_ff = 128;
    s.n_head = 4;
    s.n_wa_pattern = 2;  // blocks 0, 2 windowed, 1, 3 global
    s.proj_out = 64;
    return s;
  }
  throw Error("unknown Qwen2.5-VL mmproj shape \"" + std::string(name) + "\" (qwen2.5-vl | qwen2.5-vl-3b)");
}

namespace {

void write_qwen25vl(const std::filesystem::path& path, const Qwen25VlMmprojShape& s, uint64_t seed,
                    WeightType weight_type, bool header_only) {
  const auto describe = [&] {
    return "write_test_mmproj_qwen25vl: invalid shape (blocks " + std::to_string(s.n_layer) + ", width " +
           std::to_string(s.n_embd) + ", ff " + std::to_string(s.n_ff) + ", heads " + std::to_string(s.n_head) +
           ", n_wa_pattern " + std::to_string(s.n_wa_pattern) + ", patch " + std::to_string(s.patch_size) +
           ", image " + std::to_string(s.image_size) + ", proj_out " + std::to_string(s.proj_out) + ")";
  };
  if (s.n_layer < 1 || s.n_embd < 1 || s.n_ff < 1 || s.n_head < 1 || s.n_embd % s.n_head != 0 ||
      (s.n_embd / s.n_head) % 4 != 0 || s.n_ff == s.n_embd || s.n_wa_pattern < 1 || s.patch_size < 1 ||
      s.image_size < 1 || s.proj_out < 1) {
    throw Error(describe() + ": needs positive sizes, a head width divisible by 4, and n_ff != width");
  }
  const int64_t D = s.n_embd, F = s.n_ff, P = s.patch_size, M = 4 * D, O = s.proj_out;
  const ggml_type wtype = weight_type == WeightType::F16    ? GGML_TYPE_F16
                          : weight_type == WeightType::BF16 ? GGML_TYPE_BF16
                          : weight_type == WeightType::Q8_0 ? GGML_TYPE_Q8_0
                                                            : GGML_TYPE_F32;
  // The converter's rules: the patch embedding is F16 in an F16 file and F32 otherwise; a matrix whose rows
  // do not split into the quantisation's blocks falls back to F16 (3420-wide ffn_down in a Q8_0 file).
  const ggml_type patch_type = wtype == GGML_TYPE_F16 ? GGML_TYPE_F16 : GGML_TYPE_F32;
  const auto matrix_type = [&](int64_t row) {
    return ggml_is_quantized(wtype) && row % ggml_blck_size(wtype) != 0 ? GGML_TYPE_F16 : wtype;
  };

  std::vector<io::GeneratedTensor> t;
  // Weights ~ 1/sqrt(fan_in) keep activations O(1) through the blocks; q/k larger so that attention is peaked.
  const auto matrix = [&](std::string name, int64_t in, int64_t out, float gain = 1.0f) {
    t.push_back({std::move(name), matrix_type(in), {in, out, 1, 1}, 0.0f, gain / std::sqrt(static_cast<float>(in))});
  };
  const auto vec = [&](std::string name, int64_t n, float mean, float stddev) {
    t.push_back({std::move(name), GGML_TYPE_F32, {n, 1, 1, 1}, mean, stddev});
  };
  // Conv3D (D, 3, 2, P, P) split into its two temporal halves [P, P, 3, D]; a still image is fed to both.
  const float patch_std = 1.0f / std::sqrt(static_cast<float>(2 * 3 * P * P));
  t.push_back({"v.patch_embd.weight", patch_type, {P, P, 3, D}, 0.0f, patch_std});
  t.push_back({"v.patch_embd.weight.1", patch_type, {P, P, 3, D}, 0.0f, patch_std});
  for (int il = 0; il < s.n_layer; ++il) {
    const std::string p = "v.blk." + std::to_string(il) + ".";
    vec(p + "ln1.weight", D, 1.0f, 0.1f);
    matrix(p + "attn_q.weight", D, D, 2.0f);
    vec(p + "attn_q.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_k.weight", D, D, 2.0f);
    vec(p + "attn_k.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_v.weight", D, D);
    vec(p + "attn_v.bias", D, 0.0f, 0.1f);
    matrix(p + "attn_out.weight", D, D);
    vec(p + "attn_out.bias", D, 0.0f, 0.1f);
    vec(p + "ln2.weight", D, 1.0f, 0.1f);
    matrix(p + "ffn_gate.weight", D, F);
    vec(p + "ffn_gate.bias", F, 0.0f, 0.1f);
    matrix(p + "ffn_up.weight", D, F);
    vec(p + "ffn_up.bias", F, 0.0f, 0.1f);
    matrix(p + "ffn_down.weight", F, D);
    vec(p + "ffn_down.bias", D, 0.0f, 0.1f);
  }
  vec("v.post_ln.weight", D, 1.0f, 0.1f);  // the merger's ln_q
  matrix("mm.0.weight", M, M);
  vec("mm.0.bias", M, 0.0f, 0.1f);
  matrix("mm.2.weight", M, O);
  vec("mm.2.bias", O, 0.0f, 0.1f);

  GgufPtr gguf(gguf_init_empty());
  gguf_context* g = gguf.get();
  // In the order MmprojModel.set_gguf_parameters and Qwen2VLVisionModel.set_gguf_parameters write them.
  set_mmproj_header(g, {.name = "vtprune random Qwen2.5-VL mmproj", .wtype = wtype, .projection_dim = s.proj_out,
                        .image_size = s.image_size, .patch_size = s.patch_size, .width = s.n_embd, .ff = s.n_ff,
                        .blocks = s.n_layer, .heads = s.n_head,
                        .mean = {0.48145466f, 0.4578275f, 0.40821073f}, .std = {0.26862954f, 0.26130258f, 0.27577711f}});
  gguf_set_val_str(g, "clip.projector_type", "qwen2.5vl_merger");
  gguf_set_val_bool(g, "clip.use_silu", true);
  gguf_set_val_u32(g, "clip.vision.n_wa_pattern", static_cast<uint32_t>(s.n_wa_pattern));
  gguf_set_val_f32(g, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
  gguf_set_val_u32(g, "general.quantization_version", GGML_QNT_VERSION);
  io::write_generated_gguf(g, t, path, seed, header_only);
}

}  // namespace

void write_test_mmproj_qwen25vl(const std::filesystem::path& path, const Qwen25VlMmprojShape& shape, uint64_t seed,
                                WeightType weight_type) {
  write_qwen25vl(path, shape, seed, weight_type, /*header_only=*/false);
}

void write_test_mmproj_qwen25vl_header(const std::filesystem::path& path, const Qwen25VlMmprojShape& shape,
                                       WeightType weight_type) {
  write_qwen25vl(path, shape, /*seed=*/0, weight_type, /*header_only=*/true);
}

}  // namespace vtprune::vision
