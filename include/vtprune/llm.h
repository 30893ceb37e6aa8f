// vtprune::llm — a thin, honest wrapper over libllama for LLaVA-style generation.
//
// A prompt is a list of chunks: text (tokenised by the model's vocabulary), token ids, or rows of input
// embeddings (projected image tokens), decoded with contiguous positions, so pruned image tokens are
// renumbered, as the reference implementations do. A mixed prompt is one batch of embedding rows where the
// architecture allows it (SessionParams::text_as_embeddings), else one llama_decode per chunk.
// Every failure is a vtprune::Error naming the file, the chunk and the shapes involved.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/reduce.h"  // vtprune::Error

namespace vtprune::llm {

struct SessionParams {
  int n_ctx = 4096;     // context length in tokens; 0 = the model's training context
  int n_batch = 2048;   // logical = physical batch; keep it >= image tokens so one image is one ubatch
  int threads = 0;      // 0 = std::thread::hardware_concurrency()
  bool verbose = false; // forward libllama / ggml log lines to stderr (default: captured, shown only in errors)
  // A prompt that mixes text and embedding rows is decoded as ONE batch of embeddings: text tokens are
  // looked up in the file's token_embd table (dequantised as ggml_get_rows does), which is exactly what the
  // model's input layer computes. libllama cannot mix tokens and embeddings in one batch, and three small
  // decodes (prefix, image, suffix) stream every weight three times. Used for `llama`-architecture files,
  // whose input layer is that lookup alone; false (or other architectures): one decode per chunk.
  bool text_as_embeddings = true;
};

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus sampling when temperature > 0 and top_p < 1
  uint32_t seed = 0;         // same seed, same prompt, same model -> same tokens
  int max_tokens = 256;      // stop after this many generated tokens (llama.cpp's -n); <= 0: prefill only
};

// One piece of a prompt. Build with the factory functions.
struct Chunk {
  enum class Kind { text, tokens, embeddings };
  Kind kind = Kind::text;
  std::string text;              // Kind::text
  std::vector<int32_t> tokens;   // Kind::tokens
  std::vector<float> embeddings; // Kind::embeddings: row-major [n_rows x n_embd_inp]
  int64_t n_rows = 0;

  static Chunk from_text(std::string text);
  static Chunk from_tokens(std::vector<int32_t> tokens);
  static Chunk from_embeddings(std::vector<float> rows, int64_t n_rows);
};

// Wall-clock cost of decoding one chunk (llama_synchronize after every decode, so it is real).
struct ChunkTiming {
  Chunk::Kind kind = Chunk::Kind::text;
  int n_tokens = 0;
  double ms = 0.0;
};

struct PrefillResult {
  int n_tokens = 0;                  // prompt length in positions (text tokens incl. BOS + embedding rows)
  double ms = 0.0;                   // tokenisation + all prefill decodes
  // One per decode group, in order: one per prompt chunk, or a single `embeddings` entry covering the whole
  // prompt when it was decoded as one batch (single_batch).
  std::vector<ChunkTiming> chunks;
  bool single_batch = false;
  int64_t kv_bytes = 0;              // llama_state_seq_get_size(ctx, 0) after prefill
};

enum class StopReason { eog, max_tokens, context_full };

struct GenerationResult {
  std::string text;                  // concatenated pieces (may end inside a UTF-8 sequence only if cut by -n)
  std::vector<int32_t> tokens;       // generated token ids (EOG not included)
  StopReason stop = StopReason::max_tokens;
  int n_prompt_tokens = 0;
  int n_generated = 0;
  double prefill_ms = 0.0;
  double ttft_ms = 0.0;              // prefill start -> first sampled token
  double decode_ms = 0.0;            // single-token decodes (+ sampling) after the first token
  double decode_tok_s = 0.0;         // decoded tokens / decode_ms (0 when nothing was decoded)
  std::vector<ChunkTiming> chunks;
  int64_t kv_bytes = 0;              // measured after prefill (llama_state_seq_get_size)
  int64_t kv_bytes_analytic = 0;     // 2 x n_layer x n_embd_k_gqa x sizeof(F16) x n_prompt_tokens
};

// Receives each generated token's text as soon as it is sampled (a byte-level piece may be part of a
// UTF-8 character).
using PieceCallback = std::function<void(std::string_view piece)>;

