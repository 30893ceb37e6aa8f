// Random-weight LLaMA GGUF writer (exact LLaMA tensor set, llama.* metadata, small SentencePiece-style
// vocabulary) and a token_embd reader for tests.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "llama_handles.h"
#include "model_file.h"
#include "vtprune/llm.h"

namespace vtprune::llm {

namespace {

// ---- vocabulary --------------------------------------------------------------------------------------

// Enough English to tokenise LLaVA's system prompt, typical VQA questions and TinyStories-like text into
// word pieces instead of bytes.
constexpr std::array kWords = {
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "at", "is", "are", "was", "were", "be", "it", "this",
    "that", "there", "what", "which", "who", "how", "many", "much", "where", "why", "do", "does", "can", "you",
    "your", "i", "he", "she", "they", "we", "his", "her", "their", "with", "for", "from", "by", "as", "not", "no",
    "yes", "chat", "between", "curious", "human", "artificial", "intelligence", "assistant", "gives", "helpful",
    "detailed", "polite", "answers", "questions", "USER", "ASSISTANT", "A", "The", "What", "How", "Is", "Describe",
    "describe", "image", "picture", "photo", "color", "colour", "shown", "show", "see", "look", "left", "right",
    "top", "bottom", "people", "person", "man", "woman", "dog", "cat", "car", "table", "red", "blue", "green",
    "white", "black", "yellow", "big", "small", "one", "two", "three", "four", "Once", "upon", "time", "little",
    "girl", "boy", "named", "Lily", "Tom", "loved", "play", "outside", "park", "day", "saw", "ball", "happy",
    "said", "went", "very", "had", "like", "friend", "answer", "question", "word", "phrase", "single", "using",
};

struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

constexpr int32_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUnused = 5, kTypeByte = 6;
constexpr const char* kSpace = "\xE2\x96\x81";  // "▁", SentencePiece's whitespace

Vocabulary build_vocabulary(int n_vocab) {
  Vocabulary v;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string text, float score, int32_t type) {
    if (!seen.insert(text).second) return;
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  // Same fixed ids as LLaMA's tokenizer: <unk> 0, <s> 1, </s> 2, <0x00> 3 ... <0xFF> 258.
  add("<unk>", 0.0f, kTypeUnknown);
  add("<s>", 0.0f, kTypeControl);
  add("</s>", 0.0f, kTypeControl);
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    add(name, 0.0f, kTypeByte);
  }
  // Pieces: "▁", every printable ASCII character, then every prefix of "▁word" (shorter = higher score,
  // so SentencePiece's best-score-first merging always finds a path to the whole word).
  std::vector<std::string> pieces = {kSpace};
  for (char c = '!'; c <= '~'; ++c) pieces.emplace_back(1, c);
  std::vector<std::string> prefixes;
  for (const char* word : kWords) {
    const std::string full = std::string(kSpace) + word;
    for (size_t len = std::string(kSpace).size() + 1; len <= full.size(); ++len) prefixes.push_back(full.substr(0, len));
  }
  std::stable_sort(prefixes.begin(), prefixes.end(),
                   [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
  pieces.insert(pieces.end(), prefixes.begin(), prefixes.end());
  float score = -1.0f;
  for (auto& piece : pieces) add(std::move(piece), score--, kTypeNormal);

  if (static_cast<int>(v.tokens.size()) > n_vocab) {
    throw Error("test vocabulary needs " + std::to_string(v.tokens.size()) + " tokens but the shape has n_vocab " +
                std::to_string(n_vocab));
  }
  for (int id = static_cast<int>(v.tokens.size()); id < n_vocab; ++id) {
    add("<unused" + std::to_string(id) + ">", -1e9f, kTypeUnused);
  }
  return v;
}

// ---- random data -------------------------------------------------------------------------------------

// splitmix64: fast, seedable per tensor, so tensors can be generated block by block deterministically.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float symmetric() { return static_cast<float>(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }
};

constexpr float kWeightStd = 0.02f;

enum class Fill { random, ones };

struct TensorSpec {
  std::string name;
  int64_t ne0 = 0, ne1 = 1;  // ggml order: ne0 = input width (contiguous), ne1 = rows
  bool is_matrix = true;
  Fill fill = Fill::random;
};

ggml_type ggml_type_of(WeightType type) {
  switch (type) {
    case WeightType::f32: return GGML_TYPE_F32;
    case WeightType::f16: return GGML_TYPE_F16;
    case WeightType::q8_0: return GGML_TYPE_Q8_0;
    case WeightType::q4_0: return GGML_TYPE_Q4_0;
  }
  return GGML_TYPE_F32;
}

uint32_t llama_file_type_of(WeightType type) {
  switch (type) {
    case WeightType::f32: return LLAMA_FTYPE_ALL_F32;
    case WeightType::f16: return LLAMA_FTYPE_MOSTLY_F16;
    case WeightType::q8_0: return LLAMA_FTYPE_MOSTLY_Q8_0;
    case WeightType::q4_0: return LLAMA_FTYPE_MOSTLY_Q4_0;
  }
  return LLAMA_FTYPE_ALL_F32;
}

struct FileCloser {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

void write_bytes(std::FILE* file, const void* data, size_t size, const std::string& path, const std::string& what) {
  if (size > 0 && std::fwrite(data, 1, size, file) != size) {
    throw Error("write failed for " + path + " (" + what + "): disk full?");
  }
}

}  // namespace

WeightType parse_weight_type(std::string_view name) {
  if (name == "f32") return WeightType::f32;
  if (name == "f16") return WeightType::f16;
  if (name == "q8_0") return WeightType::q8_0;
  if (name == "q4_0") return WeightType::q4_0;
  throw Error("unknown weight type '" + std::string(name) + "' (known: f32, f16, q8_0, q4_0)");
}

std::string_view to_string(WeightType type) {
  switch (type) {
    case WeightType::f32: return "f32";
    case WeightType::f16: return "f16";
    case WeightType::q8_0: return "q8_0";
    case WeightType::q4_0: return "q4_0";
  }
  return "?";
}

TestLlmShape test_llm_shape(std::string_view name) {
  if (name == "tiny") return {"tiny", 64, 128, 2, 4, 4, 1024, 2048};
  if (name == "tinyllama") return {"tinyllama", 2048, 5632, 22, 32, 4, 32000, 2048};
  if (name == "llava-7b") return {"llava-7b", 4096, 11008, 32, 32, 32, 32000, 4096};
  throw Error("unknown test model shape '" + std::string(name) + "' (known: tiny, tinyllama, llava-7b)");
}

void write_test_llm(const std::string& path, const TestLlmShape& shape, uint64_t seed, WeightType type) {
  const ggml_type weight_type = ggml_type_of(type);
  const int64_t block = ggml_blck_size(weight_type);
  if (shape.n_embd <= 0 || shape.n_ff <= 0 || shape.n_layer <= 0 || shape.n_head <= 0 || shape.n_head_kv <= 0 ||
      shape.n_vocab <= 0 || shape.n_ctx_train <= 0 || shape.n_embd % shape.n_head != 0 ||
      shape.n_head % shape.n_head_kv != 0 || shape.n_embd % block != 0 || shape.n_ff % block != 0) {
    throw Error("invalid test LLM shape '" + shape.name + "': n_embd " + std::to_string(shape.n_embd) + ", n_ff " +
                std::to_string(shape.n_ff) + ", n_head " + std::to_string(shape.n_head) + ", n_head_kv " +
                std::to_string(shape.n_head_kv) + " (n_embd and n_ff must be multiples of " + std::to_string(block) +
                " for " + std::string(to_string(type)) + ")");
  }
  auto backend = detail::acquire_backend();
  const Vocabulary vocab = build_vocabulary(shape.n_vocab);
  const int64_t head_dim = shape.n_embd / shape.n_head;
  const int64_t n_embd_gqa = head_dim * shape.n_head_kv;

  detail::GgufContextPtr gguf(gguf_init_empty());
  gguf_context* g = gguf.get();
  gguf_set_val_str(g, "general.architecture", "llama");
  gguf_set_val_str(g, "general.name", ("vtprune-test-" + shape.name).c_str());
  gguf_set_val_u32(g, "general.file_type", llama_file_type_of(type));
  gguf_set_val_u32(g, "llama.vocab_size", static_cast<uint32_t>(shape.n_vocab));
  gguf_set_val_u32(g, "llama.context_length", static_cast<uint32_t>(shape.n_ctx_train));
  gguf_set_val_u32(g, "llama.embedding_length", static_cast<uint32_t>(shape.n_embd));
  gguf_set_val_u32(g, "llama.block_count", static_cast<uint32_t>(shape.n_layer));
  gguf_set_val_u32(g, "llama.feed_forward_length", static_cast<uint32_t>(shape.n_ff));
  gguf_set_val_u32(g, "llama.attention.head_count", static_cast<uint32_t>(shape.n_head));
  gguf_set_val_u32(g, "llama.attention.head_count_kv", static_cast<uint32_t>(shape.n_head_kv));
  gguf_set_val_u32(g, "llama.rope.dimension_count", static_cast<uint32_t>(head_dim));
  gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);
  gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
  gguf_set_val_str(g, "tokenizer.ggml.model", "llama");
  std::vector<const char*> token_texts;
  token_texts.reserve(vocab.tokens.size());
  for (const auto& t : vocab.tokens) token_texts.push_back(t.c_str());
  gguf_set_arr_str(g, "tokenizer.ggml.tokens", token_texts.data(), token_texts.size());
  gguf_set_arr_data(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, vocab.scores.data(), vocab.scores.size());
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
  gguf_set_val_u32(g, "tokenizer.ggml.unknown_token_id", 0);
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", 1);
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", 2);
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", true);
  gguf_set_val_bool(g, "tokenizer.ggml.add_eos_token", false);

