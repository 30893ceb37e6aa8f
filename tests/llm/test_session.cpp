// Session against real weights (stories260K) and generated models: greedy reference text, token vs
// embedding prefill, mixed chunks, sampling determinism, streaming, timings / KV, errors.
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "llm_test_util.h"

namespace vtprune::test {
namespace {

using llm::Chunk;
using llm::Session;

constexpr const char* kStories = "models/stories260K/model.gguf";

std::vector<Chunk> one(Chunk c) {
  std::vector<Chunk> v;
  v.push_back(std::move(c));
  return v;
}

// Next-token logits from the prompt fed as tokens, and from the same tokens' embedding rows.
void expect_tokens_equal_embeddings(const std::string& model) {
  Session session(model, test_session_params());
  const std::vector<int32_t> tokens = session.tokenize("Once upon a time", /*add_special=*/true);
  ASSERT_GE(tokens.size(), 3u);
  ASSERT_EQ(tokens[0], session.bos());

  session.prefill(one(Chunk::from_tokens(tokens)));
  const std::vector<float> from_tokens = session.last_logits();

  const std::vector<float> rows = llm::read_token_embeddings(model, tokens);
  ASSERT_EQ(rows.size(), tokens.size() * static_cast<size_t>(session.n_embd_inp()));
  const auto pre = session.prefill(one(Chunk::from_embeddings(rows, static_cast<int64_t>(tokens.size()))));
  EXPECT_EQ(pre.n_tokens, static_cast<int>(tokens.size()));
  const std::vector<float> from_embeddings = session.last_logits();
  EXPECT_LE(max_abs_diff(from_tokens, from_embeddings), 1e-4f) << model;
}

TEST(llm_stories260k, GreedyReproducesReferenceContinuation) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session session(stories_model(), test_session_params());
  EXPECT_EQ(session.n_embd_inp(), 64);
  EXPECT_EQ(session.n_layer(), 5);
  EXPECT_EQ(session.n_vocab(), 512);
  llm::SamplingParams greedy;
  greedy.max_tokens = 40;
  const auto result = session.generate(one(Chunk::from_text("Once upon a time")), greedy);
  const std::string reference = ", there was a little girl named Lily. She loved to play outside in the park.";
  EXPECT_EQ(result.text.substr(0, reference.size()), reference) << "got: " << result.text;
  EXPECT_EQ(result.n_generated, static_cast<int>(result.tokens.size()));
}

TEST(llm_stories260k, TokenEmbeddingsGiveSameLogitsAsTokens) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  expect_tokens_equal_embeddings(stories_model());
}

TEST(llm_stories260k, TextTokensEmbeddingsTextChunksHaveContiguousPositions) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  llm::SessionParams per_chunk = test_session_params();
  per_chunk.text_as_embeddings = false;  // one decode per chunk
  Session session(stories_model(), per_chunk);
  EXPECT_FALSE(session.decodes_text_as_embeddings());
  const std::vector<int32_t> tokens = session.tokenize("Once upon a time there was a dog", true);
  ASSERT_GE(tokens.size(), 7u);
  session.prefill(one(Chunk::from_tokens(tokens)));
  const std::vector<float> reference = session.last_logits();

  // tokens [0,2) as ids, [2,5) as embedding rows, [5,n) as ids: same sequence, positions 0..n-1.
  const std::vector<int32_t> head(tokens.begin(), tokens.begin() + 2);
  const std::vector<int32_t> middle(tokens.begin() + 2, tokens.begin() + 5);
  const std::vector<int32_t> tail(tokens.begin() + 5, tokens.end());
  std::vector<Chunk> mixed;
  mixed.push_back(Chunk::from_tokens(head));
  mixed.push_back(Chunk::from_embeddings(llm::read_token_embeddings(stories_model(), middle), 3));
  mixed.push_back(Chunk::from_tokens(tail));
  const auto pre = session.prefill(mixed);
  EXPECT_EQ(pre.n_tokens, static_cast<int>(tokens.size()));
  ASSERT_EQ(pre.chunks.size(), 3u);
  EXPECT_EQ(pre.chunks[0].n_tokens, 2);
  EXPECT_EQ(pre.chunks[1].n_tokens, 3);
  EXPECT_EQ(pre.chunks[1].kind, Chunk::Kind::embeddings);
  EXPECT_EQ(pre.chunks[2].n_tokens, static_cast<int>(tail.size()));
  EXPECT_FALSE(pre.single_batch);
  EXPECT_LE(max_abs_diff(reference, session.last_logits()), 1e-4f);

  // Generation continues after the mixed prompt exactly as after the plain one.
  llm::SamplingParams greedy;
  greedy.max_tokens = 12;
  const auto plain = session.generate(one(Chunk::from_tokens(tokens)), greedy);
  const auto from_mixed = session.generate(mixed, greedy);
  EXPECT_EQ(plain.tokens, from_mixed.tokens);
}

