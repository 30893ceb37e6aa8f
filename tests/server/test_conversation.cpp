// What serving conversations rests on, below HTTP: LLaVA's conversation template byte for byte, KV prefix reuse
// (session and pipeline, LLaVA-1.5 and Qwen2.5-VL layouts) against fresh prefills, stop strings, penalties and log
// probabilities in the session, the image embedding cache (bound, LRU order, keys), and which failures are the
// request's (400) and which the encoder's (500).
#include <gtest/gtest.h>

#include <cctype>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include "server_test_util.h"
#include "vtprune/embedding_cache.h"
#include "vtprune/llm.h"
#include "vtprune/pipeline.h"

namespace vtprune::test {
namespace {

namespace fs = std::filesystem;
using llm::ChatMessage;
using llm::Chunk;

const std::string kSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the human's questions.";

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::abs(x));
  return m;
}

float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// Reused and fresh prefills decode the same rows in different batches: ggml's CPU matmul kernels round activations
// to F16 in some batch sizes and not in others (~2^-11 relative per product), so the same logits come out within
// ~2e-3 of the largest logit on these 2-layer models (observed 1.6e-3 and 1.8e-3 for the two families' second
// turns on an AVX-512 machine); 5e-3 leaves room for other CPUs' kernels. A wrong position, a missing or duplicated
// row moves logits by O(1) of the largest.
constexpr float kBatchSplitTolerance = 5e-3f;

// ---- LLaVA's conversation template ------------------------------------------------------------------------

// The expected strings are the output of LLaVA's own llava/conversation.py (haotian-liu/LLaVA at c121f04):
//   conv = conv_llava_v1.copy(); conv.system = SYSTEM (when given); conv.append_message(role, msg) per turn;
//   conv.append_message(conv.roles[1], None); conv.get_prompt()
// vtprune's default system prompt is conv_llava_v1's ("curious human"), what LLaVA-1.5's run_llava / cli use
// (conv_mode llava_v1); conv_vicuna_v1 ("curious user") is the same SeparatorStyle.TWO template with another
// system sentence, so a client's system message gives the same bytes under either.
TEST(ServerConversation, LlavaTemplateByteForByte) {
  EXPECT_EQ(llm::llava15_conversation_text(std::vector<ChatMessage>{{"user", "<image>\nWhat is in the image?"}}),
            kSystem + " USER: <image>\nWhat is in the image? ASSISTANT:");
  // the single-turn shorthand is the same string
  EXPECT_EQ(llm::llava15_conversation_text(std::vector<ChatMessage>{{"user", "<image>\nWhat is in the image?"}}),
            llm::llava15_prompt_text("What is in the image?"));
  const std::vector<ChatMessage> three = {{"system", "You are a terse assistant."},
                                          {"user", "<image>\nWhat is in the image?"},
                                          {"assistant", "A red square."},
                                          {"user", "What colour is it?"},
                                          {"assistant", "Red."},
                                          {"user", "Are you sure?"}};
  EXPECT_EQ(llm::llava15_conversation_text(three),
            "You are a terse assistant. USER: <image>\nWhat is in the image? ASSISTANT: A red square.</s>USER: What "
            "colour is it? ASSISTANT: Red.</s>USER: Are you sure? ASSISTANT:");
  EXPECT_EQ(llm::llava15_conversation_text(std::vector<ChatMessage>{
                {"user", "Hello"}, {"assistant", "Hi! How can I help?"}, {"user", "<image>\nDescribe this."}}),
            kSystem + " USER: Hello ASSISTANT: Hi! How can I help?</s>USER: <image>\nDescribe this. ASSISTANT:");
  EXPECT_EQ(llm::llava15_conversation_text(std::vector<ChatMessage>{{"system", ""}, {"user", "Hi"}}), " USER: Hi ASSISTANT:");
  // developer is OpenAI's newer name for system
  EXPECT_EQ(llm::llava15_conversation_text(std::vector<ChatMessage>{{"developer", "Be brief."}, {"user", "Hi"}}),
            "Be brief. USER: Hi ASSISTANT:");
}

Chunk rows(int64_t n, int width, float value) {
  return Chunk::from_embeddings(std::vector<float>(static_cast<size_t>(n * width), value), n);
}

