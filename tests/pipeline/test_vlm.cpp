// The whole pipeline on a generated `tiny` LLaVA-1.5-shaped model pair: every method end to end, budgets
// per image and in total, timings and errors.
#include <gtest/gtest.h>

#include <fstream>

#include "test_pair.h"
#include "test_support.h"
#include "vtprune/pipeline.h"
#include "vtprune/text.h"

namespace vtprune::pipeline {
namespace {

namespace fs = std::filesystem;

TEST(SplitBudget, ProportionalLargestRemainder) {
  EXPECT_EQ(split_budget(64, {576, 576}), (std::vector<int64_t>{32, 32}));
  EXPECT_EQ(split_budget(65, {576, 576}), (std::vector<int64_t>{33, 32}));  // ties: the earlier image
  EXPECT_EQ(split_budget(100, {30, 90}), (std::vector<int64_t>{25, 75}));
  EXPECT_EQ(split_budget(10, {1, 1000}), (std::vector<int64_t>{1, 9}));   // at least one each
  EXPECT_EQ(split_budget(500, {30, 90}), (std::vector<int64_t>{30, 90}));  // never more than kept alone
  EXPECT_EQ(split_budget(3, {1, 1, 1}), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_THROW(split_budget(1, {5, 5}), Error);
  for (int64_t total = 3; total < 300; total += 7) {
    const auto s = split_budget(total, {100, 50, 120});
    int64_t sum = 0;
    for (auto v : s) sum += v;
    EXPECT_EQ(sum, std::min<int64_t>(total, 270)) << total;
  }
}

// One tiny model pair + test image for the whole suite (written once, ~1 s).
class TinyVlm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string log;
    pair_ = test::TestPair::make("tiny", &log);
    ASSERT_NE(pair_, nullptr) << log;
    vlm_ = pair_->vlm.get();
    image_ = &pair_->image;
  }
  static void TearDownTestSuite() { pair_.reset(); }
  static Request request(const std::string& method, Budget budget, int n_images = 1) {
    Request r;
    for (int i = 0; i < n_images; ++i) r.images.push_back(*image_);
    r.prompt = "What is in the image?";
    r.method = method;
    r.budget = budget;
    r.sampling.max_tokens = 4;
    return r;
  }
  static inline std::unique_ptr<test::TestPair> pair_;
  static inline Vlm* vlm_ = nullptr;
  static inline std::vector<uint8_t>* image_ = nullptr;
};

TEST_F(TinyVlm, EveryMethodRunsEndToEnd) {
  for (const auto& m : methods()) {
    SCOPED_TRACE(m.name);
    Request req = request(m.name, m.budget_use == BudgetUse::Ignored ? Budget::all() : Budget::tokens(64));
    if (m.name == "prumerge" || m.name == "prumerge_plus") req.options = {"layer=-2"};  // the mmproj stores 23 of 24 layers
    if (m.name == "cdpruner") req.options = {"relevance=llm"};  // the official relevance needs a CLIP text tower
    const Result r = vlm_->run(req);
    EXPECT_EQ(r.tokens_in, 576);
    if (m.budget_use == BudgetUse::Exact) {
      EXPECT_EQ(r.tokens_kept, 64);
    }
    if (m.budget_use != BudgetUse::Ignored) {
      EXPECT_LE(r.tokens_kept, 64);
    }
    EXPECT_GT(r.n_generated, 0);
    // prompt = text tokens + kept visual tokens
    EXPECT_GT(r.n_prompt_tokens, r.tokens_kept);
    EXPECT_GT(r.timings.encode_ms, 0);
    EXPECT_GE(r.timings.ttft_ms, r.timings.prefill_ms);
    EXPECT_GT(r.kv_bytes, 0);
  }
}

// CDPruner's official relevance through the pipeline: without CLIP's text tower it is one clear error; with
// `--clip-text` (the random CLIP folder make-test-model writes beside the pair) the pipeline hands the method
// CLIP's text_embeds of the question and image_embeds of the same layer -2 patch features LLaVA projects, so the
// selection equals the method run by hand on those inputs.
TEST_F(TinyVlm, CdprunerOfficialRelevanceReadsClipTextTower) {
  const std::string question = "What is the dog at?";
  Request req = request("cdpruner", Budget::tokens(64));
  req.prompt = question;
  try {
    vlm_->run(req);
    ADD_FAILURE() << "cdpruner with relevance=clip ran without a CLIP text tower";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("--clip-text"), std::string::npos) << e.what();
  }
  VlmParams p;
  p.llm_path = (pair_->dir / "llm.gguf").string();
  p.mmproj_path = (pair_->dir / "mmproj.gguf").string();
  p.clip_text_path = (pair_->dir / "clip").string();
  p.threads = 1;
  p.n_ctx = 2048;
  Vlm with_clip(p);
  const Result r = with_clip.run(req);
  ASSERT_EQ(r.images.size(), 1u);
  const Reduction& got = r.images[0].reduction;
  EXPECT_EQ(got.kept.size(), 64u);

