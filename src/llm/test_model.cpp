// Random-weight LLM GGUF writers with llama.cpp's exact layouts: LLaMA (llama.* metadata, small
// SentencePiece-style vocabulary) and Qwen2.5-VL's language model (qwen2vl, GPT-2 byte-level BPE with Qwen's
// special tokens and chat template); and a token_embd reader for tests.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../io/gguf_stream_writer.h"
#include "llama_handles.h"
#include "model_file.h"
#include "test_vocab.h"
#include "vtprune/llm.h"

namespace vtprune::llm {

namespace {

// ---- vocabulary --------------------------------------------------------------------------------------

struct Vocabulary {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
};

using detail::kTokenByte, detail::kTokenControl, detail::kTokenNormal, detail::kTokenUnknown, detail::kTokenUnused;
constexpr const char* kSpace = "\xE2\x96\x81";  // "▁", SentencePiece's whitespace
constexpr float kWeightStd = 0.02f;  // random weights: uniform with this standard deviation

// The leading special tokens: LLaMA's fixed ids (<unk> 0, <s> 1, </s> 2, then <0x00> 3 ... <0xFF> 258), or
// Gemma's (<pad> 0, <eos> 1, <bos> 2, <unk> 3, then its turn and image markers).
struct SpecialToken {
  const char* text;
  int32_t type;
};
constexpr std::array<SpecialToken, 3> kLlamaSpecials = {{{"<unk>", kTokenUnknown}, {"<s>", kTokenControl}, {"</s>", kTokenControl}}};
constexpr std::array<SpecialToken, 8> kGemmaSpecials = {{{"<pad>", kTokenControl},
                                                          {"<eos>", kTokenControl},
                                                          {"<bos>", kTokenControl},
                                                          {"<unk>", kTokenUnknown},
                                                          {"<start_of_turn>", kTokenControl},
                                                          {"<end_of_turn>", kTokenControl},
                                                          {"<start_of_image>", kTokenControl},
                                                          {"<end_of_image>", kTokenControl}}};

// SmolVLM's (SmolLM2 with Idefics3's added tokens): <unk>, <|im_start|> (its BOS), <end_of_utterance> (its EOS),
// the image markers llama.cpp's libmtmd looks up, <row_i_col_j> for a 6 x 6 tile grid, and "\n\n" as one piece.
std::vector<SpecialToken> smolvlm_specials() {
  static const std::vector<std::string> rows = [] {
    std::vector<std::string> r;
    for (int y = 1; y <= 6; ++y)
      for (int x = 1; x <= 6; ++x) r.push_back("<row_" + std::to_string(y) + "_col_" + std::to_string(x) + ">");
    return r;
  }();
  std::vector<SpecialToken> sp = {{"<unk>", kTokenUnknown},           {"<|im_start|>", kTokenControl},
                                  {"<end_of_utterance>", kTokenControl}, {"<fake_token_around_image>", kTokenControl},
                                  {"<global-img>", kTokenControl},      {"<image>", kTokenControl},
                                  {"\n\n", kTokenNormal}};
  for (const std::string& r : rows) sp.push_back({r.c_str(), kTokenControl});
  return sp;
}

Vocabulary build_vocabulary(int n_vocab, std::span<const SpecialToken> specials = kLlamaSpecials) {
  Vocabulary v;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string text, float score, int32_t type) {
    if (!seen.insert(text).second) return;
    v.tokens.push_back(std::move(text));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  for (const SpecialToken& sp : specials) add(sp.text, 0.0f, sp.type);
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    add(name, 0.0f, kTokenByte);
  }
  // Pieces: "▁", every printable ASCII character, then every prefix of "▁word" (shorter = higher score,
  // so SentencePiece's best-score-first merging always finds a path to the whole word).
  std::vector<std::string> pieces = {kSpace};
  for (char c = '!'; c <= '~'; ++c) pieces.emplace_back(1, c);
  std::vector<std::string> prefixes;
  for (const char* word : detail::kTestWords) {
    const std::string full = std::string(kSpace) + word;
    for (size_t len = std::string(kSpace).size() + 1; len <= full.size(); ++len) prefixes.push_back(full.substr(0, len));
  }
  std::stable_sort(prefixes.begin(), prefixes.end(),
                   [](const std::string& a, const std::string& b) { return a.size() < b.size(); });
  pieces.insert(pieces.end(), prefixes.begin(), prefixes.end());
  float score = -1.0f;
  for (auto& piece : pieces) add(std::move(piece), score--, kTokenNormal);