// The separator "</s>" is LLaVA's tokenizer's EOS token: a token chunk; text around it and around images is cut
// there, and a user's own "</s>" stays text.
TEST(ServerConversation, LlavaChunksPutEosBetweenTurnsAndImagesAtMarkers) {
  const std::vector<ChatMessage> conv = {{"system", "You are a terse assistant."},
                                         {"user", "<image>\nWhat is in the image?"},
                                         {"assistant", "A red </s> square."},
                                         {"user", "And <image> this?"}};
  std::vector<Chunk> images;
  images.push_back(rows(3, 4, 1.0f));
  images.push_back(rows(2, 4, 2.0f));
  const std::vector<Chunk> chunks = llm::llava15_conversation(conv, std::move(images), /*eos=*/2);
  ASSERT_EQ(chunks.size(), 7u);
  EXPECT_EQ(chunks[0].text, "You are a terse assistant. USER: ");
  EXPECT_EQ(chunks[1].kind, Chunk::Kind::embeddings);
  EXPECT_EQ(chunks[1].n_rows, 3);
  EXPECT_EQ(chunks[2].text, "\nWhat is in the image? ASSISTANT: A red </s> square.");
  EXPECT_EQ(chunks[3].kind, Chunk::Kind::tokens);
  EXPECT_EQ(chunks[3].tokens, std::vector<int32_t>{2});
  EXPECT_EQ(chunks[4].text, "USER: And ");
  EXPECT_EQ(chunks[5].n_rows, 2);
  EXPECT_EQ(chunks[6].text, " this? ASSISTANT:");
  // markers and images must agree
  std::vector<Chunk> one;
  one.push_back(rows(1, 4, 0.0f));
  EXPECT_THROW(llm::llava15_conversation(conv, std::move(one), 2), InputError);
}

size_t refused_index(const std::vector<ChatMessage>& conv) {
  try {
    (void)llm::llava15_conversation_text(conv);
  } catch (const llm::MessageError& e) {
    EXPECT_EQ(e.field(), "role");
    EXPECT_NE(std::string(e.what()).find("messages[" + std::to_string(e.index()) + "]"), std::string::npos) << e.what();
    return e.index();
  }
  ADD_FAILURE() << "accepted";
  return 999;
}

TEST(ServerConversation, LlavaRefusesWhatItsTemplateCannotSay) {
  EXPECT_EQ(refused_index({{"assistant", "Hi"}, {"user", "Hello"}}), 0u);
  EXPECT_EQ(refused_index({{"system", "s"}, {"user", "a"}, {"user", "b"}}), 2u);
  EXPECT_EQ(refused_index({{"user", "a"}, {"system", "late"}, {"user", "b"}}), 1u);
  EXPECT_EQ(refused_index({{"user", "a"}, {"assistant", "b"}}), 1u);
  EXPECT_EQ(refused_index({{"system", "only"}}), 0u);
  EXPECT_EQ(refused_index({{"user", "a"}, {"tool", "b"}, {"user", "c"}}), 1u);
}

// ---- the session: prefix reuse, stop strings, penalties, log probabilities ---------------------------------

class ServerSession : public ::testing::Test {
 protected:
  static llm::Session session(int n_ctx = 1024) {
    return llm::Session(tiny_model().llm.string(), {.n_ctx = n_ctx, .n_batch = 1024, .threads = 1});
  }
  // A LLaVA-shaped prompt: text, an image's rows (keyed), text.
  static std::vector<Chunk> prompt(const llm::Session& s, const std::string& key, float seed, const std::string& question) {
    std::vector<Chunk> images;
    std::mt19937 rng(static_cast<uint32_t>(seed * 1000));
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> image(static_cast<size_t>(40 * s.n_embd_inp()));
    for (float& v : image) v = normal(rng);
    images.push_back(Chunk::from_embeddings(std::move(image), 40));
    images.back().key = key;
    return llm::llava15_prompt("<image>\n" + question, std::move(images));
  }
};

