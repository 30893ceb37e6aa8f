// vtprune vision: image decoding and preprocessing, ViT model files (timm safetensors, llama.cpp mmproj
// GGUF), a ggml ViT encoder with attention taps, and the LLaVA projector.
//
// The encoder produces exactly what the reduction core consumes (vtprune::EncoderOutput): features of the
// feature layer, and for each tapped layer only the statistics a method asked for (Needs). Layers without a
// tap run ggml's flash-attention path; a tapped layer materialises its softmax once and reduces it in the
// graph to the statistics.
//
// Sequence layout follows Hugging Face / timm: CLS first, then the patches row-major. Layer indices are
// 0-based block indices of the ORIGINAL model (LLaVA-1.5: 24 layers, feature layer 22, even though
// llama.cpp's legacy mmproj files store only 23 blocks).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/reduce.h"

namespace vtprune::vision {

// ---------------------------------------------------------------------------------------------------
// Images

// Guards against hostile inputs: both are checked before any pixel is decoded.
struct ImageLimits {
  int64_t max_file_bytes = int64_t{256} << 20;  // 256 MiB
  int64_t max_pixels = 100'000'000;             // width * height (decompression bombs)
};

// 8-bit RGB, interleaved, row-major (what a decoder produces and Pillow resizes).
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // [height x width x 3]

  uint8_t at(int x, int y, int c) const { return pixels[(static_cast<size_t>(y) * width + x) * 3 + c]; }
};

// Decodes JPEG / PNG / BMP (stb_image) to RGB; grey is replicated and alpha dropped, as PIL's
// convert("RGB") does. Throws Error naming `name` for broken, truncated or oversized images.
RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& name, const ImageLimits& limits = {});
RgbImage load_image(const std::filesystem::path& file, const ImageLimits& limits = {});
// Writes 8-bit RGB as PNG; throws Error naming the file.
void save_png(const std::filesystem::path& file, const RgbImage& image);

// Pillow's Image.resize(size, Image.BICUBIC) bit for bit: separable cubic convolution (a = -0.5) whose
// support is scaled by the reduction factor when downscaling (antialiasing), 8-bit fixed-point
// coefficients, horizontal pass first, each pass rounded and clamped to 8 bits.
RgbImage resize_bicubic(const RgbImage& image, int width, int height);
// torchvision CenterCrop: offsets round((size - crop) / 2) (half to even). Crop must fit.
RgbImage center_crop(const RgbImage& image, int width, int height);
// LLaVA's expand2square: the image pasted on a square canvas of `background`, centred ((side - w) // 2).
RgbImage expand_to_square(const RgbImage& image, std::array<uint8_t, 3> background);

// A network input: planar float CHW, normalised.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<float> data;  // [3 x height x width]
};

// A model's preprocessing recipe.
struct Preprocess {
  enum class Kind {
    TimmCenterCrop,  // resize shorter side to `resize_shorter` (bicubic), centre-crop image_size
    LlavaPadSquare,  // expand2square with the mean colour, resize to image_size (bicubic)
    Stretch,         // resize to image_size x image_size (bicubic), no crop or pad
  };
  Kind kind = Kind::TimmCenterCrop;
  int image_size = 224;
  int resize_shorter = 256;
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  // LLaVA-NeXT's AnyRes resolutions (clip.vision.image_grid_pinpoints, (width, height) pairs, multiples of
  // image_size): non-empty = the image becomes an overview plus crops (anyres_tiles), not one input.
  std::vector<std::array<int, 2>> anyres_pinpoints;
};

// The recipe's geometric steps, stopping before normalisation (for visualisation).
RgbImage prepare_pixels(const RgbImage& image, const Preprocess& recipe);
// x / 255, minus mean, divided by std, per channel; CHW planar.
Image normalize(const RgbImage& image, const Preprocess& recipe);
inline Image preprocess(const RgbImage& image, const Preprocess& recipe) {
  return normalize(prepare_pixels(image, recipe), recipe);
}

