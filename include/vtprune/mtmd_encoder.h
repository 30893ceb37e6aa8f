// libmtmd as vtprune's encoder for every family whose graph llama.cpp gets right (family::Encoder::Mtmd).
//
// libmtmd prepares the image (its own resize for the family), runs its own vision graph and projector, and
// hands back the LLM-input embeddings of the image's tokens. vtprune observes that graph through the backend
// scheduler's eval callback: for each block a method taps, it reads the block's post-position query and key
// (the family's `query_tensor` / `key_tensor`, e.g. Qwen2.5-VL's "Qcur_rope-15") and computes the attention
// statistics itself, query block by query block, never holding a T x T x heads map. Untapped blocks keep
// llama.cpp's fast path (flash attention).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vtprune/family.h"
#include "vtprune/reduce.h"
#include "vtprune/vision.h"

struct llama_model;

namespace vtprune::vision {

struct MtmdOptions {
  int threads = 1;
  bool use_gpu = false;         // libmtmd on the GPU backend llama.cpp was built with (none: the CPU)
  int image_min_tokens = -1;    // llama.cpp's --image-min-tokens / --image-max-tokens for dynamic-resolution
  int image_max_tokens = -1;    // families (-1: the file's defaults)
  bool verbose = false;         // echo libmtmd's log to stderr (default: kept for error messages only)
  int flash_attn = -1;          // llama.cpp's -fa for the ViT: -1 auto (its default), 0 off, 1 on
};

// One piece of a tokenised prompt.
struct MtmdChunk {
  bool image = false;
  std::vector<int32_t> tokens;  // text: token ids (BOS included where the tokenizer adds it)
  int image_index = -1;         // image: which of the prompt's images
  int tile = 0;                 // image: which of that image's chunks (families that slice an image into an
                                // overview and tiles give one chunk each, in prompt order)
  int grid_h = 0, grid_w = 0;   // image: the LLM token grid (raster order, row-major)
  int64_t n_tokens = 0;         // image: LLM tokens before pruning (grid_h * grid_w)
  int32_t n_pos = 0;            // positions the chunk spans in the LLM (M-RoPE image: max(grid_h, grid_w))
};

// A prompt split by libmtmd into text and image chunks (owns libmtmd's chunks until encoded).
class MtmdPrompt {
 public:
  MtmdPrompt();
  ~MtmdPrompt();
  MtmdPrompt(MtmdPrompt&&) noexcept;
  MtmdPrompt& operator=(MtmdPrompt&&) noexcept;
  const std::vector<MtmdChunk>& chunks() const { return chunks_; }

 private:
  friend class MtmdEncoder;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<MtmdChunk> chunks_;
};

class MtmdEncoder {
 public:
  // Loads `mmproj` for `family` with libmtmd next to the loaded text model. The file is read and checked by
  // vtprune first (io::GgufFile, the family's tensor shapes), so a malformed file is an Error, not an abort.
  MtmdEncoder(const std::filesystem::path& mmproj, const family::Family& family, const llama_model* text_model,
              const MtmdOptions& options);
  ~MtmdEncoder();
  MtmdEncoder(MtmdEncoder&&) noexcept;
  MtmdEncoder& operator=(MtmdEncoder&&) noexcept;

  const family::Family& family() const;
  const std::filesystem::path& path() const;
  // Static facts a method plans against (grid 0 x 0: it depends on each image's size).
  EncoderInfo info() const;
  int projector_dim() const;  // width of the embeddings (the LLM's n_embd_inp)
  bool uses_mrope() const;    // images are placed on an M-RoPE grid in the LLM
  static const char* marker();  // the media marker prompts use (mtmd_default_marker())

  // Splits `text` (with one marker() per image) and the images into chunks, as llama-mtmd-cli does
  // (add_special: BOS on the first chunk where the tokenizer adds one; image begin / end tokens of the family).
  // Throws InputError when the number of markers and images differ.
  MtmdPrompt tokenize(const std::string& text, std::span<const RgbImage> images, bool add_special = true) const;

  // Encodes image chunk `chunk` of `prompt`: features = the LLM-input embeddings [grid_h*grid_w x
  // projector_dim()] in raster order (projected_features = true), and the taps `needs` asks for, per LLM token.
  // Throws Error for a text chunk, a failed encode or non-finite output.
  EncoderResult encode(const MtmdPrompt& prompt, size_t chunk, const Needs& needs);
  // Throws InputError for what the taps cannot give on this family (a CLS row without CLS, keys, full maps,
  // a block outside the model).
  void check(const Needs& needs) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The attention each key receives, mean over heads and all queries, of softmax(Q K^T * scale) for one block:
// q, k laid out [tokens][heads][head_dim] (ggml's [head_dim, heads, tokens]). Computed with ggml on the CPU in
// blocks of queries (memory O(tokens x block x heads)); `threads` CPU threads. Exposed for tests.
std::vector<float> received_attention(std::span<const float> q, std::span<const float> k, int64_t tokens, int heads,
                                      int head_dim, float scale, int threads);

}  // namespace vtprune::vision