TEST_F(ServerSession, ReusedPrefixGivesTheLogitsOfAFreshPrefill) {
  llm::Session reused = session(), fresh = session();
  const std::vector<Chunk> first = prompt(reused, "image-a", 1.0f, "What is in the image?");
  const llm::PrefillResult a = reused.prefill(first, /*reuse_prefix=*/true);
  EXPECT_EQ(a.n_reused, 0) << "nothing to reuse in an empty cache";
  // the next turn: everything of the first prompt, a separator token and more text
  std::vector<Chunk> second = first;
  second.push_back(Chunk::from_tokens({reused.eos()}));
  second.push_back(Chunk::from_text("USER: And the colours? ASSISTANT:"));
  const llm::PrefillResult b = reused.prefill(second, true);
  EXPECT_EQ(b.n_reused, a.n_tokens) << "the whole first prompt stays in the cache";
  const llm::PrefillResult c = fresh.prefill(second);
  EXPECT_EQ(c.n_reused, 0);
  EXPECT_EQ(b.n_tokens, c.n_tokens);
  EXPECT_EQ(b.n_positions, c.n_positions);
  const std::vector<float> lr = reused.last_logits(), lf = fresh.last_logits();
  EXPECT_LE(max_difference(lr, lf), kBatchSplitTolerance * max_abs(lf)) << max_difference(lr, lf) << " of " << max_abs(lf);

  // the same prompt again: all rows but the last come from the cache (its logits are computed again)
  const llm::PrefillResult again = reused.prefill(second, true);
  EXPECT_EQ(again.n_reused, again.n_tokens - 1);
  EXPECT_LE(max_difference(reused.last_logits(), lf), kBatchSplitTolerance * max_abs(lf));

  // without reuse nothing is kept, even for the same prompt
  EXPECT_EQ(reused.prefill(second).n_reused, 0);
}

TEST_F(ServerSession, GeneratedTokensAreReusedAndImagesOnlyByTheirKey) {
  llm::Session s = session();
  const std::vector<Chunk> first = prompt(s, "image-a", 1.0f, "Describe it.");
  const llm::GenerationResult gen = s.generate(first, {.max_tokens = 4}, {}, true);
  ASSERT_EQ(gen.tokens.size(), 4u);
  std::vector<Chunk> next = first;
  next.push_back(Chunk::from_tokens(gen.tokens));
  next.push_back(Chunk::from_text(" More?"));
  // the prompt and the 3 generated tokens that were decoded (the 4th was sampled, not decoded)
  EXPECT_EQ(s.prefill(next, true).n_reused, gen.n_prompt_tokens + 3);

  // another image (another key) with the same rows count: only the text before it is reused
  const std::vector<Chunk> other = prompt(s, "image-b", 2.0f, "Describe it.");
  const int text_before = static_cast<int>(s.tokenize(kSystem + " USER: ", true).size());
  EXPECT_EQ(s.prefill(other, true).n_reused, text_before);
  // unkeyed rows are never taken from the cache, even when they are the same floats
  std::vector<Chunk> unkeyed = other;
  unkeyed[1].key.clear();
  s.prefill(unkeyed, true);
  EXPECT_EQ(s.prefill(unkeyed, true).n_reused, text_before);
}