  if (static_cast<int>(v.tokens.size()) > n_vocab) {
    throw Error("test vocabulary needs " + std::to_string(v.tokens.size()) + " tokens but the shape has n_vocab " +
                std::to_string(n_vocab));
  }
  for (int id = static_cast<int>(v.tokens.size()); id < n_vocab; ++id) {
    add("<unused" + std::to_string(id) + ">", -1e9f, kTokenUnused);
  }
  return v;
}

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
  // LLaVA-NeXT's language model is LLaVA-1.5's (Vicuna-7B for llava-v1.6-vicuna-7b); the tiny one holds 2880 image rows.
  if (name == "llava-next") return {"llava-next", 64, 128, 2, 4, 4, 1024, 4096};
  if (name == "llava-next-7b") return {"llava-next-7b", 4096, 11008, 32, 32, 32, 32000, 4096};
  // Qwen2.5-VL-3B-Instruct's language model (config.json: hidden 2048, intermediate 11008, 36 layers, 16 heads,
  // 2 KV heads, vocab 151936, max_position_embeddings 128000), and a tiny one with the same layout.
  if (name == "qwen2.5-vl") return {"qwen2.5-vl", 64, 128, 2, 4, 2, 2048, 4096, TestLlmArch::qwen2vl};
  if (name == "qwen2.5-vl-3b") return {"qwen2.5-vl-3b", 2048, 11008, 36, 16, 2, 151936, 128000, TestLlmArch::qwen2vl};
  // Gemma-3-4B-it's language model (config.json text_config: hidden 2560, intermediate 10240, 34 layers, 8 heads,
  // 4 KV heads, head_dim 256, vocab 262208, max_position_embeddings 131072), and a tiny one with its layout.
  if (name == "gemma3") return {"gemma3", 64, 128, 2, 4, 2, 1024, 4096, TestLlmArch::gemma3, 16};
  // SmolVLM's language model is SmolLM2 (the `llama` architecture); a tiny one with its tokens and template
  if (name == "smolvlm") return {"smolvlm", 64, 128, 2, 4, 2, 2048, 8192, TestLlmArch::smolvlm};
  if (name == "gemma3-4b") return {"gemma3-4b", 2560, 10240, 34, 8, 4, 262208, 131072, TestLlmArch::gemma3, 256};
  throw Error("unknown test model shape '" + std::string(name) +
              "' (known: tiny, tinyllama, llava-7b, llava-next, llava-next-7b, qwen2.5-vl, qwen2.5-vl-3b, gemma3, gemma3-4b, smolvlm)");
}