// The default: a text + image prompt is one batch of embedding rows (text via token_embd), with the same
// logits and the same greedy continuation as decoding the chunks one by one.
TEST(llm_stories260k, MixedPromptDecodedAsOneEmbeddingBatchMatchesPerChunkDecodes) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  llm::SessionParams per_chunk_params = test_session_params();
  per_chunk_params.text_as_embeddings = false;
  Session per_chunk(stories_model(), per_chunk_params);
  Session single(stories_model(), test_session_params());
  ASSERT_TRUE(single.decodes_text_as_embeddings()) << "stories260K is a llama-architecture file";

  const std::vector<int32_t> image_like = single.tokenize(" little dog and a big cat", false);
  std::vector<Chunk> mixed;
  mixed.push_back(Chunk::from_text("Once upon a time there was a"));
  mixed.push_back(Chunk::from_embeddings(llm::read_token_embeddings(stories_model(), image_like),
                                         static_cast<int64_t>(image_like.size())));
  mixed.push_back(Chunk::from_text(" who"));

  const auto a = per_chunk.prefill(mixed);
  const auto b = single.prefill(mixed);
  EXPECT_EQ(a.n_tokens, b.n_tokens);
  EXPECT_EQ(a.kv_bytes, b.kv_bytes);
  EXPECT_FALSE(a.single_batch);
  EXPECT_TRUE(b.single_batch);
  ASSERT_EQ(b.chunks.size(), 1u);
  EXPECT_EQ(b.chunks[0].n_tokens, b.n_tokens);
  EXPECT_LE(max_abs_diff(per_chunk.last_logits(), single.last_logits()), 1e-4f);

  llm::SamplingParams greedy;
  greedy.max_tokens = 16;
  EXPECT_EQ(per_chunk.generate(mixed, greedy).tokens, single.generate(mixed, greedy).tokens);

  // A text-only prompt keeps the token path; a bad token id in a tokens chunk is still an error.
  EXPECT_FALSE(single.prefill(one(Chunk::from_text("Once upon a time"))).single_batch);
  std::vector<Chunk> bad = mixed;
  bad[2] = Chunk::from_tokens({single.n_vocab()});
  EXPECT_THROW(single.prefill(bad), Error);
}