  // LLaMA's tensor set, in llama.cpp's conversion order.
  std::vector<TensorSpec> specs;
  specs.push_back({"token_embd.weight", shape.n_embd, shape.n_vocab});
  for (int il = 0; il < shape.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    specs.push_back({p + "attn_norm.weight", shape.n_embd, 1, false, Fill::ones});
    specs.push_back({p + "attn_q.weight", shape.n_embd, shape.n_embd});
    specs.push_back({p + "attn_k.weight", shape.n_embd, n_embd_gqa});
    specs.push_back({p + "attn_v.weight", shape.n_embd, n_embd_gqa});
    specs.push_back({p + "attn_output.weight", shape.n_embd, shape.n_embd});
    specs.push_back({p + "ffn_norm.weight", shape.n_embd, 1, false, Fill::ones});
    specs.push_back({p + "ffn_gate.weight", shape.n_embd, shape.n_ff});
    specs.push_back({p + "ffn_up.weight", shape.n_embd, shape.n_ff});
    specs.push_back({p + "ffn_down.weight", shape.n_ff, shape.n_embd});
  }
  specs.push_back({"output_norm.weight", shape.n_embd, 1, false, Fill::ones});
  specs.push_back({"output.weight", shape.n_embd, shape.n_vocab});

  // Tensor descriptors only (no_alloc): the data is generated and appended one tensor at a time.
  ggml_init_params meta_params{ggml_tensor_overhead() * (specs.size() + 1), nullptr, /*no_alloc=*/true};
  detail::GgmlContextPtr meta(ggml_init(meta_params));
  if (!meta) throw Error("ggml_init failed while preparing " + path);
  for (const TensorSpec& spec : specs) {
    ggml_tensor* t = spec.is_matrix ? ggml_new_tensor_2d(meta.get(), weight_type, spec.ne0, spec.ne1)
                                    : ggml_new_tensor_1d(meta.get(), GGML_TYPE_F32, spec.ne0);
    ggml_set_name(t, spec.name.c_str());
    gguf_add_tensor(g, t);
  }

  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (!gguf_write_to_file(g, path.c_str(), /*only_meta=*/true)) throw Error("cannot write GGUF header to " + path);
  FilePtr file(std::fopen(path.c_str(), "ab"));
  if (!file) throw Error("cannot reopen " + path + " to append tensor data");

