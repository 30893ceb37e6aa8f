// Internal model representation shared by the loaders, the ViT graph and the projector.
#pragma once

#include <array>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "compute.h"
#include "ggml_handles.h"
#include "vtprune/vision.h"

namespace vtprune::vision {

struct Hparams {
  Architecture architecture = Architecture::Timm;
  int image_size = 224;
  int patch_size = 16;
  int dim = 0;
  int heads = 0;
  int ff = 0;
  int stored_layers = 0;   // blocks in the file
  int original_depth = 0;  // what layer indices refer to
  int feature_layer = -1;  // absolute index; must be < stored_layers
  int num_classes = 0;
  int projector_dim = 0;
  float eps = 1e-6f;
  bool ffn_gelu_erf = false;     // CLIP FFN with hidden_act "gelu" instead of "quick_gelu"
  bool exact_quick_gelu = true;  // CLIP FFN: x * sigmoid(1.702 x) exactly (false: ggml's table, as llama.cpp)
  bool projector_gelu_erf = true;
  bool mtmd_compat = false;
  bool f16_attention = false;    // flash attention on F16 K/V in untapped blocks (mtmd_compat implies it)
  Preprocess preprocess;

  int grid() const { return image_size / patch_size; }
  int patches() const { return grid() * grid(); }
  int tokens() const { return patches() + 1; }
};

// Weight tensors of one block, in the order x -> LN1 -> q,k,v -> out -> + -> LN2 -> fc1 -> act -> fc2 -> +.
struct BlockWeights {
  ggml_tensor *ln1_w = nullptr, *ln1_b = nullptr;
  ggml_tensor *q_w = nullptr, *q_b = nullptr, *k_w = nullptr, *k_b = nullptr, *v_w = nullptr, *v_b = nullptr;
  ggml_tensor *o_w = nullptr, *o_b = nullptr;
  ggml_tensor *ln2_w = nullptr, *ln2_b = nullptr;
  ggml_tensor *fc1_w = nullptr, *fc1_b = nullptr, *fc2_w = nullptr, *fc2_b = nullptr;
};

// All weights, in one ggml context whose data lives in one backend buffer. ggml shapes (ne) throughout:
// a linear layer's weight is [in, out].
struct Weights {
  ContextPtr ctx;
  BufferPtr buffer;
  ggml_tensor* patch_w = nullptr;  // [p, p, 3, D]
  ggml_tensor* patch_b = nullptr;  // [D] (timm) or null (CLIP)
  ggml_tensor* cls = nullptr;      // [D]
  ggml_tensor* pos = nullptr;      // [D, T], row 0 = CLS position
  ggml_tensor *pre_ln_w = nullptr, *pre_ln_b = nullptr;  // CLIP
  ggml_tensor *norm_w = nullptr, *norm_b = nullptr;      // timm final norm
  ggml_tensor *head_w = nullptr, *head_b = nullptr;      // timm classifier [D, classes]
  ggml_tensor *mm0_w = nullptr, *mm0_b = nullptr, *mm2_w = nullptr, *mm2_b = nullptr;  // LLaVA projector
  std::vector<BlockWeights> blocks;
};

// Collects weight tensors with a function that fills each one, then allocates them all in one backend
// buffer and fills them. Fill functions write exactly ggml_nbytes(tensor) bytes.
class WeightBuilder {
 public:
  using Fill = std::function<void(void* dst, size_t bytes)>;
  explicit WeightBuilder(size_t max_tensors);
  ggml_tensor* add(const std::string& name, ggml_type type, std::initializer_list<int64_t> ne, Fill fill);
  // Allocates them in one buffer of `type` (a device's memory) and fills them; moves the context and buffer
  // into `weights`.
  void finish(ggml_backend_buffer_type_t type, Weights& weights);