// share(): a second context on the same loaded model. Both generate at the same time on two threads and
// each gets exactly what a lone session gets; the shared model outlives the session it came from.
TEST(llm_stories260k, SharedSessionsRunConcurrentlyOnOneModel) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  llm::SamplingParams greedy;
  greedy.max_tokens = 24;
  const auto prompt_a = one(Chunk::from_text("Once upon a time"));
  const auto prompt_b = one(Chunk::from_text("The dog ran to the"));
  std::vector<int32_t> alone_a, alone_b;
  {
    Session alone(stories_model(), test_session_params());
    alone_a = alone.generate(prompt_a, greedy).tokens;
    alone_b = alone.generate(prompt_b, greedy).tokens;
  }
  auto original = std::make_unique<Session>(stories_model(), test_session_params());
  Session shared = original->share();
  EXPECT_EQ(shared.n_vocab(), original->n_vocab());
  EXPECT_EQ(shared.decodes_text_as_embeddings(), original->decodes_text_as_embeddings());
  for (int round = 0; round < 3; ++round) {
    std::vector<int32_t> a, b;
    std::thread other([&] { b = shared.generate(prompt_b, greedy).tokens; });
    a = original->generate(prompt_a, greedy).tokens;
    other.join();
    EXPECT_EQ(a, alone_a) << "round " << round;
    EXPECT_EQ(b, alone_b) << "round " << round;
  }
  original.reset();
  EXPECT_EQ(shared.generate(prompt_a, greedy).tokens, alone_a);
}

TEST(llm_stories260k, TextChunkEqualsItsTokensAndOnlyFirstChunkGetsBos) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session session(stories_model(), test_session_params());
  session.prefill(one(Chunk::from_text("Once upon a time")));
  const auto as_text = session.last_logits();
  session.prefill(one(Chunk::from_tokens(session.tokenize("Once upon a time", true))));
  EXPECT_EQ(max_abs_diff(as_text, session.last_logits()), 0.0f);

  std::vector<Chunk> two;
  two.push_back(Chunk::from_text("Once upon"));
  two.push_back(Chunk::from_text(" a time"));
  const auto pre = session.prefill(two);
  const int expected = static_cast<int>(session.tokenize("Once upon", true).size() +
                                        session.tokenize(" a time", false).size());
  EXPECT_EQ(pre.n_tokens, expected);
}

TEST(llm_stories260k, SmallBatchesSplitChunksWithoutChangingLogits) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session whole(stories_model(), test_session_params(512, 512));
  Session pieces(stories_model(), test_session_params(512, 3));
  EXPECT_EQ(pieces.n_batch(), 3);
  const std::vector<int32_t> tokens = whole.tokenize("Once upon a time there was a little dog", true);
  const std::vector<float> rows = llm::read_token_embeddings(stories_model(), tokens);
  const auto prompt = one(Chunk::from_embeddings(rows, static_cast<int64_t>(tokens.size())));
  whole.prefill(prompt);
  pieces.prefill(prompt);
  EXPECT_LE(max_abs_diff(whole.last_logits(), pieces.last_logits()), 1e-4f);
}

TEST(llm_stories260k, SeededSamplingIsDeterministic) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session session(stories_model(), test_session_params());
  llm::SamplingParams sampling;
  sampling.temperature = 1.0f;
  sampling.top_p = 0.95f;
  sampling.max_tokens = 32;
  sampling.seed = 1234;
  const auto prompt = one(Chunk::from_text("Once upon a time"));
  const auto a = session.generate(prompt, sampling);
  const auto b = session.generate(prompt, sampling);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  // Different seeds explore different continuations (at least one of several differs).
  bool any_differs = false;
  for (uint32_t seed = 1; seed <= 4 && !any_differs; ++seed) {
    sampling.seed = seed;
    any_differs = session.generate(prompt, sampling).tokens != a.tokens;
  }
  EXPECT_TRUE(any_differs);
}