// M-RoPE (Qwen2.5-VL's LLM): an image chunk on a grid spans max(h, w) positions; the text after it starts there.
// Reusing the image and decoding only the new text must put that text at exactly those positions.
TEST_F(ServerSession, MropeGridPositionsStayWhatAFreshPrefillGives) {
  const fs::path dir = temp_dir("qwen-llm");
  llm::write_test_llm((dir / "llm.gguf").string(), llm::test_llm_shape("qwen2.5-vl"), /*seed=*/3);
  const auto open = [&] { return llm::Session((dir / "llm.gguf").string(), {.n_ctx = 1024, .n_batch = 1024, .threads = 1}); };
  llm::Session reused = open(), fresh = open();
  ASSERT_TRUE(reused.uses_mrope());
  // a 6 x 9 grid, pruned to every other token: span 9
  std::vector<int32_t> ys, xs;
  for (int32_t k = 0; k < 54; k += 2) ys.push_back(k / 9), xs.push_back(k % 9);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> image(ys.size() * static_cast<size_t>(reused.n_embd_inp()));
  for (float& v : image) v = normal(rng);
  std::vector<Chunk> first = {Chunk::from_tokens(reused.tokenize("<|im_start|>user\n<|vision_start|>", false)),
                              Chunk::from_grid_embeddings(image, static_cast<int64_t>(ys.size()), ys, xs, 9),
                              Chunk::from_tokens(reused.tokenize("What is it?<|im_end|>\n<|im_start|>assistant\n", false))};
  first[1].key = "grid-image";
  reused.prefill(first, true);
  std::vector<Chunk> second = first;
  second.push_back(Chunk::from_tokens(reused.tokenize("A cat.<|im_end|>\n<|im_start|>user\nSure?", false)));
  const llm::PrefillResult r = reused.prefill(second, true);
  const llm::PrefillResult f = fresh.prefill(second);
  int first_rows = 0;
  for (const Chunk& c : first) first_rows += static_cast<int>(c.kind == Chunk::Kind::embeddings ? c.n_rows : c.tokens.size());
  EXPECT_EQ(r.n_reused, first_rows);
  EXPECT_EQ(r.n_positions, f.n_positions);
  EXPECT_EQ(f.n_positions, f.n_tokens - static_cast<int>(ys.size()) + 9) << "the grid spans 9 positions for 27 rows";
  const std::vector<float> lr = reused.last_logits(), lf = fresh.last_logits();
  EXPECT_LE(max_difference(lr, lf), kBatchSplitTolerance * max_abs(lf)) << max_difference(lr, lf) << " of " << max_abs(lf);
  // cutting inside the text after the image (a different last sentence) keeps the image and positions too
  std::vector<Chunk> third = first;
  third.push_back(Chunk::from_tokens(reused.tokenize("A dog.", false)));
  const llm::PrefillResult r3 = reused.prefill(third, true);
  EXPECT_GE(r3.n_reused, first_rows);  // and the tokens both answers start with
  EXPECT_LT(r3.n_reused, r3.n_tokens);
  fresh.prefill(third);
  EXPECT_LE(max_difference(reused.last_logits(), fresh.last_logits()), kBatchSplitTolerance * max_abs(fresh.last_logits()));
}

// Stop strings end generation where they first occur, are never part of the answer, and never reach the piece
// callback, not even split over several tokens.
TEST_F(ServerSession, StopStringsAreCutAndNeverStreamed) {
  llm::Session s = session();
  const std::vector<Chunk> p = prompt(s, "", 1.0f, "Tell a story.");
  const llm::GenerationResult free_run = s.generate(p, {.max_tokens = 24});
  ASSERT_GE(free_run.tokens.size(), 6u);
  // a stop string that spans a token boundary: the end of token 2's text and the start of token 3's
  size_t offset = 0;
  for (int i = 0; i < 2; ++i) offset += s.token_to_piece(free_run.tokens[static_cast<size_t>(i)]).size();
  const std::string third = s.token_to_piece(free_run.tokens[3]);
  ASSERT_GT(offset, 0u);
  ASSERT_FALSE(third.empty());
  const size_t begin = offset - 1, end = offset + s.token_to_piece(free_run.tokens[2]).size() + 1;
  const std::string stop = free_run.text.substr(begin, end - begin);
  const size_t first = free_run.text.find(stop);  // it may occur earlier already
  std::string streamed;
  const llm::GenerationResult cut = s.generate(p, {.max_tokens = 24, .stop = {"never appears \x01", stop}},
                                               [&](std::string_view piece) { streamed += piece; });
  EXPECT_EQ(cut.stop, llm::StopReason::stop_sequence);
  EXPECT_EQ(cut.stop_sequence, stop);
  EXPECT_EQ(cut.text, free_run.text.substr(0, first));
  EXPECT_EQ(streamed, cut.text) << "held-back text was streamed, or released text was lost";
  EXPECT_EQ(streamed.find(stop), std::string::npos);
  // without a match, the whole answer is streamed, held-back tail included
  streamed.clear();
  const llm::GenerationResult none = s.generate(p, {.max_tokens = 24, .stop = {"\x01\x02"}}, [&](std::string_view piece) { streamed += piece; });
  EXPECT_EQ(none.text, free_run.text);
  EXPECT_EQ(streamed, none.text);
  EXPECT_THROW(s.generate(p, {.max_tokens = 4, .stop = {""}}), InputError);
}