 private:
  ContextPtr ctx_;
  std::vector<std::pair<ggml_tensor*, Fill>> fills_;
};

// Converts `count` elements of `src_type` (F32, F16 or BF16) to float.
void convert_to_f32(ggml_type src_type, const void* src, float* dst, size_t count);

struct ModelData {
  std::filesystem::path path;
  Hparams hp;
  Weights weights;
  std::vector<float> image_newline;  // LLaVA-NeXT's v.image_newline [projector_dim], when the file has it
};

void load_timm_safetensors(const std::filesystem::path& path, ggml_backend_buffer_type_t weight_type, ModelData& model);
void load_clip_safetensors(const std::filesystem::path& path, const ClipOptions& options, ggml_backend_buffer_type_t weight_type,
                           ModelData& model);
void load_mmproj_gguf(const std::filesystem::path& path, const MmprojOptions& options, ggml_backend_buffer_type_t weight_type,
                      ModelData& model);

// Nodes of the largest graph a VisionModel runs (the encoder with every tap).
constexpr size_t kGraphNodes = 8192;

struct VisionModelImpl {
  std::unique_ptr<Compute> compute;  // this handle's device + CPU scheduler (its buffers are reused across runs)
  std::shared_ptr<const ModelData> model;  // read-only once loaded: shared by VisionModel::share()
};

// Graph helpers shared by the ViT, classify_tokens and the projector.
// a x b (ggml_mul_mat) accumulated in F32 on every backend: GPU backends accumulate F16 weights' products in
// F16 by default (ggml-vulkan's f16acc shaders, cuBLAS's F16 compute), ~1e-2 off after 24 blocks; the CPU
// always accumulates in F32. PyTorch's F16 GEMMs accumulate in F32 too.
ggml_tensor* matmul(ggml_context* ctx, ggml_tensor* a, ggml_tensor* b);
ggml_tensor* linear(ggml_context* ctx, ggml_tensor* x, ggml_tensor* w, ggml_tensor* b);
ggml_tensor* layer_norm(ggml_context* ctx, ggml_tensor* x, ggml_tensor* w, ggml_tensor* b, float eps);
// softmax(q k^T / sqrt(d_head)) v per head for q, k, v = [D, T], through ggml_flash_attn_ext with F32
// accumulation (weights never materialised; K/V in F16 when hp.f16_attention). Returns [D, T].
ggml_tensor* fused_attention(ggml_context* ctx, const Hparams& hp, ggml_tensor* q, ggml_tensor* k, ggml_tensor* v);
// The MLP half of a pre-norm block: x + fc2(act(fc1(LN2(x)))), act = the model's GELU variant.
ggml_tensor* mlp_residual(ggml_context* ctx, const Hparams& hp, const BlockWeights& b, ggml_tensor* x);
// A contiguous copy of `t`, named and marked as a graph output, so the allocator never reuses its memory.
ggml_tensor* mark_output(ggml_context* ctx, ggml_cgraph* graph, ggml_tensor* t, const char* name);
// All values of a contiguous F32 tensor (row-major over ne1 rows of ne0).
std::vector<float> read_tensor(const ggml_tensor* t);
// The LLaVA `mlp` projector: [D, rows] -> mm.0 -> GELU -> mm.2 -> [D_llm, rows].
ggml_tensor* build_projector(ggml_context* ctx, const Weights& w, const Hparams& hp, ggml_tensor* x);
void check_threads(int threads);

// The metadata every random mmproj writer starts with, in the order llama.cpp's MmprojModel writes it:
// general.*, clip.has_vision_encoder and the tower's sizes, image mean / std. `wtype` gives general.file_type.
struct MmprojHeader {
  const char* name = "";
  ggml_type wtype = GGML_TYPE_F32;
  int projection_dim = 0, image_size = 0, patch_size = 0, width = 0, ff = 0, blocks = 0, heads = 0;
  std::array<float, 3> mean{}, std{};
};
void set_mmproj_header(gguf_context* g, const MmprojHeader& h);

// A size read from a model file, checked to lie in 1..max before any arithmetic uses it (absurd metadata is
// an Error naming `what`, never an overflow or a huge allocation).
int checked_size(int64_t value, int64_t max, const std::string& what);
// Finite layer-norm eps > 0, finite mean, finite std > 0 (normalisation divides by it).
void check_numerics(const Hparams& hp, const std::string& where);

// "[a, b, c]" for messages.
std::string shape_string(std::initializer_list<int64_t> ne);
std::string shape_string(const std::vector<int64_t>& ne);

}  // namespace vtprune::vision