// LLaVA-NeXT's select_best_resolution (llava/mm_utils.py): the candidate (width, height) that keeps the most of
// the image's pixels when it is scaled to fit (effective = min(int(w s) * int(h s), w h), s = min(cw / w, ch / h)),
// then the one that wastes the least canvas; the first candidate wins a full tie.
std::array<int, 2> select_best_resolution(int width, int height, std::span<const std::array<int, 2>> candidates);

// LLaVA-NeXT's AnyRes split (process_anyres_image): the overview (the whole image resized to tile x tile, aspect
// ratio not kept), then the crops: the image resized to fit the best resolution with its aspect ratio kept
// (resize_and_pad_image: the side that limits is filled exactly, the other min(ceil(side * scale), target);
// bicubic), centred on a black canvas of that resolution, cut into tile x tile crops row by row.
struct AnyResTiles {
  std::vector<RgbImage> tiles;  // overview first, then columns x rows crops in raster order
  int columns = 0, rows = 0;    // the crop grid (best resolution / tile)
  int image_width = 0, image_height = 0;  // the image's own size (LLaVA-NeXT's unpad reads it)
};
AnyResTiles anyres_tiles(const RgbImage& image, std::span<const std::array<int, 2>> pinpoints, int tile);

// ---------------------------------------------------------------------------------------------------
// Encoder results

// Owns every buffer an EncoderOutput points to.
struct EncoderResult {
  struct Tap {
    int layer = -1;
    std::vector<float> received, cls_attention, attention, keys, cls_query;
  };
  EncoderInfo info;
  int dim = 0;                       // feature width D
  std::vector<float> features;       // [N x D] patches of the feature layer (timm: after the final norm,
                                     // as forward_features; CLIP: the raw block output, as LLaVA)
  std::vector<float> cls_features;   // [D] when asked for
  std::vector<float> projected;      // [N x D_llm] when asked for (models with a projector)
  int projected_dim = 0;
  // The features ARE the LLM-input embeddings (libmtmd families: its projector already ran); the view's
  // `projected` then aliases `features`, and the pipeline does not project again.
  bool projected_features = false;
  std::vector<float> logits;         // classifier logits (timm models, when asked for)
  std::vector<Tap> taps;
  double encode_ms = 0.0;            // graph compute time (ViT + projector)

  // Non-owning view for the reduction core; valid while this result lives and is not modified.
  EncoderOutput view() const;
};

struct EncodeOptions {
  int threads = 1;
  bool logits = false;  // timm: run every layer, the final norm and the head on CLS
  // >= 0: a partial forward that treats blocks [0, stop_after_layer] as the encoder (token-reduction
  // benchmarks on a classifier). `features` / `cls_features` are then the raw hidden states after that
  // block (no final norm, timm included) and info.feature_layer is this block. Taps may still name later
  // layers (PruMerge reads the next block's q/k); only what those taps need is computed.
  int stop_after_layer = -1;
};

// ---------------------------------------------------------------------------------------------------
// Models

enum class Architecture {
  Timm,  // timm ViT/DeiT: no pre-norm, exact GELU, final norm + head on CLS
  Clip,  // CLIP vision tower: pre-LN, quick-GELU, no post-LN on the features (LLaVA)
};

// Where vtprune's own graph for a model runs: "cpu" (default), "gpu" (the accelerator libmtmd would pick for
// --mmproj-offload: the first GPU, else the first integrated GPU, else the CPU) or a ggml device name
// ("Vulkan0", "CUDA0", "RPC0"; see vtprune::list_devices). ggml's scheduler runs ops the device lacks on the CPU.
struct TimmOptions {
  std::string device = "cpu";
};