  // by hand: the same encoder, CLIP's embeddings, the reducer
  auto vision = vision::VisionModel::from_mmproj(p.mmproj_path);
  const auto reducer = make_reducer("cdpruner", {});
  const auto encoded = vision.encode(vision::preprocess(vision::decode_image(*image_, "image"), vision.preprocess_recipe()),
                                     reducer->needs(vision.info()));
  const auto clip = text::ClipTextModel::load(p.clip_text_path);
  EncoderOutput out = encoded.view();
  const text::Embeddings text_rows = clip.text_embeds(question);
  const text::Embeddings image_rows = clip.image_embeds(out.features);
  out.text_embeds = text_rows.view();
  out.image_embeds = image_rows.view();
  const Reduction want = reducer->reduce(out, Budget::tokens(64));
  EXPECT_EQ(got.kept, want.kept);
  EXPECT_EQ(got.selection_order, want.selection_order);
  ASSERT_EQ(got.relevance.size(), want.relevance.size());
  for (size_t i = 0; i < want.relevance.size(); ++i) EXPECT_NEAR(got.relevance[i], want.relevance[i], 1e-6) << i;

  // another question weighs the patches differently
  req.prompt = "the cat is at the gate";
  const Result other = with_clip.run(req);
  EXPECT_NE(other.images[0].reduction.relevance, got.relevance);
}

TEST_F(TinyVlm, FewerTokensMeanLessKvAndSamePromptText) {
  const Result all = vlm_->run(request("none", Budget::all()));
  const Result few = vlm_->run(request("fastervlm", Budget::tokens(64)));
  EXPECT_EQ(all.n_prompt_tokens - all.tokens_kept, few.n_prompt_tokens - few.tokens_kept);  // same text
  EXPECT_LT(few.kv_bytes, all.kv_bytes);
  EXPECT_EQ(all.n_prompt_tokens - few.n_prompt_tokens, 576 - 64);
}

TEST_F(TinyVlm, GreedyIsDeterministic) {
  const Result a = vlm_->run(request("hiprune", Budget::tokens(64)));
  const Result b = vlm_->run(request("hiprune", Budget::tokens(64)));
  EXPECT_EQ(a.answer, b.answer);
  EXPECT_EQ(a.images[0].reduction.kept, b.images[0].reduction.kept);
}

TEST_F(TinyVlm, SeveralImagesPerImageAndTotalBudgets) {
  Request per = request("hiprune", Budget::tokens(32), 2);
  const Result r = vlm_->run(per);
  ASSERT_EQ(r.images.size(), 2u);
  EXPECT_EQ(r.tokens_kept, 64);
  Request total = request("hiprune", Budget::tokens(50), 2);
  total.scope = BudgetScope::Total;
  const Result t = vlm_->run(total);
  EXPECT_EQ(t.images[0].tokens_kept, 25);
  EXPECT_EQ(t.images[1].tokens_kept, 25);
}

TEST_F(TinyVlm, ClearErrors) {
  auto expect_error = [](const Request& req, const std::string& fragment) {
    try {
      vlm_->run(req);
      ADD_FAILURE() << "no error";
    } catch (const InputError& e) {  // every one of these is the request's fault: a server's 4xx
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    } catch (const Error& e) {
      ADD_FAILURE() << "not reported as an InputError: " << e.what();
    }
  };
  expect_error(request("tome", Budget::tokens(64)), "unknown method");
  expect_error(request("hiprune", Budget::tokens(1000)), "out of range");
  Request broken = request("none", Budget::all());
  broken.images[0].resize(100);
  expect_error(broken, "image 1");
  // PruMerge reads the 24th CLIP layer, which llama.cpp's LLaVA-1.5 mmproj files do not store
  expect_error(request("prumerge", Budget::all()), "layer 23");
  Request two_markers = request("none", Budget::all());
  two_markers.prompt = "<image> and <image>?";
  expect_error(two_markers, "marker");
}

TEST(Vlm, MismatchedFilesAreRejected) {
  const fs::path dir = test::temp_dir("mismatch");
  vision::MmprojShape s;
  s.n_layer = 2, s.n_embd = 32, s.n_ff = 64, s.n_head = 2, s.image_size = 56, s.proj_out = 48;
  vision::write_test_mmproj(dir / "mmproj.gguf", s, 1);
  llm::write_test_llm((dir / "llm.gguf").string(), llm::test_llm_shape("tiny"), 1);
  VlmParams p;
  p.llm_path = (dir / "llm.gguf").string();
  p.mmproj_path = (dir / "mmproj.gguf").string();
  p.threads = 1;
  try {
    Vlm vlm(p);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not belong together"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace vtprune::pipeline
