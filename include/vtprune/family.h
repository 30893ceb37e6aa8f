// Model families as data: one entry per kind of vision encoder + projector that llama.cpp's files describe
// (clip.projector_type). Every part of vtprune that depends on the family reads it here: which encoder serves
// the file, how ViT patches become LLM tokens, which tensors the attention taps read, the LLM position scheme,
// the prompt format, and how each method runs on it (official, adapted or refused, with its default options).
// reduce/ never sees a family: it gets a token grid, a CLS flag and layer indices.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/reduce.h"

namespace vtprune::io {
class GgufFile;
}

namespace vtprune::family {

// Which encoder implementation serves a family's files.
enum class Encoder {
  Own,   // vtprune's Hugging-Face-faithful ggml graph (LLaVA-1.5: llama.cpp's graph has bugs #25814 / #25817)
  Mtmd,  // libmtmd's own graph, its attention observed through the scheduler's eval callback
};
std::string_view to_string(Encoder encoder);
Encoder parse_encoder(std::string_view name);  // "own" | "mtmd"; throws Error

enum class Positions {
  Contiguous,  // 1-D: kept tokens renumbered p0, p0 + 1, ... (LLaVA, as its official code does)
  MRopeGrid,   // M-RoPE: each kept token keeps its (t, y, x); text after the image keeps its unpruned positions
};
enum class Prompt {
  Llava15,       // LLaVA's conv_vicuna_v1, byte for byte (llama.cpp's files carry no usable template)
  FileTemplate,  // the GGUF's own chat template, media markers through mtmd_tokenize (as llama-mtmd-cli)
};

// Where a merge unit's patches sit in the ViT sequence.
enum class UnitLayout {
  Consecutive,   // one unit's merge x merge patches are consecutive, in (dy, dx) order (Qwen2-VL / 2.5-VL)
  RasterBlocks,  // patches in raster order over the whole grid; a unit is a merge x merge block of it (Gemma 3's
                 // average pooling, Idefics3's pixel shuffle)
};
// Where an image's LLM-token grid (height x width) comes from.
enum class TokenGrid {
  DecoderPositions,  // the M-RoPE positions libmtmd gives the image's tokens
  Square,            // a fixed-size square tile: side = sqrt(tokens) (Gemma 3: 16 x 16)
};

// How ViT patches become LLM tokens.
struct Geometry {
  bool has_cls = false;      // a CLS token leads the ViT sequence; it is not an LLM token
  int merge = 1;             // merge x merge patches form one LLM token (Qwen2.5-VL: 2; Gemma 3: 4 unless the
                             // file says otherwise: VisionFacts::merge)
  UnitLayout units = UnitLayout::Consecutive;
  TokenGrid grid = TokenGrid::DecoderPositions;
  bool window_order = false; // the ViT runs on merge units grouped by window (Qwen2.5-VL); LLM tokens are raster
  int window_tokens = 0;     // window side in LLM tokens (Qwen2.5-VL: 112 px / 14 px / 2 = 4)
};

// How one image becomes encoder inputs (units, each reduced on its own).
enum class Tiling {
  Single,  // one input; or, for libmtmd families, one unit per image chunk libmtmd's own slicing makes (SmolVLM)
  AnyRes,  // LLaVA-NeXT's AnyRes, done by vtprune: the overview, then the crops of the best of the file's
           // clip.vision.image_grid_pinpoints (vision::anyres_tiles); the file must state pinpoints
};

enum class Support {
  Official,  // the method's own code covers this family
  Adapted,   // a named variant (the options below) for this encoder, rule in `note`
  Refused,   // the method cannot run here; `note` says why (the error users see)
};
std::string_view to_string(Support support);

struct MethodRule {
  std::string method;
  Support support = Support::Official;
  std::vector<std::string> options;  // this family's defaults, "key=value"; the user's options come after them
  std::string note;                  // provenance (official), the rule in one sentence (adapted), or why (refused)
};

// What an encoder needs to know of an mmproj file, read and checked against the family's tensor layout before
// libmtmd sees it (libmtmd asserts on shapes it does not expect).
struct VisionFacts {
  int layers = 0;         // ViT blocks
  int heads = 0;
  int width = 0;          // ViT hidden size
  int head_dim = 0;
  int patch_size = 0;
  int projector_dim = 0;  // the LLM's embedding width
  int merge = 0;          // patches per LLM token along each side, when the file sets it (0: Geometry::merge)
};
using FileCheck = VisionFacts (*)(const io::GgufFile& mmproj);

struct Family {
  std::string name;                          // "llava-1.5", "qwen2.5-vl"
  std::string description;                   // one line for users
  std::vector<std::string> projector_types;  // clip.projector_type values of this family's mmproj files
  Encoder encoder = Encoder::Own;            // the default encoder (run --encoder overrides it)
  Tiling tiling = Tiling::Single;
  Geometry geometry;
  // Tensors of the libmtmd graph the taps read (names as its cb() gives them, "%d" = block index): the
  // post-position query and key of a block, laid out [head_dim, heads, tokens].
  std::string query_tensor, key_tensor;
  Positions positions = Positions::Contiguous;
  // The LLM attends over an image's rows without the causal mask (Gemma 3; libmtmd's
  // mtmd_decode_use_non_causal): every kept row of an image is decoded in one non-causal batch.
  bool bidirectional_image = false;
  Prompt prompt = Prompt::Llava15;
  std::vector<MethodRule> methods;           // one per registered method
  std::string taps_note;                     // how taps are computed for this family (README / methods output)
  FileCheck check_file = nullptr;            // the libmtmd families: metadata + every tensor's shape
  // ViT depth the layer numbers in `methods` are written for (the real models': LLaVA-1.5's CLIP 24,
  // Qwen2.5-VL 32). A file of another depth gets them scaled (scale_layer).
  int reference_depth = 0;
};

// Every family, in a fixed order.
std::span<const Family* const> all();
const Family& by_name(std::string_view name);  // throws Error listing the known names
// The family of an mmproj file (from clip.projector_type and friends). Throws InputError naming the file and the
// projector type when no entry describes it: libmtmd may load such a file, vtprune cannot prune it yet.
const Family& detect(const io::GgufFile& mmproj);

// How `method` runs on `family`; throws InputError (naming the family, the method and the reason) when refused.
const MethodRule& rule(const Family& family, std::string_view method);
// The family's default options for `method` with the user's on top: a key the user gives replaces the
// family's default for it (Options::parse takes each key once).
// `depth` > 0: the family's non-negative layer defaults are scaled from reference_depth to this depth.
std::vector<std::string> method_options(const Family& family, std::string_view method,
                                        const std::vector<std::string>& user_options, int depth = 0);
// A layer index written for a `reference`-deep ViT, on a `depth`-deep one: round_half_even(layer * depth /
// reference), at most depth - 1 (the rule eval imagenet uses for DeiT too).
int scale_layer(int layer, int depth, int reference);

// The README's tables, generated from the entries above (a test keeps the README equal to them):
// one row per family (encoder, geometry, positions, prompt, taps), and one row per method with its support on
// each family (official / adapted / refused, with the note).
std::string families_markdown();
std::string methods_markdown();

// ---- Geometry helpers (one implementation, used by the encoders and by case files) ----------------------

// Mean of every `unit` consecutive values: per-patch scores -> per-merged-token scores (merge-unit-major order).
std::vector<float> merge_unit_mean(std::span<const float> per_patch, int unit);
// Qwen2.5-VL's window order (clip.cpp's window_idx for an h x w grid of merged tokens and windows of `window`
// tokens): position in the ViT sequence of raster token r. Identity when window <= 0.
std::vector<int32_t> window_positions(int grid_h, int grid_w, int window);
// Mean over each merge x merge block of a raster patch grid (grid_h * merge rows, grid_w * merge columns):
// per-patch scores -> per-token scores of a grid_h x grid_w token grid (UnitLayout::RasterBlocks).
std::vector<float> block_mean(std::span<const float> per_patch, int grid_h, int grid_w, int merge);
// LLaVA-NeXT's 'spatial' layout of an image's crops (HiPrune's llava_arch.py: features viewed (rows, columns,
// side, side), permuted to (rows, side, columns, side), flattened, then masked): the order in which the crops'
// kept rows enter the LLM. `kept[c]` = the source patch (raster in its side x side crop; -1: none, e.g. CLS) of
// the leading rows of crop c (row-major crop grid, `columns` wide), `rows[c]` = all of crop c's rows (rows past
// kept[c] have no single source, as Reduction::kept says). Returns indices into the crops' rows concatenated in
// crop order: sourced rows by their place in the whole image's patch raster, then the others, crop by crop.
std::vector<int64_t> anyres_spatial_order(const std::vector<std::vector<int32_t>>& kept, const std::vector<int64_t>& rows,
                                          int columns, int side);
// LLaVA-NeXT's own 'spatial_unpad' layout (HiPrune's llava_arch.py 'unpad' branch): the crop grid in the whole
// image's raster with the padding rows or columns of an image_width x image_height picture removed (unpad_image:
// the side that did not fill its resolution loses (current - int(original * scale)) // 2 patches at each end, and
// kept rows there are dropped), and a newline (kAnyResNewline) after every remaining patch row, kept whatever the
// row keeps. Rows without a single source come last, crop by crop.
inline constexpr int64_t kAnyResNewline = -1;
std::vector<int64_t> anyres_unpad_order(const std::vector<std::vector<int32_t>>& kept, const std::vector<int64_t>& rows,
                                        int columns, int side, int image_width, int image_height);
// Reorders per-token values from the ViT's window order to raster order.
std::vector<float> window_to_raster(std::span<const float> window_ordered, int grid_h, int grid_w, int window);

}  // namespace vtprune::family
