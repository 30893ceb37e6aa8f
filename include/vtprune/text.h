// CLIP's text tower and tokenizer, for prompt-conditioned reduction (CDPruner's relevance): what
// `CLIPTokenizerFast` + `CLIPTextModelWithProjection` + `visual_projection` compute in Hugging Face transformers,
// from the same files (model.safetensors, config.json, vocab.json, merges.txt of a CLIP checkpoint such as
// openai/clip-vit-large-patch14-336, the tower LLaVA-1.5 uses).
//
// How CDPruner feeds its reducer (Theia-4869/CDPruner@9541616 clip_encoder.py:62-99), and how to do the same:
//   text_embeds  = model.text_embeds(question)                      [M x C], M = segments of 77 tokens
//   image_embeds = model.image_embeds(layer -2 patch features)      [N x C], the features LLaVA projects
// then EncoderOutput::text_embeds / image_embeds point at them (reduce.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "vtprune/reduce.h"

namespace vtprune::text {

// CLIP's byte-level BPE tokenizer, as CLIPTokenizerFast: NFC is NOT applied (see below), every run of white
// space becomes one space, the text is lower-cased (full Unicode mappings); the special strings
// <|startoftext|> / <|endoftext|> map to their ids; the rest splits by CLIP's regex
//   's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
// into words, each word's UTF-8 bytes become GPT-2's byte-to-unicode characters, "</w>" is appended to its
// last character, and BPE merges (by rank in merges.txt) join characters into vocabulary pieces. Output:
// <|startoftext|> ids... <|endoftext|>. Pieces missing from the vocabulary become <|endoftext|> (CLIP's unk).
// Differences from transformers: no NFC composition (decomposed input such as "e" + U+0301 keeps two code
// points, where the fast tokenizer composes them); malformed UTF-8 becomes U+FFFD.
class ClipTokenizer {
 public:
  // vocab.json ({"piece": id}) and merges.txt ("#version" line, then "a b" per line). At most the first
  // 48894 merges are used, as CLIP's tokenizer reads them (merges[1 : 49152 - 256 - 2 + 1]).
  static ClipTokenizer load(const std::filesystem::path& vocab_json, const std::filesystem::path& merges_txt);
  // dir/vocab.json + dir/merges.txt
  static ClipTokenizer load_dir(const std::filesystem::path& dir);

  std::vector<int32_t> encode(std::string_view text) const;  // with <|startoftext|> and <|endoftext|>
  // The pieces of `text` before the id lookup (no specials added), for debugging and tests.
  std::vector<std::string> pieces(std::string_view text) const;

  int32_t bos_id() const { return bos_; }  // <|startoftext|> (49406 in CLIP's vocabulary)
  int32_t eos_id() const { return eos_; }  // <|endoftext|> (49407)
  size_t vocab_size() const { return vocab_.size(); }