struct MmprojOptions {
  std::string device = "cpu";  // as TimmOptions::device
  // Reproduce llama.cpp's own clip graph (tools/mtmd/models/llava.cpp): CLS concatenated LAST with
  // positions 0..T-1 (llama.cpp #25814), n_layer - 1 blocks run (#25817), features = sequence rows
  // 1..N (patches 1..N-1 then CLS), ggml_conv_2d's F16 im2col, flash attention on F16 K/V, table-based
  // quick-GELU and tanh GELU in the projector. Only for proving we read the same weights the same way as
  // libmtmd (its default settings): the embeddings come out bit-identical.
  bool mtmd_compat = false;
  // Flash attention on F16 copies of K and V in the blocks without taps, as llama.cpp's clip graph does:
  // the CPU kernel's F16 path is faster (~5% of the encode on CLIP-L/336), and the features move by ~1e-3
  // relative. Off by default: the F32 path stays within float rounding of the tapped (softmax) path.
  bool f16_attention = false;
  // Depth of the original model. 0 = LLaVA convention: the legacy converter drops the last layer, so the
  // original depth is block_count + 1 and the feature layer (-2) is the last stored block.
  int original_depth = 0;
};

struct ClipOptions {
  std::string device = "cpu";  // as TimmOptions::device
  // The LLaVA projector (mm_projector.0/2 or multi_modal_projector.linear_1/2) when it is not in the
  // tower's file. Empty: looked for in the tower's file; absent there = no projector.
  std::filesystem::path projector;
  // Feature layer, Python-style over the stored layers (LLaVA-1.5: -2 = the penultimate layer).
  int feature_layer = -2;
};

