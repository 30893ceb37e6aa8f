// Random Qwen2.5-VL language models (TestLlmArch::qwen2vl): exactly the tensor set, shapes, types and metadata
// llama.cpp's converter writes; libllama loads them as an M-RoPE model; the byte-level BPE vocabulary tokenises
// through libllama exactly as its own merges say; the 3B shape's header matches Qwen2.5-VL-3B-Instruct.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "gguf.h"
#include "llama.h"
#include "gguf_tables.h"
#include "llm_test_util.h"

namespace vtprune::test {
namespace {

// Qwen2.5-VL-Instruct's chat_template.json, JSON-decoded (the oracle the writer must match byte for byte).
constexpr const char* kOfficialTemplate =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}";

// Qwen2.5-VL's 22 added tokens in id order from <|endoftext|>.
const std::vector<std::string> kSpecials = {
    "<|endoftext|>", "<|im_start|>",  "<|im_end|>",     "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>",   "<|quad_start|>", "<|quad_end|>",  "<|vision_start|>",     "<|vision_end|>",     "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>",    "</tool_call>",         "<|fim_prefix|>",     "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>",  "<|repo_name|>",  "<|file_sep|>"};



int64_t key(const Gguf& g, const char* name) {
  const int64_t id = gguf_find_key(g.get(), name);
  EXPECT_GE(id, 0) << "missing key " << name;
  return id;
}
std::string str(const Gguf& g, const char* name) { return gguf_get_val_str(g.get(), key(g, name)); }
uint32_t u32(const Gguf& g, const char* name) {
  const int64_t id = key(g, name);
  EXPECT_EQ(gguf_get_kv_type(g.get(), id), GGUF_TYPE_UINT32) << name;
  return gguf_get_val_u32(g.get(), id);
}
float f32(const Gguf& g, const char* name) {
  const int64_t id = key(g, name);
  EXPECT_EQ(gguf_get_kv_type(g.get(), id), GGUF_TYPE_FLOAT32) << name;
  return gguf_get_val_f32(g.get(), id);
}
std::vector<std::string> strings(const Gguf& g, const char* name) {
  const int64_t id = key(g, name);
  std::vector<std::string> out;
  for (size_t i = 0; i < gguf_get_arr_n(g.get(), id); ++i) out.emplace_back(gguf_get_arr_str(g.get(), id, i));
  return out;
}
std::vector<int32_t> ints(const Gguf& g, const char* name) {
  const int64_t id = key(g, name);
  EXPECT_EQ(gguf_get_arr_type(g.get(), id), GGUF_TYPE_INT32) << name;
  const auto* p = static_cast<const int32_t*>(gguf_get_arr_data(g.get(), id));
  return {p, p + gguf_get_arr_n(g.get(), id)};
}


// The tensor table llama.cpp's converter writes for a Qwen2.5-VL language model (tied embeddings).
std::map<std::string, TensorInfo> expected_tensors(int64_t d, int64_t ff, int n_layer, int64_t kv, int64_t vocab,
                                                   ggml_type w) {
  std::map<std::string, TensorInfo> t;
  t["token_embd.weight"] = {{d, vocab}, w};
  t["output_norm.weight"] = {{d}, GGML_TYPE_F32};
  for (int il = 0; il < n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    t[p + "attn_norm.weight"] = {{d}, GGML_TYPE_F32};
    t[p + "attn_q.weight"] = {{d, d}, w};
    t[p + "attn_q.bias"] = {{d}, GGML_TYPE_F32};
    t[p + "attn_k.weight"] = {{d, kv}, w};
    t[p + "attn_k.bias"] = {{kv}, GGML_TYPE_F32};
    t[p + "attn_v.weight"] = {{d, kv}, w};
    t[p + "attn_v.bias"] = {{kv}, GGML_TYPE_F32};
    t[p + "attn_output.weight"] = {{d, d}, w};
    t[p + "ffn_norm.weight"] = {{d}, GGML_TYPE_F32};
    t[p + "ffn_gate.weight"] = {{d, ff}, w};
    t[p + "ffn_up.weight"] = {{d, ff}, w};
    t[p + "ffn_down.weight"] = {{ff, d}, w};
  }
  return t;
}


// Everything the qwen2vl metadata must say, for a vocabulary of n_vocab with the specials at n_vocab - 293.
void expect_qwen_metadata(const Gguf& g, const llm::TestLlmShape& s, const std::vector<int32_t>& sections) {
  EXPECT_EQ(str(g, "general.architecture"), "qwen2vl");
  EXPECT_EQ(str(g, "general.type"), "model");
  EXPECT_EQ(u32(g, "qwen2vl.block_count"), static_cast<uint32_t>(s.n_layer));
  EXPECT_EQ(u32(g, "qwen2vl.context_length"), static_cast<uint32_t>(s.n_ctx_train));
  EXPECT_EQ(u32(g, "qwen2vl.embedding_length"), static_cast<uint32_t>(s.n_embd));
  EXPECT_EQ(u32(g, "qwen2vl.feed_forward_length"), static_cast<uint32_t>(s.n_ff));
  EXPECT_EQ(u32(g, "qwen2vl.attention.head_count"), static_cast<uint32_t>(s.n_head));
  EXPECT_EQ(u32(g, "qwen2vl.attention.head_count_kv"), static_cast<uint32_t>(s.n_head_kv));
  EXPECT_EQ(ints(g, "qwen2vl.rope.dimension_sections"), sections);
  EXPECT_EQ(f32(g, "qwen2vl.rope.freq_base"), 1000000.0f);
  EXPECT_EQ(f32(g, "qwen2vl.attention.layer_norm_rms_epsilon"), 1e-6f);
  EXPECT_EQ(u32(g, "general.quantization_version"), 2u);
  // no rope.dimension_count / vocab_size keys: the converter derives neither for Qwen2.5-VL
  EXPECT_LT(gguf_find_key(g.get(), "qwen2vl.rope.dimension_count"), 0);
  EXPECT_LT(gguf_find_key(g.get(), "qwen2vl.vocab_size"), 0);

  EXPECT_EQ(str(g, "tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(str(g, "tokenizer.ggml.pre"), "qwen2");
  const auto tokens = strings(g, "tokenizer.ggml.tokens");
  const auto types = ints(g, "tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), static_cast<size_t>(s.n_vocab));
  ASSERT_EQ(types.size(), tokens.size());
  const int base = s.n_vocab - 293;
  for (size_t i = 0; i < kSpecials.size(); ++i) {
    EXPECT_EQ(tokens[base + i], kSpecials[i]) << "id " << base + i;
    // CONTROL, except the two tool-call tags (not special in tokenizer_config.json, not <|...|>): USER_DEFINED
    EXPECT_EQ(types[base + i], kSpecials[i].find("tool_call") != std::string::npos ? 4 : 3) << kSpecials[i];
  }
  EXPECT_EQ(tokens[base + 22], "[PAD" + std::to_string(base + 22) + "]");
  EXPECT_EQ(types[base + 22], 5);
  EXPECT_EQ(tokens.back(), "[PAD" + std::to_string(s.n_vocab - 1) + "]");
  // GPT-2 byte order: "!" first, "Ġ" (space) at 220, "Ċ" (newline) at 198
  EXPECT_EQ(tokens[0], "!");
  EXPECT_EQ(tokens[220], "\xC4\xA0");
  EXPECT_EQ(tokens[198], "\xC4\x8A");
  for (int i = 0; i < 256; ++i) EXPECT_EQ(types[i], 1) << i;
  const auto merges = strings(g, "tokenizer.ggml.merges");
  EXPECT_GE(merges.size(), 300u);
  EXPECT_EQ(u32(g, "tokenizer.ggml.eos_token_id"), static_cast<uint32_t>(base + 2));      // <|im_end|>
  EXPECT_EQ(u32(g, "tokenizer.ggml.padding_token_id"), static_cast<uint32_t>(base));      // <|endoftext|>
  EXPECT_EQ(u32(g, "tokenizer.ggml.bos_token_id"), static_cast<uint32_t>(base));          // <|endoftext|>
  EXPECT_FALSE(gguf_get_val_bool(g.get(), key(g, "tokenizer.ggml.add_bos_token")));
  EXPECT_EQ(str(g, "tokenizer.chat_template"), kOfficialTemplate);
}

std::string tiny_qwen_model(llm::WeightType type = llm::WeightType::f16) {
  const auto path = temp_dir(std::string("qwen-") + std::string(llm::to_string(type))) / "llm.gguf";
  llm::write_test_llm(path.string(), llm::test_llm_shape("qwen2.5-vl"), /*seed=*/42, type);
  return path.string();
}

TEST(llm_test_model_qwen, Shapes) {
  const auto tiny = llm::test_llm_shape("qwen2.5-vl");
  EXPECT_EQ(tiny.arch, llm::TestLlmArch::qwen2vl);
  EXPECT_EQ(tiny.n_embd, 64);
  EXPECT_EQ(tiny.n_layer, 2);
  EXPECT_EQ(tiny.n_head, 4);
  EXPECT_EQ(tiny.n_head_kv, 2);
  // Qwen2.5-VL-3B-Instruct's config.json
  const auto q3 = llm::test_llm_shape("qwen2.5-vl-3b");
  EXPECT_EQ(q3.arch, llm::TestLlmArch::qwen2vl);
  EXPECT_EQ(q3.n_embd, 2048);
  EXPECT_EQ(q3.n_ff, 11008);
  EXPECT_EQ(q3.n_layer, 36);
  EXPECT_EQ(q3.n_head, 16);
  EXPECT_EQ(q3.n_head_kv, 2);
  EXPECT_EQ(q3.n_vocab, 151936);
  EXPECT_EQ(q3.n_ctx_train, 128000);
  EXPECT_EQ(llm::test_llm_shape("tiny").arch, llm::TestLlmArch::llama);
  // head width 24 cannot carry Qwen's M-RoPE sections; a vocabulary too small for the BPE tokens + specials
  llm::TestLlmShape bad = tiny;
  bad.n_embd = 96;
  EXPECT_THROW(llm::write_test_llm((temp_dir("bad") / "a.gguf").string(), bad, 0), Error);
  bad = tiny;
  bad.n_vocab = 600;
  try {
    llm::write_test_llm((temp_dir("bad") / "b.gguf").string(), bad, 0);
    ADD_FAILURE() << "a 600-token vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("n_vocab 600"), std::string::npos) << e.what();
  }
}

TEST(llm_test_model_qwen, ExactTensorSetAndMetadata) {
  for (auto type : {llm::WeightType::f16, llm::WeightType::q8_0}) {
    SCOPED_TRACE(std::string(llm::to_string(type)));
    const auto g = read_header(tiny_qwen_model(type));
    ASSERT_TRUE(g);
    const ggml_type w = type == llm::WeightType::f16 ? GGML_TYPE_F16 : GGML_TYPE_Q8_0;
    expect_tables_equal(tensor_table(g), expected_tensors(64, 128, 2, 32, 2048, w));
    EXPECT_EQ(u32(g, "general.file_type"), type == llm::WeightType::f16 ? 1u : 7u);
    const auto s = llm::test_llm_shape("qwen2.5-vl");
    expect_qwen_metadata(g, s, {2, 3, 3, 0});  // [16, 24, 24, 0] scaled from head width 128 to 16
  }
}

// The realistic shape, header only (the full file is 7 GB): Qwen2.5-VL-3B-Instruct's layout, token ids included.
TEST(llm_test_model_qwen, Header3bMatchesQwen25Vl3b) {
  const auto shape = llm::test_llm_shape("qwen2.5-vl-3b");
  const auto path = temp_dir("qwen3b") / "llm.gguf";
  llm::write_test_llm_header(path.string(), shape);
  EXPECT_LT(std::filesystem::file_size(path), 8u << 20) << "header only";
  const auto g = read_header(path.string());
  ASSERT_TRUE(g);
  EXPECT_EQ(gguf_get_n_tensors(g.get()), 434);  // 1 + 36 x 12 + 1 (tied embeddings: no output.weight)
  expect_tables_equal(tensor_table(g), expected_tensors(2048, 11008, 36, 256, 151936, GGML_TYPE_F16));
  expect_qwen_metadata(g, shape, {16, 24, 24, 0});
  // config.json: bos 151643, eos 151645, vision_start 151652, vision_end 151653, vision_token 151654,
  // image 151655, video 151656
  const auto tokens = strings(g, "tokenizer.ggml.tokens");
  EXPECT_EQ(tokens[151643], "<|endoftext|>");
  EXPECT_EQ(tokens[151645], "<|im_end|>");
  EXPECT_EQ(tokens[151652], "<|vision_start|>");
  EXPECT_EQ(tokens[151653], "<|vision_end|>");
  EXPECT_EQ(tokens[151654], "<|vision_pad|>");
  EXPECT_EQ(tokens[151655], "<|image_pad|>");
  EXPECT_EQ(tokens[151656], "<|video_pad|>");
  EXPECT_EQ(tokens[151664], "<|file_sep|>");
  EXPECT_EQ(u32(g, "tokenizer.ggml.eos_token_id"), 151645u);
  // the data section would follow: the offsets add up to the real F16 size (~3.1e9 parameters... of the LLM)
  size_t bytes = 0;
  for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) bytes += gguf_get_tensor_size(g.get(), i);
  EXPECT_NEAR(static_cast<double>(bytes) / 2, 3.09e9, 0.02e9);
}

// ---- libllama ---------------------------------------------------------------------------------------------

struct ModelFree {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct ContextFree {
  void operator()(llama_context* c) const { llama_free(c); }
};

class llm_qwen_libllama : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    llama_backend_init();
    path_ = tiny_qwen_model();
    llama_model_params mp = llama_model_default_params();
    model_.reset(llama_model_load_from_file(path_.c_str(), mp));
  }
  static void TearDownTestSuite() {
    model_.reset();
    llama_backend_free();
  }
  static std::vector<llama_token> tokenize(const std::string& text, bool parse_special) {
    const llama_vocab* vocab = llama_model_get_vocab(model_.get());
    std::vector<llama_token> out(text.size() + 8);
    const int n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), out.data(),
                                 static_cast<int32_t>(out.size()), /*add_special=*/true, parse_special);
    EXPECT_GE(n, 0);
    out.resize(std::max(n, 0));
    return out;
  }
  static std::string piece(llama_token t) {
    char buf[256];
    const int n = llama_token_to_piece(llama_model_get_vocab(model_.get()), t, buf, sizeof(buf), 0, /*special=*/true);
    return n > 0 ? std::string(buf, n) : std::string();
  }
  static inline std::string path_;
  static inline std::unique_ptr<llama_model, ModelFree> model_;
};

