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
#include <utility>
#include <vector>

#include "vtprune/reduce.h"  // vtprune::Error

struct llama_model;

namespace vtprune::llm {

struct SessionParams {
  int n_ctx = 4096;     // context length in tokens; 0 = the model's training context
  int n_batch = 2048;   // logical = physical batch; keep it >= image tokens so one image is one ubatch
  int threads = 0;      // 0 = std::thread::hardware_concurrency()
  bool verbose = false; // forward libllama / ggml log lines to stderr (default: captured, shown only in errors)
  // Layers offloaded to the GPU (llama.cpp's -ngl) when llama.cpp was built with a GPU backend; 0 = CPU only,
  // -1 = all. Ignored (with everything on the CPU) by a CPU-only build.
  int n_gpu_layers = 0;
  // ggml RPC servers ("host:port", llama.cpp's --rpc): offloaded layers go to them (builds with GGML_RPC).
  std::vector<std::string> rpc_servers;
  // A prompt that mixes text and embedding rows is decoded as ONE batch of embeddings: text tokens are
  // looked up in the file's token_embd table (dequantised as ggml_get_rows does), which is exactly what the
  // model's input layer computes. libllama cannot mix tokens and embeddings in one batch, and three small
  // decodes (prefix, image, suffix) stream every weight three times. Used for `llama`-architecture files,
  // whose input layer is that lookup alone; false (or other architectures): one decode per chunk.
  bool text_as_embeddings = true;
  // llama.cpp's -fa for the LLM context: -1 auto (llama.cpp's default), 0 off, 1 on (llama_flash_attn_type).
  int flash_attn = -1;
};

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus sampling when temperature > 0 and top_p < 1
  uint32_t seed = 0;         // same seed, same prompt, same model -> same tokens
  int max_tokens = 256;      // stop after this many generated tokens (llama.cpp's -n); <= 0: prefill only
  // OpenAI's penalties over the tokens generated so far (libllama's penalties sampler, first in the chain):
  // logit -= frequency_penalty * count + presence_penalty * (count > 0). 0 = off.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;  // (token, bias) added to its logit before anything else
  // Generation ends where the text first contains one of these; the stop string and what follows it are not
  // part of the text, and text that could be the start of one is held back from the piece callback until it
  // is known not to be (so a stop string never reaches a client, even split across tokens).
  std::vector<std::string> stop;
  // -1: none; 0..20: every generated token's log probability (log-softmax of the model's logits, before any
  // penalty or bias) and that many most likely alternatives.
  int top_logprobs = -1;
};

// One piece of a prompt. Build with the factory functions.
//
// Positions: a chunk starts at position p0 (where the previous chunk's span ended). Text, tokens and plain
// embedding rows sit at p0, p0 + 1, ... (what 1-D models need: pruned image tokens are renumbered). An image
// chunk of an M-RoPE model (Qwen2-VL / 2.5-VL) places row r at (t, y, x) = (p0, p0 + grid_y[r], p0 + grid_x[r])
// and spans max(grid height, grid width) positions, exactly as llama.cpp's mtmd helper decodes an image
// (MTMD_POS_TYPE_MROPE): pruned rows keep their own position and the text after the image keeps the position it
// had before pruning, as HiPrune's Qwen code does. Text under M-RoPE sits at (p, p, p) on the three axes.
struct Chunk {
  enum class Kind { text, tokens, embeddings };
  Kind kind = Kind::text;
  std::string text;              // Kind::text
  std::vector<int32_t> tokens;   // Kind::tokens
  std::vector<float> embeddings; // Kind::embeddings: row-major [n_rows x n_embd_inp]
  int64_t n_rows = 0;
  // Kind::embeddings on an M-RoPE grid: each row's offsets from p0 on the height / width axes (empty: 1-D).
  std::vector<int32_t> grid_y, grid_x;
  int32_t span = 0;              // positions the chunk occupies (0: one per row)
  // Kind::embeddings: decode the rows with the causal mask off, so they attend to each other (Gemma 3's image
  // block, as llama.cpp's mtmd helper decodes it); they must fit one batch (n_batch).
  bool non_causal = false;

  // Identity of an embeddings chunk for prefix reuse (Session::prefill with reuse_prefix): two chunks with the
  // same non-empty key hold the same rows (e.g. a digest of the image bytes and of how they were reduced).
  // Empty: the rows are never taken from the KV cache.
  std::string key;