// Frequency and presence penalties, checked token by token against the definition: every penalised greedy token is
// the argmax of the model's logits (a fresh prefill of the prompt and the tokens before it) minus
// frequency * count + presence * (count > 0) over the tokens generated so far.
TEST_F(ServerSession, PenaltiesFollowOpenAisDefinition) {
  llm::Session s = session();
  const std::vector<Chunk> p = prompt(s, "", 1.0f, "Repeat after me.");
  const auto repeats = [](const std::vector<int32_t>& tokens) {
    std::map<int32_t, int> counts;
    for (int32_t t : tokens) ++counts[t];
    return static_cast<int>(tokens.size() - counts.size());
  };
  const auto check = [&](float frequency, float presence) {
    SCOPED_TRACE("frequency " + std::to_string(frequency) + ", presence " + std::to_string(presence));
    const llm::GenerationResult gen =
        s.generate(p, {.max_tokens = 16, .frequency_penalty = frequency, .presence_penalty = presence});
    EXPECT_EQ(gen.tokens.size(), 16u);
    int checked = 0;
    std::map<int32_t, int> counts;
    for (size_t k = 0; k < gen.tokens.size(); ++k) {
      std::vector<Chunk> so_far = p;
      if (k > 0) so_far.push_back(Chunk::from_tokens(std::vector<int32_t>(gen.tokens.begin(), gen.tokens.begin() + static_cast<ptrdiff_t>(k))));
      s.prefill(so_far);
      std::vector<float> logits = s.last_logits();
      for (const auto& [token, n] : counts) logits[static_cast<size_t>(token)] -= frequency * static_cast<float>(n) + presence;
      std::vector<float> sorted = logits;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<>());
      // a near-tie may flip between the batched prefill here and the token-by-token decode there (see
      // kBatchSplitTolerance); every other step must pick the penalised argmax
      if (sorted[0] - sorted[1] > kBatchSplitTolerance * max_abs(logits)) {
        EXPECT_EQ(gen.tokens[k], std::max_element(logits.begin(), logits.end()) - logits.begin()) << "step " << k;
        ++checked;
      }
      ++counts[gen.tokens[k]];
    }
    EXPECT_GE(checked, 12);
    return repeats(gen.tokens);
  };
  const int plain = check(0.0f, 0.0f);
  const int discouraged = check(1.5f, 0.5f);
  const int encouraged = check(-2.0f, -1.0f);  // negative penalties reward repetition
  EXPECT_LE(discouraged, plain);
  EXPECT_GT(encouraged, plain) << "a negative penalty should make the model repeat itself";
}

TEST_F(ServerSession, LogprobsAreTheModelsLogSoftmax) {
  llm::Session s = session();
  const std::vector<Chunk> p = prompt(s, "", 1.0f, "Hi.");
  s.prefill(p);
  const std::vector<float> logits = s.last_logits();
  const llm::GenerationResult gen = s.generate(p, {.max_tokens = 5, .top_logprobs = 3});
  ASSERT_EQ(gen.logprobs.size(), gen.tokens.size());
  double z = 0.0;
  const float m = *std::max_element(logits.begin(), logits.end());
  for (float l : logits) z += std::exp(static_cast<double>(l) - m);
  const double expected = logits[static_cast<size_t>(gen.tokens[0])] - m - std::log(z);
  EXPECT_NEAR(gen.logprobs[0].logprob, expected, 1e-4);  // float logits, double sums
  for (size_t i = 0; i < gen.logprobs.size(); ++i) {
    const llm::TokenLogprob& lp = gen.logprobs[i];
    EXPECT_EQ(lp.token, gen.tokens[i]);
    EXPECT_EQ(lp.piece, s.token_to_piece(lp.token));
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_EQ(lp.top[0].first, lp.token) << "greedy picks the most likely token";
    EXPECT_FLOAT_EQ(lp.top[0].second, lp.logprob);
    EXPECT_GE(lp.top[0].second, lp.top[1].second);
    EXPECT_GE(lp.top[1].second, lp.top[2].second);
    EXPECT_LE(lp.logprob, 0.0f);
  }
}