TEST_F(llm_qwen_libllama, LoadsAsMropeQwen2vl) {
  ASSERT_TRUE(model_) << path_;
  EXPECT_EQ(llama_model_rope_type(model_.get()), LLAMA_ROPE_TYPE_MROPE);
  char arch[64] = {};
  llama_model_meta_val_str(model_.get(), "general.architecture", arch, sizeof(arch));
  EXPECT_STREQ(arch, "qwen2vl");
  EXPECT_EQ(llama_model_n_embd(model_.get()), 64);
  EXPECT_EQ(llama_model_n_embd_inp(model_.get()), 64);
  EXPECT_EQ(llama_model_n_layer(model_.get()), 2);
  EXPECT_EQ(llama_model_n_head(model_.get()), 4);
  EXPECT_EQ(llama_model_n_head_kv(model_.get()), 2);
  EXPECT_EQ(llama_model_rope_freq_scale_train(model_.get()), 1.0f);
  const llama_vocab* vocab = llama_model_get_vocab(model_.get());
  EXPECT_EQ(llama_vocab_type(vocab), LLAMA_VOCAB_TYPE_BPE);
  EXPECT_EQ(llama_vocab_n_tokens(vocab), 2048);
  const int base = 2048 - 293;
  EXPECT_EQ(llama_vocab_bos(vocab), base);
  EXPECT_EQ(llama_vocab_eos(vocab), base + 2);
  // EOT is found by its text: <|im_end|> or <|endoftext|> (whichever libllama's hash map yields last); both end turns
  EXPECT_TRUE(llama_vocab_eot(vocab) == base + 2 || llama_vocab_eot(vocab) == base) << llama_vocab_eot(vocab);
  EXPECT_EQ(llama_vocab_pad(vocab), base);
  EXPECT_FALSE(llama_vocab_get_add_bos(vocab));
  EXPECT_TRUE(llama_vocab_is_eog(vocab, base + 2));
  EXPECT_TRUE(llama_vocab_is_eog(vocab, base));
  EXPECT_TRUE(llama_vocab_is_control(vocab, base + 12));  // <|image_pad|>
  const char* tmpl = llama_model_chat_template(model_.get(), nullptr);
  ASSERT_NE(tmpl, nullptr);
  EXPECT_STREQ(tmpl, kOfficialTemplate);

  // Unused [PAD] ids have zero embedding rows (tied output: a random model never samples them); the others not.
  const std::vector<int32_t> ids = {0, 700, 1000, base, base + 22, 2047};
  const auto rows = llm::read_token_embeddings(path_, ids);
  for (size_t i = 0; i < ids.size(); ++i) {
    float norm = 0.0f;
    for (int c = 0; c < 64; ++c) norm += rows[i * 64 + c] * rows[i * 64 + c];
    const bool pad = ids[i] == 1000 || ids[i] >= base + 22;
    EXPECT_EQ(norm == 0.0f, pad) << "token " << ids[i];
  }

  // A text prompt decodes (1-D positions, expanded to M-RoPE's four by libllama) to finite logits.
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = cp.n_threads_batch = 1;
  std::unique_ptr<llama_context, ContextFree> ctx(llama_init_from_model(model_.get(), cp));
  ASSERT_TRUE(ctx);
  auto tokens = tokenize("<|im_start|>user\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n", true);
  ASSERT_EQ(llama_decode(ctx.get(), llama_batch_get_one(tokens.data(), static_cast<int32_t>(tokens.size()))), 0);
  const float* logits = llama_get_logits_ith(ctx.get(), -1);
  float lo = logits[0], hi = logits[0];
  for (int i = 0; i < 2048; ++i) {
    ASSERT_TRUE(std::isfinite(logits[i])) << i;
    lo = std::min(lo, logits[i]);
    hi = std::max(hi, logits[i]);
  }
  EXPECT_GT(hi - lo, 1e-3f) << "logits do not depend on the token";
}