  static Chunk from_text(std::string text);
  static Chunk from_tokens(std::vector<int32_t> tokens);
  static Chunk from_embeddings(std::vector<float> rows, int64_t n_rows);
  // Rows of an image on an M-RoPE grid (see above); `span` = max(grid height, grid width) of the unpruned grid.
  static Chunk from_grid_embeddings(std::vector<float> rows, int64_t n_rows, std::vector<int32_t> grid_y,
                                    std::vector<int32_t> grid_x, int32_t span);
  // Positions this chunk advances the prompt by (its span, or its row / token count).
  bool on_grid() const { return !grid_y.empty(); }
};

// Wall-clock cost of decoding one chunk (llama_synchronize after every decode, so it is real).
struct ChunkTiming {
  Chunk::Kind kind = Chunk::Kind::text;
  int n_tokens = 0;
  double ms = 0.0;
};

struct PrefillResult {
  int n_tokens = 0;                  // prompt length in KV cells (text tokens incl. BOS + embedding rows)
  int n_positions = 0;               // position of the first generated token (= n_tokens unless M-RoPE grids span more or less)
  int n_reused = 0;                  // leading prompt rows kept from the KV cache (prefix reuse), not decoded again
  double ms = 0.0;                   // tokenisation + all prefill decodes
  // One per decode group, in order: one per prompt chunk, or a single `embeddings` entry covering the whole
  // prompt when it was decoded as one batch (single_batch).
  std::vector<ChunkTiming> chunks;
  bool single_batch = false;
  int64_t kv_bytes = 0;              // llama_state_seq_get_size(ctx, 0) after prefill
};

enum class StopReason { eog, max_tokens, context_full, stop_sequence };

// One generated token's log probability (SamplingParams::top_logprobs >= 0).
struct TokenLogprob {
  int32_t token = -1;
  std::string piece;                            // its text (may be part of a UTF-8 character)
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top;   // the most likely tokens at this step, best first
};

struct GenerationResult {
  std::string text;                  // concatenated pieces (may end inside a UTF-8 sequence only if cut by -n)
  std::vector<int32_t> tokens;       // generated token ids (EOG not included)
  StopReason stop = StopReason::max_tokens;
  std::string stop_sequence;         // the stop string that ended generation (StopReason::stop_sequence)
  // Per token whose text (or part of it) is in `text`, when SamplingParams::top_logprobs >= 0.
  std::vector<TokenLogprob> logprobs;
  int n_prompt_tokens = 0;
  int n_cached_tokens = 0;           // prompt rows taken from the KV cache (PrefillResult::n_reused)
  int n_generated = 0;
  double prefill_ms = 0.0;
  double ttft_ms = 0.0;              // prefill start -> first sampled token
  double decode_ms = 0.0;            // single-token decodes (+ sampling) after the first token
  double decode_tok_s = 0.0;         // decoded tokens / decode_ms (0 when nothing was decoded)
  std::vector<ChunkTiming> chunks;
  int64_t kv_bytes = 0;              // measured after prefill (llama_state_seq_get_size)
  int64_t kv_bytes_analytic = 0;     // 2 x n_layer x n_embd_k_gqa x sizeof(F16) x n_prompt_tokens
};

struct ChatMessage {
  std::string role;     // system | user | assistant
  std::string content;  // text; media markers (mtmd_default_marker()) where images go
};

// What is wrong with one message of a conversation (a client's fault): `index` into the messages given, the
// message's `field` ("role", "content") and a machine-readable `code`, so that a server can name
// messages[index].field.
class MessageError : public InputError {
 public:
  MessageError(size_t index, std::string field, std::string code, const std::string& message)
      : InputError(message), index_(index), field_(std::move(field)), code_(std::move(code)) {}
  size_t index() const { return index_; }
  const std::string& field() const { return field_; }
  const std::string& code() const { return code_; }

 private:
  size_t index_;
  std::string field_, code_;
};

// A GGUF chat template with what rendering it needs from the vocabulary.
struct ChatTemplate {
  std::string source;     // tokenizer.chat_template (Jinja); llama.cpp's ChatML default when the file has none
  std::string bos, eos;   // the BOS / EOS token texts (bos_token / eos_token in the template)
  bool add_bos = false;   // the tokenizer adds BOS itself: a rendered leading BOS text is dropped
  bool add_eos = false;
};

// Receives each generated token's text as soon as it is sampled (a byte-level piece may be part of a
// UTF-8 character).
using PieceCallback = std::function<void(std::string_view piece)>;