// Shape of a random LLaVA-1.5-style mmproj (see write_test_mmproj).
struct MmprojShape {
  int n_layer = 23;      // stored blocks (block_count)
  int n_embd = 1024;
  int n_ff = 4096;
  int n_head = 16;
  int image_size = 336;
  int patch_size = 14;
  int proj_out = 4096;   // the LLM's embedding width
  // Non-empty: a LLaVA-NeXT (1.6) file as llama.cpp's converter writes it: these AnyRes resolutions
  // (clip.vision.image_grid_pinpoints), mm_patch_merge_type "spatial_unpad" and v.image_newline [proj_out].
  std::vector<std::array<int, 2>> anyres_pinpoints;
  bool image_newline = true;  // with pinpoints: write v.image_newline (false: a file without it, for tests)
};
// LLaVA-NeXT-7B's (llava-v1.6-vicuna-7b) image_grid_pinpoints.
inline std::vector<std::array<int, 2>> llava_next_pinpoints() {
  return {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
}
// Type of the weight matrices (the patch embedding stays F16 unless F32, as llama.cpp's converters and
// quantiser leave it); norms, biases, CLS and positions are F32.
enum class WeightType { F32, F16, BF16, Q8_0 };
WeightType parse_mmproj_weight_type(std::string_view name);  // "f32" | "f16" | "bf16" | "q8_0"; throws Error

// Writes a random-weight mmproj GGUF with exactly the tensor names, shapes, types and metadata of
// llama.cpp's legacy LLaVA-1.5 conversion (legacy fc1/fc2 naming included). Deterministic in `seed`.
void write_test_mmproj(const std::filesystem::path& path, const MmprojShape& shape, uint64_t seed,
                       WeightType weight_type = WeightType::F16);

// Shape of a random Qwen2.5-VL mmproj (see write_test_mmproj_qwen25vl). Defaults: Qwen2.5-VL-3B-Instruct's
// vision tower (config.json vision_config: depth 32, hidden 1280, intermediate 3420, 16 heads, patch 14,
// spatial merge 2, window 112, fullatt_block_indexes [7, 15, 23, 31], out_hidden_size 2048).
struct Qwen25VlMmprojShape {
  int n_layer = 32;       // ViT blocks
  int n_embd = 1280;
  int n_ff = 3420;        // SwiGLU width (gate / up); must differ from n_embd (libmtmd's swapped-ffn check)
  int n_head = 16;        // head width n_embd / n_head: a multiple of 4 (M-RoPE sections d_head / 4)
  int n_wa_pattern = 8;   // blocks n_wa_pattern - 1, 2 n_wa_pattern - 1, ... attend globally, the rest in windows
  int image_size = 560;   // what the converter writes (clip.vision.image_size); images keep their own size
  int patch_size = 14;
  int proj_out = 2048;    // merger output = the LLM's embedding width
};
// "qwen2.5-vl" (64 wide, 128 ff, 4 heads, 4 blocks with n_wa_pattern 2, projecting to 64) or
// "qwen2.5-vl-3b" (the defaults). Throws Error for other names.
Qwen25VlMmprojShape qwen25vl_mmproj_shape(std::string_view name);

// Writes a random-weight mmproj GGUF with exactly the tensor names, shapes, types and metadata llama.cpp's
// converter writes for Qwen2.5-VL (conversion/qwenvl.py, Qwen2VLVisionModel): projector "qwen2.5vl_merger",
// the Conv3D patch embedding as v.patch_embd.weight + v.patch_embd.weight.1 (F16 in an F16 file, else F32), no
// position embedding or CLS, RMSNorm ln1 / ln2 / post_ln (weights only), q/k/v/out with biases, SwiGLU
// ffn_gate / ffn_up / ffn_down with biases, merger mm.0 [4 D, 4 D] / mm.2 [4 D, proj_out] with biases;
// clip.use_silu, clip.vision.n_wa_pattern, eps 1e-6, CLIP's image mean / std. Q8_0 matrices whose rows do not
// split into 32-value blocks stay F16, as the converter falls back. Tensors are generated and written one at a
// time (a 3B tower never sits in memory); deterministic in `seed`. Throws Error naming the shape.
void write_test_mmproj_qwen25vl(const std::filesystem::path& path, const Qwen25VlMmprojShape& shape, uint64_t seed,
                                WeightType weight_type = WeightType::F16);
// Only its GGUF header (metadata + tensor table, no tensor data), for checking a multi-GB shape's layout.
void write_test_mmproj_qwen25vl_header(const std::filesystem::path& path, const Qwen25VlMmprojShape& shape,
                                       WeightType weight_type = WeightType::F16);

// Shape of a random SigLIP mmproj (write_test_mmproj_siglip). Defaults: Gemma-3-4B-it's vision tower
// (config.json vision_config: SigLIP So400m, 27 blocks, hidden 1152, intermediate 4304, 16 heads, 896 px in 14 px
// patches; mm_tokens_per_image 256 = 4 x 4 pooling; text hidden 2560).
struct SiglipMmprojShape {
  int n_layer = 27;
  int n_embd = 1152;
  int n_ff = 4304;        // must differ from n_embd (libmtmd's swapped-ffn check)
  int n_head = 16;
  int image_size = 896;
  int patch_size = 14;
  int merge = 4;          // patches per LLM token along each side (Gemma 3: 4 x 4 average pooling)
  int proj_out = 2560;    // the LLM's embedding width
  std::string projector = "gemma3";  // "gemma3" | "idefics3" (pixel shuffle + one linear layer)
  int longest_edge = 0;   // idefics3: clip.vision.preproc_image_size (images are resized to it, then tiled)
};
// "gemma3" (64 wide, 128 ff, 4 heads, 4 blocks, 448 px -> 8 x 8 = 64 tokens, projecting to 64), "gemma3-4b"
// (the defaults) or "smolvlm" (idefics3: SmolVLM-256M's 512 px tiles of 16 px patches, scale factor 4, 1024 px
// longest edge, at the tiny width). Throws Error for other names.
SiglipMmprojShape siglip_mmproj_shape(std::string_view name);
// Writes a random-weight mmproj GGUF with exactly the tensor names, shapes, types and metadata llama.cpp's
// converter writes for Gemma 3 (Gemma3VisionModel) or, with projector "idefics3", for Idefics3 / SmolVLM
// (SmolVLMModel: mm.model.fc.weight [D s^2, proj_out], the scale factor and preproc_image_size). Gemma 3: projector "gemma3", SigLIP's patch embedding with bias,
// learned position embeddings, LayerNorm blocks with biased q/k/v/out and fc1 / fc2 as ffn_up / ffn_down,
// post_ln, mm.input_projection.weight [proj_out, D] and mm.soft_emb_norm.weight; clip.use_gelu, eps 1e-6, mean =
// std = 0.5, clip.vision.projector.scale_factor only when the pooled grid is not 16 x 16. Deterministic in `seed`.
void write_test_mmproj_siglip(const std::filesystem::path& path, const SiglipMmprojShape& shape, uint64_t seed,
                              WeightType weight_type = WeightType::F16);
void write_test_mmproj_siglip_header(const std::filesystem::path& path, const SiglipMmprojShape& shape,
                                     WeightType weight_type = WeightType::F16);

struct VisionModelImpl;  // weights, backend and allocator (src/vision/model_impl.h)

// One model = weights + a CPU backend + a reusable graph allocator. Not thread-safe: one encode() at a
// time per VisionModel; share() gives each worker thread its own handle on the same weights.
class VisionModel {
 public:
  // timm ViT/DeiT classifier: `path` is model.safetensors or a folder holding it (and config.json, whose
  // pretrained_cfg / model_args give the preprocessing and eps; defaults are timm's DeiT ones).
  static VisionModel from_safetensors_timm(const std::filesystem::path& path, const TimmOptions& options = {});
  // Hugging Face CLIP vision tower (`vision_model.*`, any prefix such as `vision_tower.`; all layers kept,
  // so the last layer can be tapped): `path` is a .safetensors file or a folder with model.safetensors,
  // config.json (heads, eps, hidden_act) and preprocessor_config.json (mean/std).
  static VisionModel from_safetensors_clip(const std::filesystem::path& path, const ClipOptions& options = {});
  // llama.cpp mmproj GGUF (LLaVA-1.5: clip + mlp projector).
  static VisionModel from_mmproj(const std::filesystem::path& path, const MmprojOptions& options = {});

  // Another handle on the same (read-only) weights with its own backend and graph allocator: encode on
  // both from different threads at once, with the weights in memory once. The weights live as long as
  // any handle does.
  VisionModel share() const;

  VisionModel(VisionModel&&) noexcept;
  VisionModel& operator=(VisionModel&&) noexcept;
  ~VisionModel();

  Architecture architecture() const;
  EncoderInfo info() const;
  const Preprocess& preprocess_recipe() const;
  int stored_layers() const;   // blocks present in the file
  int dim() const;             // ViT width D
  int num_classes() const;     // 0 without a classifier head
  int projector_dim() const;   // 0 without a projector
  std::string device_name() const;  // ggml's name of the device its graphs run on ("CPU", "Vulkan0", ...)
  // LLaVA-NeXT's learned row separator in the LLM's input space (v.image_newline, projector_dim floats); empty
  // when the file has none.
  std::span<const float> image_newline() const;
  const std::filesystem::path& path() const;

  // Encodes one preprocessed image (its size must be the model's image size). Computes the features of
  // the feature layer and only the taps `needs` asks for; layers past the feature layer run only when a
  // tap (or options.logits) needs them. Throws Error for a layer the file does not store.
  EncoderResult encode(const Image& image, const Needs& needs, const EncodeOptions& options = {});
  // What encode() checks first: throws Error when `needs` asks for a layer the file does not store (or
  // outside the model), or for taps in mtmd_compat mode.
  void check(const Needs& needs) const;

  // The projector (LLaVA `mlp`: mm.0 -> GELU -> mm.2) on any number of tokens: [rows x D] -> [rows x D_llm].
  std::vector<float> project(const MatrixView& tokens, int threads = 1);

  // The rest of a timm classifier after a partial forward (EncodeOptions::stop_after_layer = first_block-1):
  // blocks [first_block, depth), the final norm and the head on the sequence [cls; tokens] (any number of
  // token rows, position embeddings NOT re-added: the rows already carry them). Returns the logits.
  // Throws Error without a classifier head, for a first_block outside 0..depth, or for widths other than D.
  std::vector<float> classify_tokens(std::span<const float> cls, const MatrixView& tokens, int first_block,
                                     int threads = 1);

 private:
  explicit VisionModel(std::unique_ptr<VisionModelImpl> impl);
  std::unique_ptr<VisionModelImpl> impl_;
};

// Top-k class indices by logit, descending, lower index first on ties.
std::vector<int> top_k_classes(std::span<const float> logits, int k);

}  // namespace vtprune::vision