// ---- the image embedding cache ------------------------------------------------------------------------------

TEST(ServerEmbeddingCache, Sha256KnownAnswers) {
  const auto sha = [](const std::string& text) {
    return pipeline::digest(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  };
  EXPECT_EQ(sha(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),  // 56 bytes: two padding blocks
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

pipeline::EmbeddingCache::Entry entry_of(int64_t rows, int width) {
  pipeline::EmbeddingCache::Entry e;
  e.chunk = Chunk::from_embeddings(std::vector<float>(static_cast<size_t>(rows * width), 1.0f), rows);
  e.report.tokens_kept = rows;
  return e;
}

TEST(ServerEmbeddingCache, BoundAndLeastRecentlyUsedOrder) {
  const int64_t one = pipeline::EmbeddingCache::entry_bytes("a", entry_of(10, 64));
  EXPECT_GE(one, 10 * 64 * 4) << "the rows are what counts";
  pipeline::EmbeddingCache cache(3 * one + one / 2);  // room for three entries
  cache.insert("a", entry_of(10, 64));
  cache.insert("b", entry_of(10, 64));
  cache.insert("c", entry_of(10, 64));
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"c", "b", "a"}));
  ASSERT_NE(cache.find("a"), nullptr);  // a is now the most recently used
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"a", "c", "b"}));
  cache.insert("d", entry_of(10, 64));  // evicts b, the least recently used
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"d", "a", "c"}));
  EXPECT_EQ(cache.find("b"), nullptr);
  auto s = cache.stats();
  EXPECT_EQ(s.entries, 3);
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.hits, 1);
  EXPECT_EQ(s.misses, 1);
  EXPECT_LE(s.bytes, s.max_bytes);
  EXPECT_EQ(s.bytes, 3 * one);
  // a bigger entry makes room for itself, oldest first
  cache.insert("big", entry_of(20, 64));
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"big", "d"}));
  EXPECT_LE(cache.stats().bytes, cache.stats().max_bytes);
  // one larger than the whole bound is not stored (and evicts nothing)
  cache.insert("huge", entry_of(1000, 64));
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"big", "d"}));
  // replacing a key keeps one entry
  cache.insert("d", entry_of(10, 64));
  EXPECT_EQ(cache.keys(), (std::vector<std::string>{"d", "big"}));
  // counts live in the same LRU
  cache.insert_count("n", 42);
  EXPECT_EQ(cache.find_count("n"), 42);
  EXPECT_EQ(cache.find_count("m"), std::nullopt);
  const auto found = cache.find("d");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ(found->chunk.n_rows, 10);
  // size 0: nothing is stored
  pipeline::EmbeddingCache off(0);
  off.insert("a", entry_of(1, 1));
  EXPECT_TRUE(off.keys().empty());
  EXPECT_THROW(pipeline::EmbeddingCache(-1), Error);
}

// ---- the pipeline: conversations, the cache and KV reuse on both families ------------------------------------

std::vector<uint8_t> read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), {});
}

struct Family {
  std::string name;
  fs::path llm, mmproj;
  std::vector<uint8_t> image;
};

const Family& family_files(const std::string& shape) {
  static std::map<std::string, Family> made;
  auto it = made.find(shape);
  if (it != made.end()) return it->second;
  Family f{shape, {}, {}, {}};
  if (shape == "tiny") {
    f.llm = tiny_model().llm;
    f.mmproj = tiny_model().mmproj;
    f.image = png_image(96, 64, 7);
  } else {
    const fs::path dir = temp_dir("family-" + shape);
    std::string log;
    const int rc = run_command(vtprune_binary().string() + " make-test-model --shape " + shape + " --out " + dir.string(), &log);
    EXPECT_EQ(rc, 0) << log;
    f.llm = dir / "llm.gguf";
    f.mmproj = dir / "mmproj.gguf";
    f.image = read_file(dir / "image.png");
  }
  return made.emplace(shape, std::move(f)).first->second;
}

pipeline::Vlm open_vlm(const Family& f) {
  pipeline::VlmParams p;
  p.llm_path = f.llm.string();
  p.mmproj_path = f.mmproj.string();
  p.threads = 1;
  p.n_ctx = 2048;
  return pipeline::Vlm(p);
}