// ---- the BPE the file holds, applied by hand ---------------------------------------------------------------

// GPT-2's bytes_to_unicode (written out again here, independently of the writer).
std::string byte_symbol(unsigned char c) {
  const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
  uint32_t cp = c;
  if (!printable) {
    cp = 256;
    for (int b = 0; b < c; ++b) {
      const bool p = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      if (!p) ++cp;
    }
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Qwen2's pre-tokenizer regex on plain ASCII text without digits or apostrophes:
// [^\r\n\p{L}\p{N}]?\p{L}+ | ' '?[^\s\p{L}\p{N}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+
std::vector<std::string> pre_tokenize(const std::string& s) {
  const auto letter = [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; };
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  const auto newline = [](char c) { return c == '\n' || c == '\r'; };
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    EXPECT_FALSE(std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '\'' || (s[i] & 0x80)) << s;
    size_t j = i;
    if (letter(s[i]) || (!newline(s[i]) && i + 1 < s.size() && letter(s[i + 1]))) {
      j = i + 1;
      while (j < s.size() && letter(s[j])) ++j;
    } else if (!space(s[i]) || (s[i] == ' ' && i + 1 < s.size() && !space(s[i + 1]))) {
      j = s[i] == ' ' ? i + 1 : i;
      while (j < s.size() && !space(s[j]) && !letter(s[j])) ++j;
      while (j < s.size() && newline(s[j])) ++j;
    } else {
      size_t end = i;
      while (end < s.size() && space(s[end])) ++end;
      size_t last_newline = std::string::npos;
      for (size_t k = i; k < end; ++k) {
        if (newline(s[k])) last_newline = k;
      }
      if (last_newline != std::string::npos) {
        j = last_newline + 1;
      } else {
        j = (end < s.size() && end - i > 1) ? end - 1 : end;  // \s+(?!\S) leaves the last space to the word
      }
    }
    out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// Lowest-rank pair first, leftmost on ties, until no pair is a merge: the BPE llama.cpp runs.
std::vector<std::string> bpe(const std::string& word, const std::map<std::pair<std::string, std::string>, size_t>& ranks) {
  std::vector<std::string> symbols;
  for (unsigned char c : word) symbols.push_back(byte_symbol(c));
  for (;;) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const auto it = ranks.find({symbols[i], symbols[i + 1]});
      if (it != ranks.end() && it->second < best) best = it->second, at = i;
    }
    if (best == SIZE_MAX) return symbols;
    symbols[at] += symbols[at + 1];
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
}

TEST_F(llm_qwen_libllama, TokenizerIsTheBpeTheFileHolds) {
  ASSERT_TRUE(model_);
  const auto g = read_header(path_);
  const auto tokens = strings(g, "tokenizer.ggml.tokens");
  std::map<std::string, int> id_of;
  for (size_t i = 0; i < tokens.size(); ++i) id_of.emplace(tokens[i], static_cast<int>(i));
  std::map<std::pair<std::string, std::string>, size_t> ranks;
  const auto merges = strings(g, "tokenizer.ggml.merges");
  for (size_t r = 0; r < merges.size(); ++r) {
    const size_t sp = merges[r].find(' ', 1);
    ranks.emplace(std::make_pair(merges[r].substr(0, sp), merges[r].substr(sp + 1)), r);
  }
  // By hand: special tokens split out (parse_special), each text piece pre-tokenised and merged.
  const auto reference = [&](const std::string& text, bool parse_special = true) {
    std::vector<llama_token> ids;
    size_t i = 0;
    while (i < text.size()) {
      size_t next = std::string::npos, len = 0;
      for (const auto& s : kSpecials) {
        const size_t at = parse_special ? text.find(s, i) : std::string::npos;
        if (at < next) next = at, len = s.size();
      }
      for (const auto& word : pre_tokenize(text.substr(i, std::min(next, text.size()) - i))) {
        for (const auto& sym : bpe(word, ranks)) ids.push_back(id_of.at(sym));
      }
      if (next == std::string::npos) break;
      ids.push_back(id_of.at(text.substr(next, len)));
      i = next + len;
    }
    return ids;
  };
  const auto ids = [&](std::initializer_list<const char*> pieces) {
    std::vector<llama_token> out;
    for (const char* p : pieces) {
      const auto it = id_of.find(p);
      EXPECT_NE(it, id_of.end()) << "no token " << p;
      out.push_back(it == id_of.end() ? -1 : it->second);
    }
    return out;
  };
  const std::string question = "What is in the image?";
  // Word pieces, not bytes ("Ġ" = a leading space)
  EXPECT_EQ(tokenize(question, true), ids({"What", "Ġis", "Ġin", "Ġthe", "Ġimage", "?"}));
  EXPECT_EQ(tokenize(question, true), reference(question));
  const std::string chat =
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
      "<|vision_end|>Describe the picture.<|im_end|>\n<|im_start|>assistant\n";
  const auto chat_ids = tokenize(chat, true);
  EXPECT_EQ(chat_ids, reference(chat));
  EXPECT_EQ(chat_ids, ids({"<|im_start|>", "system", "Ċ", "You", "Ġare", "Ġa", "Ġhelpful", "Ġassistant", ".",
                           "<|im_end|>", "Ċ", "<|im_start|>", "user", "Ċ", "<|vision_start|>", "<|image_pad|>",
                           "<|vision_end|>", "Describe", "Ġthe", "Ġpicture", ".", "<|im_end|>", "Ċ", "<|im_start|>",
                           "assistant", "Ċ"}));
  // Without parse_special the markers are text: "<|" "im" "_end" "|>" in byte-level pieces
  const auto plain = tokenize("<|im_end|>", false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(plain, reference("<|im_end|>", false));
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 2048 - 293 + 2), 0);
  // Unknown words fall back to smaller pieces / bytes and still round-trip, also outside ASCII
  for (const std::string text : {"Zebras quietly zigzag.", "naïve ☃ 42"}) {
    std::string back;
    for (llama_token t : tokenize(text, true)) back += piece(t);
    EXPECT_EQ(back, text);
  }
  EXPECT_EQ(piece(id_of.at("Ġimage")), " image");
  EXPECT_EQ(piece(2048 - 293 + 12), "<|image_pad|>");
}

}  // namespace
}  // namespace vtprune::test