// An open model + context. Move-only; one sequence (seq 0); each prefill() / generate() starts from an
// empty KV cache, unless asked to reuse the prefix it shares with what the cache holds (prompt caching).
// One thread at a time per session; different sessions may run on different threads (each one's libllama log
// lines reach only its own error messages).
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
  // Whether the model uses M-RoPE (4 position values per token: Qwen2-VL / 2.5-VL), so image chunks may sit on
  // a grid (Chunk::from_grid_embeddings).
  bool uses_mrope() const;
  // The loaded libllama model, for libmtmd (mtmd_init_from_file needs the text model). Lives as long as this
  // session or any session shared from it.
  const llama_model* llama_model_handle() const;

  // The file's chat template (ChatML when it has none, as llama.cpp falls back to) and its BOS / EOS texts.
  ChatTemplate chat_template() const;

  std::vector<int32_t> tokenize(std::string_view text, bool add_special) const;
  // The model's input embeddings of `tokens` (token_embd rows, dequantised as ggml_get_rows does):
  // [tokens.size() x n_embd_inp]. Throws Error for a token outside the vocabulary or an architecture whose
  // input layer is more than that lookup.
  std::vector<float> embed_tokens(std::span<const int32_t> tokens) const;
  std::string token_to_piece(int32_t token) const;
  std::string detokenize(std::span<const int32_t> tokens) const;

  // Clears the KV cache and decodes the prompt; logits are computed for the last position only.
  // Throws Error for a wrong embedding width, an empty prompt, a prompt longer than n_ctx, or a failed decode.
  //
  // reuse_prefix: the session remembers what its KV cache holds row by row (the last prompt and the tokens
  // generated after it: token ids, or an embeddings chunk's key and row, each with its position values). The
  // longest leading run of this prompt's rows equal to those (same identity, same positions) stays in the
  // cache (llama_memory_seq_rm drops the rest) and only the remaining rows are decoded, at exactly the
  // positions a fresh prefill gives them. An embeddings chunk is kept whole or not at all, and at least the
  // last row is decoded again (for its logits). PrefillResult::n_reused counts the kept rows.
  PrefillResult prefill(std::span<const Chunk> prompt, bool reuse_prefix = false);
  // Logits of the last prompt (or generated) position, n_vocab floats.
  std::vector<float> last_logits() const;

  // prefill(), then sample until EOG, max_tokens, a stop string or a full context.
  GenerationResult generate(std::span<const Chunk> prompt, const SamplingParams& sampling = {},
                            const PieceCallback& on_piece = {}, bool reuse_prefix = false);

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

// A whole conversation as LLaVA renders it: Conversation.get_prompt() of conv_llava_v1 (SeparatorStyle.TWO,
// sep " ", sep2 "</s>") with the generation turn (ASSISTANT, None) appended:
//   system + " " + for each turn i: ROLE + ": " + content + (i even ? " " : "</s>") + "ASSISTANT:"
// ROLE is USER or ASSISTANT. A leading `system` (or `developer`) message replaces the default system prompt, as
// LLaVA's Conversation.system does (kLlava15System otherwise). Turns must alternate user / assistant, starting
// and ending with user; content is used as given (<image> markers where images go). Throws MessageError naming the
// message (messages[i].role) for any other shape: LLaVA's template has no place for it.
std::string llava15_conversation_text(std::span<const ChatMessage> messages);
// The same as chunks: the text split at <image> markers around `images` (in marker order), and every "</s>"
// separator as the token `eos` (what LLaVA's tokenizer makes of it; text is tokenised without parsing special
// tokens, so a user's literal "</s>" stays text). Throws InputError when markers and images differ in number.
std::vector<Chunk> llava15_conversation(std::span<const ChatMessage> messages, std::vector<Chunk> images, int32_t eos);

// ---- The model file's own chat template (every family but LLaVA-1.5) ----------------------------------

// Renders a conversation exactly as llama.cpp's common_chat_templates_apply does for plain messages (no tools):
// llama.cpp's own Jinja engine (common/jinja), messages normalised to what the template accepts (string or typed
// content), `developer` mapped to `system`, a system message merged into the next one when the template has no
// system role, bos_token / eos_token / add_generation_prompt / enable_thinking = true / datetime / date_string
// as context. Throws Error for a template that does not parse or render (naming the cause).
std::string render_chat(const ChatTemplate& chat_template, std::span<const ChatMessage> messages,
                        bool add_generation_prompt = true);

// ---- Random-weight LLaMA GGUF files for tests and benchmarks -----------------------------------------

enum class WeightType { f32, f16, q8_0, q4_0 };
WeightType parse_weight_type(std::string_view name);  // "f32" | "f16" | "q8_0" | "q4_0"; throws Error
std::string_view to_string(WeightType type);