class ServerPipelineReuse : public ::testing::TestWithParam<std::string> {};

// An answer as a client gets it in JSON (and sends it back): bytes that are not UTF-8 (a random model's byte tokens)
// become U+FFFD.
std::string as_a_client_reads_it(const std::string& answer) {
  return json::parse(json(answer).dump(-1, ' ', false, json::error_handler_t::replace)).get<std::string>();
}

// Turn 2 of a conversation with an image in turn 1, on a pipeline that ran turn 1 (KV prefix reuse + image cache)
// and on a fresh one: the same first-token logits (within kBatchSplitTolerance), the same greedy answer, and the
// second turn neither encodes the image again nor prefills what the cache holds.
TEST_P(ServerPipelineReuse, SecondTurnEqualsAFreshPrefill) {
  const Family& f = family_files(GetParam());
  pipeline::Vlm warm = open_vlm(f);
  pipeline::Vlm fresh = warm.share();
  pipeline::EmbeddingCache cache(int64_t{64} << 20);

  pipeline::Request turn1;
  turn1.images = {f.image};
  turn1.messages = {{"system", "You answer in one short sentence."}, {"user", "<image>\nWhat is in the image?"}};
  turn1.method = "hiprune";
  turn1.budget = Budget::fraction(0.25);
  turn1.sampling.max_tokens = 8;
  turn1.cache = &cache;
  turn1.reuse_prefix = true;
  const pipeline::Result r1 = warm.run(turn1);
  ASSERT_GE(r1.images.size(), 1u);  // one per tile of a tiled image (SmolVLM, LLaVA-NeXT)
  for (const auto& im : r1.images) EXPECT_FALSE(im.cached);
  EXPECT_EQ(r1.n_cached_tokens, 0);
  EXPECT_GT(r1.timings.encode_ms, 0.0);

  pipeline::Request turn2 = turn1;
  turn2.messages.push_back({"assistant", as_a_client_reads_it(r1.answer)});
  turn2.messages.push_back({"user", "What colour is it?"});
  turn2.sampling.max_tokens = 0;  // prefill only: compare the next-token logits
  const pipeline::Result r2 = warm.run(turn2);
  ASSERT_EQ(r2.images.size(), r1.images.size());
  for (const auto& im : r2.images) EXPECT_TRUE(im.cached);
  EXPECT_EQ(r2.timings.encode_ms, 0.0) << "the image was encoded again";
  EXPECT_EQ(r2.tokens_kept, r1.tokens_kept);
  // everything of turn 1's prompt (the image included) stays in the KV cache
  EXPECT_GE(r2.n_cached_tokens, r1.n_prompt_tokens - 1) << "of " << r2.n_prompt_tokens;
  EXPECT_LT(r2.n_cached_tokens, r2.n_prompt_tokens);
  const std::vector<float> lw = warm.session().last_logits();

  pipeline::Request cold = turn2;
  cold.cache = nullptr;
  cold.reuse_prefix = false;
  const pipeline::Result rf = fresh.run(cold);
  EXPECT_EQ(rf.n_cached_tokens, 0);
  EXPECT_EQ(rf.n_prompt_tokens, r2.n_prompt_tokens);
  EXPECT_GT(rf.timings.encode_ms, 0.0);
  const std::vector<float> lf = fresh.session().last_logits();
  EXPECT_LE(max_difference(lw, lf), kBatchSplitTolerance * max_abs(lf)) << max_difference(lw, lf) << " of " << max_abs(lf);

  // the answers: the same greedy tokens; where they part, it is at a near-tie of the fresh run's top two
  turn2.sampling.max_tokens = cold.sampling.max_tokens = 12;
  turn2.sampling.top_logprobs = cold.sampling.top_logprobs = 2;
  const pipeline::Result a2 = warm.run(turn2);
  EXPECT_EQ(a2.n_cached_tokens, a2.n_prompt_tokens - 1) << "the same prompt again: all of it but the last row";
  const pipeline::Result af = fresh.run(cold);
  ASSERT_GT(af.logprobs.size(), 0u);
  for (size_t k = 0; k < std::min(a2.logprobs.size(), af.logprobs.size()); ++k) {
    if (a2.logprobs[k].token == af.logprobs[k].token) {
      EXPECT_NEAR(a2.logprobs[k].logprob, af.logprobs[k].logprob, 0.05) << k;
      continue;
    }
    const auto& top = af.logprobs[k].top;
    ASSERT_EQ(top.size(), 2u);
    EXPECT_LT(top[0].second - top[1].second, 0.01f) << "step " << k << " parts at a clear choice";
    break;
  }
  if (a2.answer == af.answer) SUCCEED();
}

