// LLaVA-1.5 prompt: byte-exact strings (conv_vicuna_v1) and the token split at <image>.
#include <string>
#include <vector>

#include "llm_test_util.h"

namespace vtprune::test {
namespace {

using llm::Chunk;

const std::string kSystem =
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.";

Chunk image_rows(int64_t n_rows, int n_embd, float value = 0.01f) {
  return Chunk::from_embeddings(std::vector<float>(static_cast<size_t>(n_rows) * n_embd, value), n_rows);
}

TEST(llm_chat_template, SingleImageStringIsByteExact) {
  EXPECT_EQ(llm::llava15_prompt_text("What is shown in this image?"),
            kSystem + " USER: <image>\nWhat is shown in this image? ASSISTANT:");
  EXPECT_EQ(std::string(llm::kLlava15System), kSystem);
}

TEST(llm_chat_template, TextOnlyAndSeveralImages) {
  EXPECT_EQ(llm::llava15_prompt_text("Hi", 0), kSystem + " USER: Hi ASSISTANT:");
  EXPECT_EQ(llm::llava15_prompt_text("Compare them.", 2), kSystem + " USER: <image>\n<image>\nCompare them. ASSISTANT:");
  // Markers already in the question are kept where the user put them.
  EXPECT_EQ(llm::llava15_prompt_text("First <image> then <image>?", 2),
            kSystem + " USER: First <image> then <image>? ASSISTANT:");
  EXPECT_THROW(llm::llava15_prompt_text("only <image> once", 2), Error);
  EXPECT_THROW(llm::llava15_prompt_text("x", -1), Error);
}

TEST(llm_chat_template, ChunksSplitAtMarkers) {
  std::vector<Chunk> images;
  images.push_back(image_rows(3, 8));
  auto chunks = llm::llava15_prompt("Describe the image.", std::move(images));
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].kind, Chunk::Kind::text);
  EXPECT_EQ(chunks[0].text, kSystem + " USER: ");
  EXPECT_EQ(chunks[1].kind, Chunk::Kind::embeddings);
  EXPECT_EQ(chunks[1].n_rows, 3);
  EXPECT_EQ(chunks[2].kind, Chunk::Kind::text);
  EXPECT_EQ(chunks[2].text, "\nDescribe the image. ASSISTANT:");

  std::vector<Chunk> two;
  two.push_back(image_rows(2, 8, 1.0f));
  two.push_back(image_rows(5, 8, 2.0f));
  chunks = llm::llava15_prompt("Which is red?", std::move(two));
  ASSERT_EQ(chunks.size(), 5u);
  EXPECT_EQ(chunks[1].n_rows, 2);
  EXPECT_EQ(chunks[2].text, "\n");
  EXPECT_EQ(chunks[3].n_rows, 5);
  EXPECT_EQ(chunks[3].embeddings[0], 2.0f);
  EXPECT_EQ(chunks[4].text, "\nWhich is red? ASSISTANT:");

  std::vector<Chunk> not_an_image;
  not_an_image.push_back(Chunk::from_text("oops"));
  EXPECT_THROW(llm::llava15_prompt("q", std::move(not_an_image)), Error);
}

// Under SentencePiece the text after <image> starts with the dummy-prefix "▁" and then the byte token
// <0x0A>, exactly as LLaVA's tokenizer_image_token produces (29871, 13 in LLaMA's vocabulary).
void expect_sentencepiece_split(const std::string& model, int expected_space_id) {
  llm::SessionParams per_chunk = test_session_params();
  per_chunk.text_as_embeddings = false;  // so that the timings show each chunk's length
  llm::Session session(model, per_chunk);
  const std::vector<int32_t> suffix = session.tokenize("\nWhat is in the image? ASSISTANT:", false);
  ASSERT_GE(suffix.size(), 3u);
  EXPECT_EQ(session.token_to_piece(suffix[0]), " ");
  EXPECT_EQ(session.token_to_piece(suffix[1]), "\n");
  if (expected_space_id >= 0) {
    EXPECT_EQ(suffix[0], expected_space_id);
    EXPECT_EQ(suffix[1], 13);  // <0x0A>: byte tokens start at id 3 in LLaMA-style vocabularies
  }
  const std::vector<int32_t> prefix = session.tokenize(kSystem + " USER: ", true);
  ASSERT_FALSE(prefix.empty());
  EXPECT_EQ(prefix[0], session.bos());
  EXPECT_NE(suffix[0], session.bos());

  // The whole prompt: prefix tokens + image rows + suffix tokens, contiguous.
  std::vector<Chunk> images;
  images.push_back(image_rows(7, session.n_embd_inp()));
  const auto chunks = llm::llava15_prompt("What is in the image?", std::move(images));
  const auto pre = session.prefill(chunks);
  EXPECT_EQ(pre.n_tokens, static_cast<int>(prefix.size() + 7 + suffix.size()));
  ASSERT_EQ(pre.chunks.size(), 3u);
  EXPECT_EQ(pre.chunks[0].n_tokens, static_cast<int>(prefix.size()));
  EXPECT_EQ(pre.chunks[1].n_tokens, 7);
  EXPECT_EQ(pre.chunks[2].n_tokens, static_cast<int>(suffix.size()));
}

TEST(llm_chat_template, SeveralImagesPrefillContiguously) {
  llm::Session session(tiny_model(), test_session_params());
  const int n_embd = session.n_embd_inp();
  std::vector<Chunk> images;
  images.push_back(image_rows(3, n_embd, 0.02f));
  images.push_back(image_rows(4, n_embd, -0.02f));
  const auto chunks = llm::llava15_prompt("Which one is red?", std::move(images));
  ASSERT_EQ(chunks.size(), 5u);
  const auto pre = session.prefill(chunks);
  const size_t prefix = session.tokenize(chunks[0].text, true).size();
  const size_t between = session.tokenize("\n", false).size();
  const size_t suffix = session.tokenize(chunks[4].text, false).size();
  EXPECT_EQ(pre.n_tokens, static_cast<int>(prefix + 3 + between + 4 + suffix));
  llm::SamplingParams greedy;
  greedy.max_tokens = 4;
  const auto result = session.generate(chunks, greedy);
  EXPECT_EQ(result.n_prompt_tokens, pre.n_tokens);
}

TEST(llm_chat_template, SentencePieceSplitOnGeneratedVocabulary) {
  expect_sentencepiece_split(tiny_model(), /*▁ is the first piece after the bytes*/ 259);
}

TEST(llm_chat_template, SentencePieceSplitOnStories260K) {
  VTPRUNE_REQUIRE_SHARED("models/stories260K/model.gguf");
  expect_sentencepiece_split(stories_model(), -1);
}

}  // namespace
}  // namespace vtprune::test
