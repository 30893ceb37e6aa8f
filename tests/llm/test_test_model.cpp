// Random LLaMA GGUF writer: exact tensor set and metadata, every weight type loads and generates, the
// vocabulary tokenises English into word pieces.
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "gguf.h"
#include "llm_test_util.h"

namespace vtprune::test {
namespace {

using llm::Chunk;

std::vector<Chunk> one(Chunk c) {
  std::vector<Chunk> v;
  v.push_back(std::move(c));
  return v;
}

TEST(llm_test_model, ShapesAndTypes) {
  const auto tiny = llm::test_llm_shape("tiny");
  EXPECT_EQ(tiny.n_embd, 64);
  EXPECT_EQ(tiny.n_ff, 128);
  EXPECT_EQ(tiny.n_layer, 2);
  const auto tl = llm::test_llm_shape("tinyllama");
  EXPECT_EQ(tl.n_embd, 2048);
  EXPECT_EQ(tl.n_ff, 5632);
  EXPECT_EQ(tl.n_layer, 22);
  EXPECT_EQ(tl.n_head_kv, 4);
  EXPECT_EQ(tl.n_vocab, 32000);
  const auto l7 = llm::test_llm_shape("llava-7b");
  EXPECT_EQ(l7.n_embd, 4096);
  EXPECT_EQ(l7.n_ff, 11008);
  EXPECT_EQ(l7.n_layer, 32);
  EXPECT_EQ(l7.n_head_kv, 32);
  EXPECT_THROW(llm::test_llm_shape("huge"), Error);
  EXPECT_EQ(llm::parse_weight_type("q4_0"), llm::WeightType::q4_0);
  EXPECT_EQ(llm::to_string(llm::WeightType::q8_0), "q8_0");
  EXPECT_THROW(llm::parse_weight_type("q5_k"), Error);
}

TEST(llm_test_model, ExactLlamaTensorSetAndMetadata) {
  const std::string path = tiny_model(llm::WeightType::q8_0);
  gguf_init_params params{/*no_alloc=*/true, nullptr};
  gguf_context* g = gguf_init_from_file(path.c_str(), params);
  ASSERT_NE(g, nullptr);
  std::set<std::string> names;
  for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) {
    const std::string name = gguf_get_tensor_name(g, i);
    names.insert(name);
    const bool is_norm = name.find("norm") != std::string::npos;
    EXPECT_EQ(gguf_get_tensor_type(g, i), is_norm ? GGML_TYPE_F32 : GGML_TYPE_Q8_0) << name;
  }
  std::set<std::string> expected = {"token_embd.weight", "output_norm.weight", "output.weight"};
  for (int il = 0; il < 2; ++il) {
    for (const char* t : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                          "ffn_up", "ffn_down"}) {
      expected.insert("blk." + std::to_string(il) + "." + t + ".weight");
    }
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(std::string(gguf_get_val_str(g, gguf_find_key(g, "general.architecture"))), "llama");
  EXPECT_EQ(std::string(gguf_get_val_str(g, gguf_find_key(g, "tokenizer.ggml.model"))), "llama");
  EXPECT_EQ(gguf_get_val_u32(g, gguf_find_key(g, "llama.embedding_length")), 64u);
  EXPECT_EQ(gguf_get_val_u32(g, gguf_find_key(g, "llama.attention.head_count_kv")), 4u);
  EXPECT_EQ(gguf_get_arr_n(g, gguf_find_key(g, "tokenizer.ggml.tokens")), 1024u);
  gguf_free(g);
}

TEST(llm_test_model, EveryWeightTypeLoadsAndGenerates) {
  for (auto type : {llm::WeightType::f32, llm::WeightType::f16, llm::WeightType::q8_0, llm::WeightType::q4_0}) {
    SCOPED_TRACE(std::string(llm::to_string(type)));
    const std::string path = tiny_model(type);
    llm::Session session(path, test_session_params());
    EXPECT_EQ(session.n_embd_inp(), 64);
    EXPECT_EQ(session.n_layer(), 2);
    EXPECT_EQ(session.n_head_kv(), 4);
    EXPECT_EQ(session.n_vocab(), 1024);
    EXPECT_EQ(session.bos(), 1);
    EXPECT_EQ(session.eos(), 2);
    llm::SamplingParams greedy;
    greedy.max_tokens = 8;
    const auto result = session.generate(one(Chunk::from_text("What is in the image?")), greedy);
    EXPECT_GT(result.n_prompt_tokens, 1);
    if (result.stop != llm::StopReason::eog) {
      EXPECT_EQ(result.n_generated, 8);
    }
    // Same seed, same file: identical bytes.
    const auto again = temp_dir("again") / "llm.gguf";
    llm::write_test_llm(again.string(), llm::test_llm_shape("tiny"), 42, type);
    EXPECT_EQ(std::filesystem::file_size(again), std::filesystem::file_size(path));
  }
}

TEST(llm_test_model, VocabularyTokenisesIntoWordPieces) {
  llm::Session session(tiny_model(), test_session_params());
  const std::string text = "What is in the image? Describe the picture.";
  const auto tokens = session.tokenize(text, false);
  // "▁What" "▁is" "▁in" "▁the" "▁image" "?" "▁Describe" "▁the" "▁picture" "."
  EXPECT_EQ(tokens.size(), 10u);
  EXPECT_EQ(session.token_to_piece(tokens[0]), " What");
  EXPECT_EQ(session.detokenize(tokens), " " + text);
  // Unknown characters fall back to bytes and still round-trip.
  const auto odd = session.tokenize("naïve ☃", false);
  EXPECT_EQ(session.detokenize(odd), " naïve ☃");
}

TEST(llm_test_model, ReadTokenEmbeddingsMatchesShapeAndRejectsBadIds) {
  const std::string path = tiny_model(llm::WeightType::q4_0);
  const std::vector<int32_t> ids = {1, 300, 1023};
  const auto rows = llm::read_token_embeddings(path, ids);
  ASSERT_EQ(rows.size(), 3u * 64u);
  float norm = 0.0f;
  for (float v : rows) norm += v * v;
  EXPECT_GT(norm, 0.0f);
  const std::vector<int32_t> bad = {1024};
  EXPECT_THROW(llm::read_token_embeddings(path, bad), Error);
  EXPECT_THROW(llm::read_token_embeddings("/nonexistent.gguf", ids), Error);
}

// A vocabulary-sized tensor bigger than one generation block (4M floats) is written in several blocks;
// grouped-query attention (n_head_kv < n_head) and vocabulary padding to 32000 load correctly.
TEST(llm_test_model, BlockStreamedTensorsAndGqaLoad) {
  const llm::TestLlmShape shape{"wide-vocab", 256, 512, 1, 4, 2, 32000, 512};
  const auto path = (temp_dir("wide") / "llm.gguf").string();
  llm::write_test_llm(path, shape, 7, llm::WeightType::q8_0);
  llm::Session session(path, test_session_params());
  EXPECT_EQ(session.n_vocab(), 32000);
  EXPECT_EQ(session.n_head_kv(), 2);
  EXPECT_EQ(session.kv_bytes_per_token(), 1 * (256 / 4 * 2) * 2 * 2);
  const std::vector<int32_t> ids = {1, 31999, 20000};
  const auto rows = llm::read_token_embeddings(path, ids);
  session.prefill(one(Chunk::from_tokens(ids)));
  const auto from_tokens = session.last_logits();
  session.prefill(one(Chunk::from_embeddings(rows, 3)));
  EXPECT_LE(max_abs_diff(from_tokens, session.last_logits()), 1e-4f);
  EXPECT_THROW(llm::write_test_llm(path, {"bad", 100, 128, 1, 4, 4, 512, 512}, 0, llm::WeightType::q4_0), Error);
}

}  // namespace
}  // namespace vtprune::test