// Every family's tiny pair: LLaVA-1.5 (own graph), Qwen2.5-VL (M-RoPE), Gemma 3 (sliding-window KV cache,
// non-causal image rows), SmolVLM (an image in five tiles), LLaVA-NeXT (three AnyRes tiles joined into one chunk).
INSTANTIATE_TEST_SUITE_P(Server, ServerPipelineReuse, ::testing::Values("tiny", "qwen2.5-vl", "gemma3", "smolvlm", "llava-next"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           std::string name = p.param == "tiny" ? std::string("llava_tiny") : p.param + "_tiny";
                           for (char& c : name) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// Overflowing the context in a later turn names that turn's message.
TEST(ServerPipelineConversation, ContextOverflowNamesTheMessage) {
  const Family& f = family_files("tiny");
  pipeline::VlmParams p;
  p.llm_path = f.llm.string();
  p.mmproj_path = f.mmproj.string();
  p.threads = 1;
  p.n_ctx = 700;  // 576 visual tokens + some text
  pipeline::Vlm vlm(p);
  pipeline::Request r;
  r.images = {f.image};
  std::string essay;
  for (int i = 0; i < 150; ++i) essay += "word ";
  r.messages = {{"user", "<image>\nWhat is it?"}, {"assistant", "A thing."}, {"user", essay}};
  r.sampling.max_tokens = 1;
  try {
    vlm.run(r);
    FAIL() << "accepted";
  } catch (const llm::MessageError& e) {
    EXPECT_EQ(e.index(), 2u) << e.what();
    EXPECT_EQ(e.field(), "content");
    EXPECT_EQ(e.code(), "context_length_exceeded");
  }
  // an image in an assistant message has no place
  r.messages = {{"user", "Hi"}, {"assistant", "<image>"}, {"user", "And?"}};
  try {
    vlm.run(r);
    FAIL() << "accepted";
  } catch (const llm::MessageError& e) {
    EXPECT_EQ(e.index(), 1u);
    EXPECT_EQ(e.field(), "content");
  }
}

// ---- encoder faults are the server's, request faults the client's ----------------------------------------------

TEST(ServerFaults, EncoderFaultsAreErrorsAndRequestFaultsInputErrors) {
  pipeline::VlmParams p;
  p.llm_path = tiny_model().llm.string();
  p.mmproj_path = poisoned_mmproj().string();
  p.threads = 1;
  p.n_ctx = 2048;
  pipeline::Vlm broken(p);
  pipeline::Request r;
  r.images = {png_image(64, 64)};
  r.prompt = "What is in the image?";
  r.sampling.max_tokens = 1;
  for (const char* method : {"hiprune", "divprune", "fastervlm"}) {
    SCOPED_TRACE(method);
    r.method = method;
    r.budget = Budget::tokens(32);
    try {
      broken.run(r);
      ADD_FAILURE() << "NaN features were accepted";
    } catch (const InputError& e) {
      ADD_FAILURE() << "an encoder fault was blamed on the request: " << e.what();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
    }
  }
  // on healthy files: a budget the method's options cannot meet, a budget of no token, an option out of range
  p.mmproj_path = tiny_model().mmproj.string();
  pipeline::Vlm healthy(p);
  r.method = "hiprune";
  r.options = {"alpha=5"};  // 64 anchors and their buffers cannot fit 64 tokens
  r.budget = Budget::tokens(64);
  EXPECT_THROW(healthy.run(r), InputError);
  r.options = {};
  r.budget = Budget::fraction(0.0001);
  EXPECT_THROW(healthy.run(r), InputError);
  r.budget = Budget::tokens(64);
  EXPECT_NO_THROW(healthy.run(r));
}

}  // namespace
}  // namespace vtprune::test