// Which of llama.cpp's layouts a test LLM has.
//   llama:   LLaMA (llama.* metadata, SentencePiece vocabulary); LLaVA-1.5's language model.
//   qwen2vl: Qwen2.5-VL's language model as llama.cpp's converter writes it: Qwen2 blocks with q/k/v biases,
//            tied embeddings, M-RoPE (qwen2vl.rope.dimension_sections, Qwen's [16, 24, 24, 0] scaled to the
//            head width), rope base 1e6, RMS eps 1e-6, GPT-2 byte-level BPE (pre "qwen2") whose merges make
//            common English words single tokens, Qwen2.5-VL's 22 special tokens at n_vocab - 293 ..
//            (151643.. in a 151936-token vocabulary, their real ids), eos <|im_end|>, bos = pad =
//            <|endoftext|>, no BOS added, and Qwen2.5-VL-Instruct's chat template.
//   gemma3:  Gemma 3's language model (Gemma3Model in llama.cpp's converter): q/k RMS norms, post-attention and
//            post-FFN norms, GELU-gated FFN, tied embeddings, head width key_length (not n_embd / n_head),
//            sliding-window attention (1024, every 6th layer global) with rope bases 1e6 / 1e4 and linear rope
//            scaling 8 on the global layers, RMS eps 1e-6; a SentencePiece-style vocabulary with Gemma's
//            <pad> <eos> <bos> <unk> and the turn / image control tokens, no space prefix, and Gemma 3's chat
//            template.
//   smolvlm: the `llama` architecture (SmolLM2, SmolVLM's language model) with a SentencePiece-style vocabulary
//            holding SmolVLM's added tokens (<|im_start|>, <end_of_utterance>, <fake_token_around_image>,
//            <global-img>, <row_i_col_j>) and SmolVLM-Instruct's chat template. (The real files use SmolLM2's BPE;
//            the vocabulary's kind changes nothing vtprune does with the file.)
enum class TestLlmArch { llama, qwen2vl, gemma3, smolvlm };

struct TestLlmShape {
  std::string name;
  int n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, n_vocab = 0, n_ctx_train = 0;
  TestLlmArch arch = TestLlmArch::llama;
  int head_dim = 0;  // 0: n_embd / n_head (Gemma 3 sets its own)
};
// "tiny" (64/128/2 layers/4 heads/4 kv/1024 vocab), "tinyllama" (2048/5632/22/32/4/32000),
// "llava-7b" (4096/11008/32/32/32/32000); qwen2vl: "qwen2.5-vl" (64/128/2/4/2/2048, context 4096) and
// "qwen2.5-vl-3b" (Qwen2.5-VL-3B-Instruct: 2048/11008/36/16/2/151936, context 128000); gemma3: "gemma3"
// (64/128/2/4/2/1024, head 16, context 4096) and "gemma3-4b" (Gemma-3-4B-it: 2560/10240/34/8/4/262208, head 256,
// context 131072); smolvlm: "smolvlm" (64/128/2/4/2/2048, context 8192). Throws Error for other names.
TestLlmShape test_llm_shape(std::string_view name);

// Writes a GGUF in `shape.arch`'s layout: `llama` with exactly LLaMA's tensor set and llama.* metadata, random
// N(0, 0.02)-like weights (norms = 1), 2-D weights in `type`, norms in F32, and a small real SentencePiece-style
// vocabulary (<unk> <s> </s>, 256 byte tokens, "▁" + English pieces, padded with unused tokens to n_vocab);
// `qwen2vl` as TestLlmArch describes, with block matrices ~ 1/sqrt(fan_in) (so that the next token depends on
// the whole prompt, image included), F32 biases, and zero embedding rows for the unused [PAD] ids.
// Tensor data is generated and written one tensor at a time, so a 7B file never sits in memory.
void write_test_llm(const std::string& path, const TestLlmShape& shape, uint64_t seed = 0,
                    WeightType type = WeightType::f16);
// Only the GGUF header write_test_llm would write (all metadata and the tensor table, no tensor data):
// gguf_init_from_file(no_alloc) reads it, libllama cannot load it. For checking a multi-GB shape's layout.
void write_test_llm_header(const std::string& path, const TestLlmShape& shape, WeightType type = WeightType::f16);

// Rows of a model's token_embd.weight for `tokens`, dequantised to F32 ([tokens.size() x n_embd]): what the
// model's own input layer would compute. For tests and diagnostics.
std::vector<float> read_token_embeddings(const std::string& model_path, std::span<const int32_t> tokens);

}  // namespace vtprune::llm
