// Gemma 3 end to end through libmtmd, on a generated tiny pair in llama.cpp's exact layout
// (`make-test-model --shape gemma3`: SigLIP 448 px -> 32 x 32 patches pooled 4 x 4 -> 64 tokens, Gemma 3 LLM with
// sliding-window attention): the answer with `none` equals llama-mtmd-cli's, first-token logits equal libmtmd's
// own helper (image rows decoded without the causal mask, as it does), keeping everything through the pruning
// code equals `none`, every method runs or refuses as the family table says, and the taps equal a brute force
// from the same blocks' Q and K, pooled over each token's 4 x 4 patch block.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "mtmd_reference.h"
#include "test_pair.h"
#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/pipeline.h"

namespace vtprune::pipeline {
namespace {

namespace fs = std::filesystem;

constexpr const char* kQuestion = test::kPairQuestion;
constexpr char kGemma3Shape[] = "gemma3";

class Gemma3Vlm : public test::PairSuite<kGemma3Shape> {
 protected:
  static std::string chat_text() {
    return llm::render_chat(vlm_->session().chat_template(),
                            std::vector<llm::ChatMessage>{{"user", std::string(vision::MtmdEncoder::marker()) + kQuestion}});
  }
};

TEST_F(Gemma3Vlm, FamilyEncoderAndGrid) {
  EXPECT_EQ(vlm_->family().name, "gemma3");
  EXPECT_EQ(vlm_->encoder(), family::Encoder::Mtmd);
  EXPECT_FALSE(vlm_->session().uses_mrope());
  EXPECT_FALSE(vlm_->session().decodes_text_as_embeddings()) << "Gemma scales text embeddings inside its graph";
  const EncoderInfo info = vlm_->encoder_info();
  EXPECT_FALSE(info.has_cls);
  EXPECT_EQ(info.num_layers, 4);
  const Result r = vlm_->run(request("none", Budget::all(), 1));
  EXPECT_EQ(r.tokens_in, 64);  // 448 / 14 = 32 patches a side, pooled 4 x 4
  // the chat text carries Gemma's markers around the image, as libmtmd adds them
  EXPECT_NE(chat_text().find("<start_of_turn>user\n"), std::string::npos) << chat_text();
}

// llama-mtmd-cli's first `n` generated pieces as an answer: without Gemma's control tokens, which it prints as text
// and vtprune's answer leaves out (as llama-server does).
std::string answer_of(const test::MtmdCliRun& cli, int n) {
  const std::set<std::string> control = {"<end_of_turn>", "<eos>", "<start_of_turn>", "<start_of_image>", "<end_of_image>"};
  std::string answer;
  for (int i = 1; i <= n && static_cast<size_t>(i) < cli.pieces.size(); ++i) {
    if (!control.count(cli.pieces[static_cast<size_t>(i)])) answer += cli.pieces[static_cast<size_t>(i)];
  }
  return answer;
}

// llama.cpp's own multimodal CLI on the same files, image, prompt and settings: the same chat text and the same
// greedy answer (llama-mtmd-cli prints control tokens such as <end_of_turn> as text; vtprune's answer leaves them
// out, as llama-server does).
TEST_F(Gemma3Vlm, NoneAnswersLikeLlamaMtmdCli) {
  constexpr int kTokens = 12;
  const Result ours = vlm_->run(request("none", Budget::all(), kTokens));
  ASSERT_GT(ours.n_generated, 0);
  const test::MtmdCliRun cli = test::run_llama_mtmd_cli(VTPRUNE_MTMD_CLI, *dir_, kQuestion, kTokens);
  EXPECT_EQ(cli.formatted, chat_text() + "\n") << "llama-mtmd-cli logs the prompt with a trailing newline";
  ASSERT_GE(cli.pieces.size(), static_cast<size_t>(ours.n_generated) + 2) << cli.log.substr(0, 2000);
  EXPECT_EQ(cli.pieces[0], "\n");
  EXPECT_EQ(ours.answer, answer_of(cli, ours.n_generated));
  EXPECT_FALSE(ours.answer.empty());
}

// --flash-attn off (llama.cpp's -fa off, for the LLM and libmtmd's ViT alike; on CPU it runs Gemma 3's 4096-patch
// SigLIP several times faster): the answer equals llama-mtmd-cli's with -fa off, and the flag reaches the
// computation (the first-token logits move from the default's).
TEST_F(Gemma3Vlm, FlashAttentionOffAnswersLikeLlamaMtmdCliWithFaOff) {
  constexpr int kTokens = 12;
  pipeline::VlmParams p = pair_params();
  p.flash_attn = "off";
  Vlm no_fa(p);
  const Result ours = no_fa.run(request("none", Budget::all(), kTokens));
  ASSERT_GT(ours.n_generated, 0);
  const test::MtmdCliRun cli = test::run_llama_mtmd_cli(VTPRUNE_MTMD_CLI, *dir_, kQuestion, kTokens, "-fa off");
  ASSERT_GE(cli.pieces.size(), static_cast<size_t>(ours.n_generated) + 2) << cli.log.substr(0, 2000);
  EXPECT_EQ(ours.answer, answer_of(cli, ours.n_generated));
  no_fa.run(request("none", Budget::all(), 0));
  EXPECT_NE(no_fa.session().last_logits(), first_logits("none", Budget::all()));
  p.flash_attn = "sometimes";
  EXPECT_THROW({ Vlm bad(p); }, InputError);
}

// libmtmd's helper decodes text chunks as tokens and the image chunk as one non-causal batch; so does vtprune for
// Gemma 3 (its input layer scales token embeddings, so text is not decoded as embedding rows): the same batches,
// the same arithmetic, the same floats.
TEST_F(Gemma3Vlm, FirstTokenLogitsEqualLibmtmdHelper) {
  const std::vector<float> ours = first_logits("none", Budget::all());
  const std::vector<float> theirs = test::libmtmd_helper_logits(*dir_, chat_text(), vision::decode_image(*image_, "image.png"));
  ASSERT_EQ(ours.size(), theirs.size());
  float scale = 0;
  EXPECT_EQ(ours, theirs) << "max |difference| " << test::max_abs_diff(ours, theirs, &scale) << " of " << scale;
}

// The non-causal image block is what libmtmd does and it matters: the same rows decoded causally give other
// logits.
TEST_F(Gemma3Vlm, ImageRowsAttendToEachOtherWithoutTheCausalMask) {
  vision::MtmdEncoder encoder(*dir_ / "mmproj.gguf", family::by_name("gemma3"), vlm_->session().llama_model_handle(), {.threads = 1});
  const std::vector<vision::RgbImage> images = {vision::decode_image(*image_, "image.png")};
  const vision::MtmdPrompt prompt = encoder.tokenize(chat_text(), images);
  std::vector<llm::Chunk> chunks;
  for (size_t c = 0; c < prompt.chunks().size(); ++c) {
    const vision::MtmdChunk& ch = prompt.chunks()[c];
    if (!ch.image) {
      chunks.push_back(llm::Chunk::from_tokens(ch.tokens));
      continue;
    }
    EXPECT_EQ(ch.grid_h, 8);
    EXPECT_EQ(ch.grid_w, 8);
    chunks.push_back(llm::Chunk::from_embeddings(encoder.encode(prompt, c, {}).features, ch.n_tokens));
    chunks.back().non_causal = true;
  }
  llm::Session session((*dir_ / "llm.gguf").string(), {.n_ctx = 2048, .threads = 1});
  session.prefill(chunks);
  const std::vector<float> non_causal = session.last_logits();
  EXPECT_EQ(non_causal, first_logits("none", Budget::all()));
  for (llm::Chunk& c : chunks) c.non_causal = false;
  session.prefill(chunks);
  float scale = 0;
  EXPECT_GT(test::max_abs_diff(session.last_logits(), non_causal, &scale), 1e-3f * scale);
  // and a non-causal block must fit one batch
  llm::Session small_batch((*dir_ / "llm.gguf").string(), {.n_ctx = 2048, .n_batch = 32, .threads = 1});
  for (llm::Chunk& c : chunks) c.non_causal = c.kind == llm::Chunk::Kind::embeddings;
  EXPECT_THROW(small_batch.prefill(chunks), InputError);
}

// Every token kept, through the pruning code's gather (and, for the attention methods, with taps on): exactly
// `none`'s computation.
TEST_F(Gemma3Vlm, KeepingEverythingThroughThePruningPathEqualsNone) {
  const std::vector<float> none = first_logits("none", Budget::all());
  for (const std::string method : {"random", "fastervlm", "hiprune", "divprune"}) {
    SCOPED_TRACE(method);
    EXPECT_EQ(first_logits(method, Budget::all()), none);
  }
}

TEST_F(Gemma3Vlm, EveryMethodRunsOrRefusesAsTheFamilyTableSays) {
  test::expect_methods_run_or_refuse_as_the_family_table_says(*vlm_, [](const std::string& method, Budget b) {
    return request(method, b, 1);
  });
}

// Pruning changes what the LLM sees: a ninth of the tokens gives other first-token logits than all of them, and
// the kept rows are renumbered (the prompt is shorter by exactly the pruned count).
TEST_F(Gemma3Vlm, PrunedRowsAreRenumbered) {
  const Result full = vlm_->run(request("none", Budget::all(), 1));
  const Result pruned = vlm_->run(request("hiprune", Budget::tokens(7), 1));
  EXPECT_EQ(pruned.tokens_kept, 7);
  EXPECT_EQ(pruned.n_prompt_tokens, full.n_prompt_tokens - 64 + 7);
  float scale = 0;
  EXPECT_GT(test::max_abs_diff(first_logits("hiprune", Budget::tokens(7)), first_logits("none", Budget::all()), &scale), 1e-3f * scale);
}

// The received attention vtprune reads through the eval callback equals a float64 brute force from the same
// blocks' Q and K (captured here by a second libmtmd context), pooled over each token's 4 x 4 patch block in the
// raster patch grid, as Gemma 3's average pool groups them.
TEST_F(Gemma3Vlm, TapsEqualBruteForcePooledOverEachTokensPatchBlock) {
  const fs::path mmproj = *dir_ / "mmproj.gguf";
  const llama_model* model = vlm_->session().llama_model_handle();
  vision::MtmdEncoder encoder(mmproj, family::by_name("gemma3"), model, {.threads = 1});
  const std::vector<vision::RgbImage> images = {vision::decode_image(*image_, "image.png")};
  const std::string text = std::string(vision::MtmdEncoder::marker()) + kQuestion;
  const vision::MtmdPrompt prompt = encoder.tokenize(text, images);
  size_t image_chunk = 0;
  while (!prompt.chunks()[image_chunk].image) ++image_chunk;
  const vision::MtmdChunk& chunk = prompt.chunks()[image_chunk];
  const std::vector<int> layers = {1, encoder.info().num_layers - 1};
  Needs needs;
  for (int layer : layers) needs.add({.layer = layer, .received = true});
  const vision::EncoderResult ours = encoder.encode(prompt, image_chunk, needs);
  ASSERT_EQ(ours.taps.size(), layers.size());

  test::TensorCapture capture;
  for (int layer : layers) {
    capture.wanted.push_back("Qcur-" + std::to_string(layer));
    capture.wanted.push_back("Kcur-" + std::to_string(layer));
  }
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = false;
  params.n_threads = 1;
  params.print_timings = false;
  params.cb_eval = &test::TensorCapture::callback;
  params.cb_eval_user_data = &capture;
  mtmd_context* mctx = mtmd_init_from_file(mmproj.c_str(), model, params);
  ASSERT_NE(mctx, nullptr);
  mtmd_bitmap* bitmap = mtmd_bitmap_init(images[0].width, images[0].height, images[0].pixels.data());
  mtmd_input_chunks* chunks = mtmd_input_chunks_init();
  mtmd_input_text input{text.c_str(), text.size(), true, true};
  const mtmd_bitmap* bitmaps[] = {bitmap};
  ASSERT_EQ(mtmd_tokenize(mctx, chunks, &input, bitmaps, 1), 0);
  capture.tensors.clear();  // the warm-up encode at load time
  ASSERT_EQ(mtmd_encode_chunk(mctx, mtmd_input_chunks_get(chunks, image_chunk)), 0);

  constexpr int kMerge = 4, kSide = 8, kPatchSide = kSide * kMerge;
  for (size_t ti = 0; ti < layers.size(); ++ti) {
    SCOPED_TRACE(layers[ti]);
    const std::string qn = "Qcur-" + std::to_string(layers[ti]), kn = "Kcur-" + std::to_string(layers[ti]);
    ASSERT_TRUE(capture.tensors.count(qn) && capture.tensors.count(kn));
    const auto& shape = capture.shapes[qn];
    ASSERT_EQ(shape[2], kPatchSide * kPatchSide);
    const std::vector<double> per_patch = test::brute_force_received(capture.tensors[qn], capture.tensors[kn], shape[0], shape[1], shape[2]);
    ASSERT_EQ(chunk.n_tokens, kSide * kSide);
    const auto& got = ours.taps[ti].received;
    ASSERT_EQ(got.size(), static_cast<size_t>(kSide * kSide));
    for (int y = 0; y < kSide; ++y) {
      for (int x = 0; x < kSide; ++x) {
        double s = 0;
        for (int dy = 0; dy < kMerge; ++dy)
          for (int dx = 0; dx < kMerge; ++dx) s += per_patch[static_cast<size_t>((y * kMerge + dy) * kPatchSide + x * kMerge + dx)];
        const double expected = s / (kMerge * kMerge);
        // float32 softmax and sums over 1024 keys against float64: 1e-5 relative; a wrong block or order is O(1) off
        EXPECT_NEAR(got[static_cast<size_t>(y * kSide + x)], expected, 1e-5 * expected + 1e-9) << y << "," << x;
      }
    }
  }
  mtmd_input_chunks_free(chunks);
  mtmd_bitmap_free(bitmap);
  mtmd_free(mctx);
}

}  // namespace
}  // namespace vtprune::pipeline