 private:
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int32_t> ranks_;  // "a b" -> merge rank
  int32_t bos_ = -1, eos_ = -1;
  std::string source_;
  std::vector<std::string> bpe(const std::string& word) const;
};

// Token ids cut into rows of `length` (CLIP's 77 positions), the last row zero-padded, as clip_encoder.py does:
// segments = (n - 1) // length + 1; mask = 1 on real tokens, 0 on padding.
struct TokenSegments {
  std::vector<int32_t> ids;   // [count x length]
  std::vector<uint8_t> mask;  // [count x length]
  int64_t count = 0;
  int64_t length = 0;
};
TokenSegments split_segments(std::span<const int32_t> ids, int64_t length);

// Row-major float rows with their shape (owning).
struct Embeddings {
  std::vector<float> data;
  int64_t rows = 0;
  int64_t cols = 0;
  MatrixView view() const { return {data, rows, cols}; }
};

struct ClipTextModelImpl;

// The text tower (+ optionally the image-side projection) of a Hugging Face CLIP checkpoint, run with ggml on the
// CPU or a device (load's `device`). Tensors (any common prefix): text_model.embeddings.{token,position}_embedding.weight,
// text_model.encoder.layers.N.{layer_norm1,self_attn.{q,k,v,out}_proj,layer_norm2,mlp.fc1,mlp.fc2}.*,
// text_model.final_layer_norm.*, text_projection.weight; image side: vision_model.post_layernorm.*,
// visual_projection.weight. config.json (CLIPConfig or CLIPTextConfig, optional): heads, layer_norm_eps,
// hidden_act (quick_gelu or gelu), eos_token_id. Forward as CLIPTextTransformer: token + position embeddings,
// pre-LN blocks with a causal mask (and the padding mask), final LN, the hidden state at the pooling position
// (argmax of the ids when eos_token_id is 2, the legacy value in the original CLIP configs; otherwise the first
// eos_token_id), times text_projection. Not safe for concurrent calls on one object.
class ClipTextModel {
 public:
  // `path`: a .safetensors file, or a folder with model.safetensors (+ config.json). The tokenizer comes from
  // vocab.json + merges.txt beside the file (required for text_embeds(string)).
  // `device`: where its graphs run ("cpu", "gpu" or a ggml device name: vtprune::resolve_device).
  static ClipTextModel load(const std::filesystem::path& path, const std::string& device = "cpu");
  ClipTextModel(ClipTextModel&&) noexcept;
  ClipTextModel& operator=(ClipTextModel&&) noexcept;
  ~ClipTextModel();

  int width() const;            // text hidden size (768 for ViT-L/14)
  int heads() const;
  int layers() const;
  int context_length() const;   // max_position_embeddings (77)
  int vocab_size() const;
  int embed_dim() const;        // projection width C (768 for ViT-L/14)
  bool has_tokenizer() const;
  const ClipTokenizer& tokenizer() const;  // throws Error when vocab.json / merges.txt were not found
  bool has_image_projection() const;       // post_layernorm + visual_projection present
  int vision_width() const;                // input width of image_embeds (1024 for ViT-L/14), 0 without

  // CDPruner's text_embeds of `text`: tokenised, cut into context_length() segments, one row per segment.
  Embeddings text_embeds(std::string_view text, int threads = 1) const;
  // The same for token ids (already with <|startoftext|> / <|endoftext|>).
  Embeddings encode_ids(std::span<const int32_t> ids, int threads = 1) const;
  // visual_projection(post_layernorm(features)) for patch features [N x vision_width()] (LLaVA: the layer -2
  // patch features, CLS excluded): [N x embed_dim()].
  Embeddings image_embeds(const MatrixView& features, int threads = 1) const;

 private:
  explicit ClipTextModel(std::unique_ptr<ClipTextModelImpl> impl);
  std::unique_ptr<ClipTextModelImpl> impl_;
};

// ---- random checkpoints (tests, `make-test-model`): the exact tensor names, shapes and files of a Hugging Face
// CLIP checkpoint at a small size, with a CLIP-style vocabulary (256 byte characters, the same + "</w>", 6 merges,
// <|startoftext|> = 518, <|endoftext|> = 519).
constexpr int kRandomClipVocab = 520;
struct RandomClipShape {
  int width = 32, heads = 4, ffn = 64, layers = 2;
  int context = 16;       // positions (CLIP: 77)
  int embed = 16;         // projection width C
  int vision_width = 24;  // input width of visual_projection; 0: no image side
  int64_t eos_token_id = 2;  // config.json's (2: the legacy argmax pooling of the original CLIP configs)
};
struct ClipTensor {
  std::vector<int64_t> shape;  // torch order
  std::vector<float> data;
};
using ClipTensors = std::map<std::string, ClipTensor>;
// Normal random weights (layer-norm gains around 1) for `shape`.
ClipTensors random_clip_tensors(const RandomClipShape& shape, uint64_t seed);
// dir/model.safetensors (F32), config.json, vocab.json, merges.txt.
void write_clip_checkpoint(const std::filesystem::path& dir, const ClipTensors& tensors, const RandomClipShape& shape);
void write_random_clip_tokenizer(const std::filesystem::path& dir);  // vocab.json + merges.txt only

}  // namespace vtprune::text