// An open model + context. Move-only; one sequence (seq 0); each prefill() / generate() starts from an
// empty KV cache. One thread at a time per session; different sessions may run on different threads
// (each one's libllama log lines reach only its own error messages).
class Session {
 public:
  // Loads any GGUF libllama can load (any quantisation). Throws Error for a missing / unreadable / corrupt
  // file or a context that cannot be created; the message includes libllama's own error lines. Defects
  // libllama would abort on (block_count outside 1..512, integer weight tensors) are checked first.
  Session(const std::string& model_path, const SessionParams& params = {});
  ~Session();
  // Another session on the same loaded model (weights in memory once) with its own context and KV cache:
  // use the two from different threads at once. The model lives as long as any session on it does.
  Session share() const;

  Session(Session&&) noexcept;
  Session& operator=(Session&&) noexcept;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  const std::string& model_path() const;
  int n_embd_inp() const;   // width every embeddings chunk must have
  int n_embd() const;
  int n_layer() const;
  int n_head() const;
  int n_head_kv() const;
  int n_vocab() const;
  int n_ctx() const;        // the enforced context: the requested n_ctx (libllama may allocate a little more)
  int n_batch() const;
  int32_t bos() const;      // -1 when the vocabulary has none
  int32_t eos() const;
  // Bytes the KV cache holds per token (F16 K and V, all layers): 2 x n_layer x n_embd_k_gqa x 2.
  int64_t kv_bytes_per_token() const;
  // Whether a mixed text + embeddings prompt is decoded as one batch (see SessionParams).
  bool decodes_text_as_embeddings() const;

  std::vector<int32_t> tokenize(std::string_view text, bool add_special) const;
  std::string token_to_piece(int32_t token) const;
  std::string detokenize(std::span<const int32_t> tokens) const;

  // Clears the KV cache and decodes the prompt; logits are computed for the last position only.
  // Throws Error for a wrong embedding width, an empty prompt, a prompt longer than n_ctx, or a failed decode.
  PrefillResult prefill(std::span<const Chunk> prompt);
  // Logits of the last prompt (or generated) position, n_vocab floats.
  std::vector<float> last_logits() const;

  // prefill(), then sample until EOG, max_tokens, or a full context.
  GenerationResult generate(std::span<const Chunk> prompt, const SamplingParams& sampling = {},
                            const PieceCallback& on_piece = {});

 private:
  struct Impl;
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- LLaVA-1.5 prompt (conv_vicuna_v1 / llava_v1, mm_use_im_start_end = false) -----------------------

inline constexpr std::string_view kLlava15System =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.";
inline constexpr std::string_view kImageMarker = "<image>";

// The prompt string exactly as LLaVA builds it, without BOS:
//   "{system} USER: <image>\n{question} ASSISTANT:"
// If the question already contains <image> markers they are used as they are; otherwise one "<image>\n"
// per image is put before the question (n_images = 0 gives a text-only prompt).
std::string llava15_prompt_text(std::string_view question, int n_images = 1);

// The same prompt as chunks: text before the first marker (BOS is added by the tokenizer for the first
// chunk), then each image's embeddings ([n_rows x n_embd_inp], in marker order), then the text between /
// after markers (tokenised without BOS; under SentencePiece the suffix starts with "▁" "<0x0A>").
// Throws Error when the number of markers differs from images.size().
std::vector<Chunk> llava15_prompt(std::string_view question, std::vector<Chunk> images);

// ---- Random-weight LLaMA GGUF files for tests and benchmarks -----------------------------------------

enum class WeightType { f32, f16, q8_0, q4_0 };
WeightType parse_weight_type(std::string_view name);  // "f32" | "f16" | "q8_0" | "q4_0"; throws Error
std::string_view to_string(WeightType type);

struct TestLlmShape {
  std::string name;
  int n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_vocab = 0, n_ctx_train = 0;
};
// "tiny" (64/128/2 layers/4 heads/4 kv/1024 vocab), "tinyllama" (2048/5632/22/32/4/32000),
// "llava-7b" (4096/11008/32/32/32/32000). Throws Error for other names.
TestLlmShape test_llm_shape(std::string_view name);

// Writes a `llama` GGUF with exactly LLaMA's tensor set and llama.* metadata, random N(0, 0.02)-like
// weights (norms = 1), 2-D weights in `type`, norms in F32, and a small real SentencePiece-style vocabulary
// (<unk> <s> </s>, 256 byte tokens, "▁" + English pieces, padded with unused tokens to n_vocab).
// Tensor data is generated and written one tensor at a time, so a 7B file never sits in memory.
void write_test_llm(const std::string& path, const TestLlmShape& shape, uint64_t seed = 0,
                    WeightType type = WeightType::f16);

// Rows of a model's token_embd.weight for `tokens`, dequantised to F32 ([tokens.size() x n_embd]): what the
// model's own input layer would compute. For tests and diagnostics.
std::vector<float> read_token_embeddings(const std::string& model_path, std::span<const int32_t> tokens);

}  // namespace vtprune::llm