  const size_t alignment = gguf_get_alignment(g);
  const std::vector<char> zeros(alignment, 0);
  std::vector<float> values;
  std::vector<char> encoded;
  const float amplitude = kWeightStd * std::sqrt(3.0f);  // uniform[-a, a] has std a / sqrt(3)
  for (size_t index = 0; index < specs.size(); ++index) {
    const TensorSpec& spec = specs[index];
    const ggml_type tensor_type = spec.is_matrix ? weight_type : GGML_TYPE_F32;
    SplitMix64 rng{seed * 0x100000001B3ull + index * 0x9E3779B97F4A7C15ull + 1};
    // About 4M floats per block: bounded memory whatever the shape.
    const int64_t rows_per_block = std::max<int64_t>(1, (int64_t{1} << 22) / spec.ne0);
    size_t written = 0;
    for (int64_t row0 = 0; row0 < spec.ne1; row0 += rows_per_block) {
      const int64_t rows = std::min(rows_per_block, spec.ne1 - row0);
      const size_t n = static_cast<size_t>(rows * spec.ne0);
      values.resize(n);
      if (spec.fill == Fill::ones) {
        std::fill(values.begin(), values.end(), 1.0f);
      } else {
        for (float& x : values) x = amplitude * rng.symmetric();
      }
      const size_t bytes = ggml_row_size(tensor_type, spec.ne0) * static_cast<size_t>(rows);
      if (tensor_type == GGML_TYPE_F32) {
        write_bytes(file.get(), values.data(), bytes, path, spec.name);
      } else {
        encoded.resize(bytes);
        if (tensor_type == GGML_TYPE_F16) {
          ggml_fp32_to_fp16_row(values.data(), reinterpret_cast<ggml_fp16_t*>(encoded.data()),
                                static_cast<int64_t>(n));
        } else {
          ggml_quantize_chunk(tensor_type, values.data(), encoded.data(), 0, rows, spec.ne0, nullptr);
        }
        write_bytes(file.get(), encoded.data(), bytes, path, spec.name);
      }
      written += bytes;
    }
    const size_t padded = (written + alignment - 1) / alignment * alignment;
    write_bytes(file.get(), zeros.data(), padded - written, path, spec.name + " padding");
  }
  if (std::fflush(file.get()) != 0) throw Error("write failed for " + path);
}

std::vector<float> read_token_embeddings(const std::string& model_path, std::span<const int32_t> tokens) {
  auto backend = detail::acquire_backend();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) throw Error("cannot read GGUF file " + model_path);
  const detail::LlmFileFacts facts = detail::inspect_llm_file(model_path);
  if (!facts.has_token_embeddings) {
    throw Error("cannot read token_embd.weight from " + model_path +
                " (not a GGUF file, no such 2-D tensor, or a type that cannot be dequantised)");
  }
  std::vector<float> out(tokens.size() * static_cast<size_t>(facts.token_embeddings.n_embd));
  facts.token_embeddings.read_rows(tokens, out.data());
  return out;
}

}  // namespace vtprune::llm