namespace {

// A random matrix in the file's weight type; vectors (norms, biases) are F32, as llama.cpp's converter writes them.
io::GeneratedTensor weight(std::string name, ggml_type type, int64_t ne0, int64_t ne1) {
  return {std::move(name), type, {ne0, ne1, 1, 1}, 0.0f, kWeightStd};
}
io::GeneratedTensor vector_of(std::string name, int64_t n, float mean, float stddev) {
  return {std::move(name), GGML_TYPE_F32, {n, 1, 1, 1}, mean, stddev};
}

// Zero rows of an embedding table for the ids of unused tokens: with tied embeddings a random model then never
// samples a token that prints nothing.
void zero_unused_rows(io::GeneratedTensor& table, const std::vector<int32_t>& types) {
  for (int32_t id = 0; id < static_cast<int32_t>(types.size()); ++id) {
    if (types[static_cast<size_t>(id)] != kTokenUnused) continue;
    auto& rows = table.zero_rows;
    if (!rows.empty() && rows.back().second == id) {
      rows.back().second = id + 1;
    } else {
      rows.emplace_back(id, id + 1);
    }
  }
}

// A block matrix ~ 1/sqrt(fan_in): each block changes the residual stream by O(1).
io::GeneratedTensor scaled_matrix(std::string name, ggml_type type, int64_t in, int64_t out) {
  io::GeneratedTensor m = weight(std::move(name), type, in, out);
  m.stddev = 1.0f / std::sqrt(static_cast<float>(in));
  return m;
}

void set_token_texts(gguf_context* g, const std::vector<std::string>& texts, const char* key) {
  std::vector<const char*> pointers;
  pointers.reserve(texts.size());
  for (const auto& t : texts) pointers.push_back(t.c_str());
  gguf_set_arr_str(g, key, pointers.data(), pointers.size());
}

// `llama`: LLaMA's tensor set and llama.* metadata, in llama.cpp's conversion order, SentencePiece vocabulary.
std::vector<io::GeneratedTensor> describe_llama(gguf_context* g, const TestLlmShape& shape, WeightType type) {
  const ggml_type wtype = ggml_type_of(type);
  const bool smolvlm = shape.arch == TestLlmArch::smolvlm;
  const std::vector<SpecialToken> smol = smolvlm ? smolvlm_specials() : std::vector<SpecialToken>{};
  const Vocabulary vocab = smolvlm ? build_vocabulary(shape.n_vocab, smol) : build_vocabulary(shape.n_vocab);
  const int64_t head_dim = shape.n_embd / shape.n_head;
  const int64_t n_embd_gqa = head_dim * shape.n_head_kv;
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
  set_token_texts(g, vocab.tokens, "tokenizer.ggml.tokens");
  gguf_set_arr_data(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, vocab.scores.data(), vocab.scores.size());
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
  gguf_set_val_u32(g, "tokenizer.ggml.unknown_token_id", 0);
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", 1);
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", 2);
  // SmolVLM's template writes <|im_start|> itself; its tokenizer adds no BOS
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", !smolvlm);
  gguf_set_val_bool(g, "tokenizer.ggml.add_eos_token", false);
  if (smolvlm) gguf_set_val_str(g, "tokenizer.chat_template", std::string(detail::kSmolVlmChatTemplate).c_str());

  std::vector<io::GeneratedTensor> t;
  t.push_back(weight("token_embd.weight", wtype, shape.n_embd, shape.n_vocab));
  for (int il = 0; il < shape.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    t.push_back(vector_of(p + "attn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    t.push_back(weight(p + "attn_q.weight", wtype, shape.n_embd, shape.n_embd));
    t.push_back(weight(p + "attn_k.weight", wtype, shape.n_embd, n_embd_gqa));
    t.push_back(weight(p + "attn_v.weight", wtype, shape.n_embd, n_embd_gqa));
    t.push_back(weight(p + "attn_output.weight", wtype, shape.n_embd, shape.n_embd));
    t.push_back(vector_of(p + "ffn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    t.push_back(weight(p + "ffn_gate.weight", wtype, shape.n_embd, shape.n_ff));
    t.push_back(weight(p + "ffn_up.weight", wtype, shape.n_embd, shape.n_ff));
    t.push_back(weight(p + "ffn_down.weight", wtype, shape.n_ff, shape.n_embd));
  }
  t.push_back(vector_of("output_norm.weight", shape.n_embd, 1.0f, 0.0f));
  t.push_back(weight("output.weight", wtype, shape.n_embd, shape.n_vocab));
  return t;
}

// `qwen2vl`: what llama.cpp's converter (conversion/qwenvl.py, Qwen2VLModel) writes for Qwen2.5-VL's language
// model: Qwen2's tensor set with q/k/v biases, tied embeddings (no output.weight, as Qwen2.5-VL-3B), M-RoPE
// sections, GPT-2 byte-level BPE with Qwen's special tokens and chat template.
std::vector<io::GeneratedTensor> describe_qwen2vl(gguf_context* g, const TestLlmShape& shape, WeightType type) {
  const ggml_type wtype = ggml_type_of(type);
  const int64_t head_dim = shape.n_embd / shape.n_head;
  if (head_dim % 16 != 0) {
    throw Error("invalid test LLM shape '" + shape.name + "': head width " + std::to_string(head_dim) +
                " (n_embd / n_head) must be a multiple of 16 for Qwen2.5-VL's M-RoPE sections");
  }
  const int64_t n_embd_gqa = head_dim * shape.n_head_kv;
  const detail::BpeVocabulary vocab = detail::qwen_bpe_vocabulary(shape.n_vocab);
  // Qwen2.5-VL's mrope_section [16, 24, 24] (t, h, w) of head_dim / 2 = 64 rotary pairs, scaled to this head
  // width, padded to 4 as the converter does.
  const int32_t sections[4] = {static_cast<int32_t>(head_dim / 8), static_cast<int32_t>(3 * head_dim / 16),
                               static_cast<int32_t>(3 * head_dim / 16), 0};

  gguf_set_val_str(g, "general.architecture", "qwen2vl");
  gguf_set_val_str(g, "general.type", "model");
  gguf_set_val_str(g, "general.name", ("vtprune-test-" + shape.name).c_str());
  gguf_set_val_u32(g, "qwen2vl.block_count", static_cast<uint32_t>(shape.n_layer));
  gguf_set_val_u32(g, "qwen2vl.context_length", static_cast<uint32_t>(shape.n_ctx_train));
  gguf_set_val_u32(g, "qwen2vl.embedding_length", static_cast<uint32_t>(shape.n_embd));
  gguf_set_val_u32(g, "qwen2vl.feed_forward_length", static_cast<uint32_t>(shape.n_ff));
  gguf_set_val_u32(g, "qwen2vl.attention.head_count", static_cast<uint32_t>(shape.n_head));
  gguf_set_val_u32(g, "qwen2vl.attention.head_count_kv", static_cast<uint32_t>(shape.n_head_kv));
  gguf_set_arr_data(g, "qwen2vl.rope.dimension_sections", GGUF_TYPE_INT32, sections, 4);
  gguf_set_val_f32(g, "qwen2vl.rope.freq_base", 1000000.0f);
  gguf_set_val_f32(g, "qwen2vl.attention.layer_norm_rms_epsilon", 1e-6f);
  gguf_set_val_u32(g, "general.file_type", llama_file_type_of(type));
  gguf_set_val_str(g, "tokenizer.ggml.model", "gpt2");
  gguf_set_val_str(g, "tokenizer.ggml.pre", "qwen2");
  set_token_texts(g, vocab.tokens, "tokenizer.ggml.tokens");
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
  set_token_texts(g, vocab.merges, "tokenizer.ggml.merges");
  // tokenizer_config.json: eos "<|im_end|>", pad "<|endoftext|>"; config.json: bos_token_id 151643.
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", static_cast<uint32_t>(vocab.special_base + detail::kQwenImEnd));
  gguf_set_val_u32(g, "tokenizer.ggml.padding_token_id",
                   static_cast<uint32_t>(vocab.special_base + detail::kQwenEndOfText));
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", static_cast<uint32_t>(vocab.special_base + detail::kQwenEndOfText));
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", false);
  gguf_set_val_str(g, "tokenizer.chat_template", std::string(detail::kQwen25VlChatTemplate).c_str());
  gguf_set_val_u32(g, "general.quantization_version", GGML_QNT_VERSION);

  // Weights: the token table N(0, 0.02)-like, with zero rows for the unused [PAD] ids (the embeddings are tied,
  // so a random model then never samples a token that prints nothing); the blocks' matrices ~ 1/sqrt(fan_in), so
  // that each block changes the residual stream by O(1) and the next token depends on the whole prompt (image
  // included) instead of echoing the last token's own embedding.
  std::vector<io::GeneratedTensor> t;
  t.push_back(weight("token_embd.weight", wtype, shape.n_embd, shape.n_vocab));
  zero_unused_rows(t.back(), vocab.types);
  const auto matrix = [&](std::string name, int64_t in, int64_t out) { t.push_back(scaled_matrix(std::move(name), wtype, in, out)); };
  for (int il = 0; il < shape.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    t.push_back(vector_of(p + "attn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    matrix(p + "attn_q.weight", shape.n_embd, shape.n_embd);
    t.push_back(vector_of(p + "attn_q.bias", shape.n_embd, 0.0f, kWeightStd));
    matrix(p + "attn_k.weight", shape.n_embd, n_embd_gqa);
    t.push_back(vector_of(p + "attn_k.bias", n_embd_gqa, 0.0f, kWeightStd));
    matrix(p + "attn_v.weight", shape.n_embd, n_embd_gqa);
    t.push_back(vector_of(p + "attn_v.bias", n_embd_gqa, 0.0f, kWeightStd));
    matrix(p + "attn_output.weight", shape.n_embd, shape.n_embd);
    t.push_back(vector_of(p + "ffn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    matrix(p + "ffn_gate.weight", shape.n_embd, shape.n_ff);
    matrix(p + "ffn_up.weight", shape.n_embd, shape.n_ff);
    matrix(p + "ffn_down.weight", shape.n_ff, shape.n_embd);
  }
  t.push_back(vector_of("output_norm.weight", shape.n_embd, 1.0f, 0.0f));
  return t;
}

// `gemma3`: what llama.cpp's converter (Gemma3Model) writes for Gemma 3's language model.
std::vector<io::GeneratedTensor> describe_gemma3(gguf_context* g, const TestLlmShape& shape, WeightType type) {
  const ggml_type wtype = ggml_type_of(type);
  const int64_t head_dim = shape.head_dim > 0 ? shape.head_dim : shape.n_embd / shape.n_head;
  const int64_t n_q = head_dim * shape.n_head, n_kv = head_dim * shape.n_head_kv;
  const Vocabulary vocab = build_vocabulary(shape.n_vocab, kGemmaSpecials);
  gguf_set_val_str(g, "general.architecture", "gemma3");
  gguf_set_val_str(g, "general.type", "model");
  gguf_set_val_str(g, "general.name", ("vtprune-test-" + shape.name).c_str());
  gguf_set_val_u32(g, "gemma3.context_length", static_cast<uint32_t>(shape.n_ctx_train));
  gguf_set_val_u32(g, "gemma3.embedding_length", static_cast<uint32_t>(shape.n_embd));
  gguf_set_val_u32(g, "gemma3.block_count", static_cast<uint32_t>(shape.n_layer));
  gguf_set_val_u32(g, "gemma3.feed_forward_length", static_cast<uint32_t>(shape.n_ff));
  gguf_set_val_u32(g, "gemma3.attention.head_count", static_cast<uint32_t>(shape.n_head));
  gguf_set_val_f32(g, "gemma3.attention.layer_norm_rms_epsilon", 1e-6f);
  gguf_set_val_u32(g, "gemma3.attention.key_length", static_cast<uint32_t>(head_dim));
  gguf_set_val_u32(g, "gemma3.attention.value_length", static_cast<uint32_t>(head_dim));
  gguf_set_val_u32(g, "general.file_type", llama_file_type_of(type));
  gguf_set_val_f32(g, "gemma3.rope.freq_base", 1000000.0f);
  gguf_set_val_f32(g, "gemma3.rope.freq_base_swa", 10000.0f);
  gguf_set_val_u32(g, "gemma3.attention.sliding_window", 1024);
  gguf_set_val_u32(g, "gemma3.attention.head_count_kv", static_cast<uint32_t>(shape.n_head_kv));
  gguf_set_val_str(g, "gemma3.rope.scaling.type", "linear");
  gguf_set_val_f32(g, "gemma3.rope.scaling.factor", 8.0f);
  gguf_set_val_str(g, "tokenizer.ggml.model", "llama");
  gguf_set_val_str(g, "tokenizer.ggml.pre", "default");
  set_token_texts(g, vocab.tokens, "tokenizer.ggml.tokens");
  gguf_set_arr_data(g, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, vocab.scores.data(), vocab.scores.size());
  gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, vocab.types.data(), vocab.types.size());
  gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", 2);
  gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", 1);
  gguf_set_val_u32(g, "tokenizer.ggml.unknown_token_id", 3);
  gguf_set_val_u32(g, "tokenizer.ggml.padding_token_id", 0);
  gguf_set_val_bool(g, "tokenizer.ggml.add_bos_token", true);
  gguf_set_val_bool(g, "tokenizer.ggml.add_eos_token", false);
  gguf_set_val_bool(g, "tokenizer.ggml.add_space_prefix", false);
  gguf_set_val_str(g, "tokenizer.chat_template", std::string(detail::kGemma3ChatTemplate).c_str());
  gguf_set_val_u32(g, "general.quantization_version", GGML_QNT_VERSION);

  // Tied embeddings with zero rows for the unused ids (a random model then never samples a token that prints
  // nothing), std 0.5/sqrt(n_embd): Gemma scales text embeddings by sqrt(n_embd), so text rows reach the blocks
  // at half the unit scale of the projected image rows: neither drowns the other, and the tied output does not
  // just echo the last token. Block matrices ~ 1/sqrt(fan_in).
  std::vector<io::GeneratedTensor> t;
  t.push_back(weight("token_embd.weight", wtype, shape.n_embd, shape.n_vocab));
  t.back().stddev = 0.5f / std::sqrt(static_cast<float>(shape.n_embd));
  zero_unused_rows(t.back(), vocab.types);
  const auto matrix = [&](std::string name, int64_t in, int64_t out) { t.push_back(scaled_matrix(std::move(name), wtype, in, out)); };
  for (int il = 0; il < shape.n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    t.push_back(vector_of(p + "attn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    matrix(p + "attn_q.weight", shape.n_embd, n_q);
    matrix(p + "attn_k.weight", shape.n_embd, n_kv);
    matrix(p + "attn_v.weight", shape.n_embd, n_kv);
    matrix(p + "attn_output.weight", n_q, shape.n_embd);
    t.push_back(vector_of(p + "attn_q_norm.weight", head_dim, 1.0f, 0.0f));
    t.push_back(vector_of(p + "attn_k_norm.weight", head_dim, 1.0f, 0.0f));
    t.push_back(vector_of(p + "post_attention_norm.weight", shape.n_embd, 1.0f, 0.0f));
    t.push_back(vector_of(p + "ffn_norm.weight", shape.n_embd, 1.0f, 0.0f));
    matrix(p + "ffn_gate.weight", shape.n_embd, shape.n_ff);
    matrix(p + "ffn_up.weight", shape.n_embd, shape.n_ff);
    matrix(p + "ffn_down.weight", shape.n_ff, shape.n_embd);
    t.push_back(vector_of(p + "post_ffw_norm.weight", shape.n_embd, 1.0f, 0.0f));
  }
  t.push_back(vector_of("output_norm.weight", shape.n_embd, 1.0f, 0.0f));
  return t;
}

void write_llm(const std::string& path, const TestLlmShape& shape, uint64_t seed, WeightType type, bool header_only) {
  const ggml_type weight_type = ggml_type_of(type);
  const int64_t block = ggml_blck_size(weight_type);
  if (shape.n_embd <= 0 || shape.n_ff <= 0 || shape.n_layer <= 0 || shape.n_head <= 0 || shape.n_head_kv <= 0 ||
      shape.n_vocab <= 0 || shape.n_ctx_train <= 0 || (shape.head_dim <= 0 && shape.n_embd % shape.n_head != 0) ||
      shape.n_head % shape.n_head_kv != 0 || shape.n_embd % block != 0 || shape.n_ff % block != 0) {
    throw Error("invalid test LLM shape '" + shape.name + "': n_embd " + std::to_string(shape.n_embd) + ", n_ff " +
                std::to_string(shape.n_ff) + ", n_head " + std::to_string(shape.n_head) + ", n_head_kv " +
                std::to_string(shape.n_head_kv) + " (n_embd and n_ff must be multiples of " + std::to_string(block) +
                " for " + std::string(to_string(type)) + ")");
  }
  auto backend = detail::acquire_backend();
  detail::GgufContextPtr gguf(gguf_init_empty());
  const std::vector<io::GeneratedTensor> tensors = shape.arch == TestLlmArch::qwen2vl  ? describe_qwen2vl(gguf.get(), shape, type)
                                                   : shape.arch == TestLlmArch::gemma3 ? describe_gemma3(gguf.get(), shape, type)
                                                                                       : describe_llama(gguf.get(), shape, type);
  io::write_generated_gguf(gguf.get(), tensors, path, seed, header_only);
}

}  // namespace

void write_test_llm(const std::string& path, const TestLlmShape& shape, uint64_t seed, WeightType type) {
  write_llm(path, shape, seed, type, /*header_only=*/false);
}

void write_test_llm_header(const std::string& path, const TestLlmShape& shape, WeightType type) {
  write_llm(path, shape, /*seed=*/0, type, /*header_only=*/true);
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