TEST(llm_stories260k, StreamingPiecesTimingsAndKvBytes) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session session(stories_model(), test_session_params());
  llm::SamplingParams greedy;
  greedy.max_tokens = 16;
  std::string streamed;
  int pieces = 0;
  const auto result = session.generate(one(Chunk::from_text("Once upon a time")), greedy,
                                       [&](std::string_view piece) {
                                         streamed += piece;
                                         ++pieces;
                                       });
  EXPECT_EQ(streamed, result.text);
  EXPECT_EQ(pieces, result.n_generated);
  EXPECT_EQ(result.n_generated, 16);
  EXPECT_EQ(result.stop, llm::StopReason::max_tokens);
  EXPECT_EQ(result.n_prompt_tokens, static_cast<int>(session.tokenize("Once upon a time", true).size()));
  EXPECT_GT(result.prefill_ms, 0.0);
  EXPECT_GE(result.ttft_ms, result.prefill_ms);
  EXPECT_GT(result.decode_ms, 0.0);
  EXPECT_GT(result.decode_tok_s, 0.0);
  // 5 layers x (64 / 8 heads x 4 kv heads) x (K + V) x F16 = 640 bytes per token.
  EXPECT_EQ(session.kv_bytes_per_token(), 640);
  EXPECT_EQ(result.kv_bytes_analytic, 640 * result.n_prompt_tokens);
  // The serialised sequence state is the K/V rows plus a small header (positions, cell metadata).
  EXPECT_GE(result.kv_bytes, result.kv_bytes_analytic);
  EXPECT_LE(result.kv_bytes, result.kv_bytes_analytic + 4096);
}

TEST(llm_stories260k, StopsWhenContextIsFull) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  Session session(stories_model(), test_session_params(/*n_ctx=*/16, /*n_batch=*/16));
  llm::SamplingParams greedy;
  greedy.max_tokens = 100;
  const auto result = session.generate(one(Chunk::from_text("Once upon a time")), greedy);
  if (result.stop != llm::StopReason::eog) {
    EXPECT_EQ(result.stop, llm::StopReason::context_full);
    EXPECT_EQ(result.n_prompt_tokens + result.n_generated, session.n_ctx() + 1);
  }
}

TEST(llm_stories260k, ClearErrors) {
  VTPRUNE_REQUIRE_SHARED(kStories);
  // Missing file.
  try {
    Session missing("/nonexistent/dir/model.gguf", test_session_params());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos) << e.what();
  }
  // Corrupt file.
  const auto corrupt = temp_dir("corrupt") / "bad.gguf";
  {
    std::ofstream out(corrupt, std::ios::binary);
    out << "GGUF this is not really a model";
  }
  try {
    Session bad(corrupt.string(), test_session_params());
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot load LLM model"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(corrupt.string()), std::string::npos) << e.what();
  }

  Session session(stories_model(), test_session_params(/*n_ctx=*/32, /*n_batch=*/32));
  // Embeddings of the wrong width (e.g. a 7B projector's 4096 into a 64-wide LLM).
  try {
    session.prefill(one(Chunk::from_embeddings(std::vector<float>(3 * 4096, 0.0f), 3)));
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 rows x 4096"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("n_embd_inp = 64"), std::string::npos) << e.what();
  }
  // Prompt longer than the context.
  try {
    std::vector<Chunk> prompt;
    prompt.push_back(Chunk::from_text("Once upon a time"));
    prompt.push_back(Chunk::from_embeddings(std::vector<float>(40 * 64, 0.0f), 40));
    session.prefill(prompt);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds 32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("40 embedding rows"), std::string::npos) << e.what();
  }
  // Token ids outside the vocabulary, and an empty prompt.
  EXPECT_THROW(session.prefill(one(Chunk::from_tokens({1, 99999}))), Error);
  EXPECT_THROW(session.prefill({}), Error);
}

TEST(llm_session, TinyModelTokensEqualEmbeddings) {
  expect_tokens_equal_embeddings(tiny_model(llm::WeightType::f16));
  expect_tokens_equal_embeddings(tiny_model(llm::WeightType::q8_0));
}

TEST(llm_session, MovedSessionStillWorks) {
  Session first(tiny_model(), test_session_params());
  Session moved = std::move(first);
  llm::SamplingParams greedy;
  greedy.max_tokens = 4;
  EXPECT_NO_THROW(moved.generate(one(Chunk::from_text("What is in the image?")), greedy));
}

}  // namespace
}  // namespace vtprune::test
