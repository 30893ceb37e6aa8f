// Idefics3 / SmolVLM end to end through libmtmd, on a generated tiny pair in llama.cpp's exact layout
// (`make-test-model --shape smolvlm`: SigLIP on 512 px tiles, pixel shuffle 4 -> 64 tokens a tile; a 4:3 image is
// resized to a 1024 px longest edge and sliced into 2 x 2 tiles + the overview, five chunks between llama.cpp's
// <row_i_col_j> / <global-img> markers): the answer with `none` equals llama-mtmd-cli's, first-token logits equal
// libmtmd's helper, keeping everything equals `none`, every method runs or refuses as the family table says, an
// image's budget is split over its tiles, and each tile is pruned on its own 8 x 8 grid.
#include <gtest/gtest.h>

#include <set>

#include "mtmd_reference.h"
#include "test_pair.h"
#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/pipeline.h"

namespace vtprune::pipeline {
namespace {

constexpr const char* kQuestion = test::kPairQuestion;
constexpr char kSmolVlmShape[] = "smolvlm";

class SmolVlm : public test::PairSuite<kSmolVlmShape> {
 protected:
  static std::string chat_text() {
    return llm::render_chat(vlm_->session().chat_template(),
                            std::vector<llm::ChatMessage>{{"user", std::string(vision::MtmdEncoder::marker()) + kQuestion}});
  }
};

TEST_F(SmolVlm, AnImageIsFiveTilesOfSixtyFourTokens) {
  EXPECT_EQ(vlm_->family().name, "idefics3");
  EXPECT_EQ(vlm_->encoder(), family::Encoder::Mtmd);
  const Result r = vlm_->run(request("none", Budget::all(), 1));
  ASSERT_EQ(r.images.size(), 5u);
  for (size_t k = 0; k < r.images.size(); ++k) {
    EXPECT_EQ(r.images[k].image, 0);
    EXPECT_EQ(r.images[k].tile, static_cast<int>(k));
    EXPECT_EQ(r.images[k].tokens_in, 64);
    EXPECT_EQ(r.images[k].grid.h, 8);
    EXPECT_EQ(r.images[k].grid.w, 8);
  }
  EXPECT_EQ(r.tokens_in, 320);
}

TEST_F(SmolVlm, NoneAnswersLikeLlamaMtmdCli) {
  constexpr int kTokens = 12;
  Request r = request("none", Budget::all(), kTokens);
  r.sampling.top_logprobs = 0;  // each generated token's piece
  const Result ours = vlm_->run(r);
  ASSERT_GT(ours.n_generated, 0);
  const test::MtmdCliRun cli = test::run_llama_mtmd_cli(VTPRUNE_MTMD_CLI, *dir_, kQuestion, kTokens);
  EXPECT_EQ(cli.formatted, chat_text() + "\n") << "llama-mtmd-cli logs the prompt with a trailing newline";
  ASSERT_GE(cli.pieces.size(), ours.logprobs.size() + 1) << cli.log.substr(0, 2000);
  EXPECT_EQ(cli.pieces[0], "\n");
  // the random LLM generates byte tokens, which llama-mtmd-cli's log shows as U+FFFD: compared piece by piece
  for (size_t i = 0; i < ours.logprobs.size(); ++i) {
    EXPECT_EQ(test::as_logged(ours.logprobs[i].piece), cli.pieces[i + 1]) << "token " << i;
  }
}

// libmtmd's helper decodes each chunk (text, five tiles, text in between) as its own batch; vtprune decodes the
// `llama` architecture's prompt as one batch of embedding rows (text through token_embd): equal up to ggml's
// batch-size-dependent F16 rounding (see test_qwen.cpp: < 2e-3 of the largest logit; a wrong row or order moves
// logits by O(1)).
TEST_F(SmolVlm, FirstTokenLogitsEqualLibmtmdHelper) {
  const std::vector<float> ours = first_logits("none", Budget::all());
  const std::vector<float> theirs = test::libmtmd_helper_logits(*dir_, chat_text(), vision::decode_image(*image_, "image.png"));
  ASSERT_EQ(ours.size(), theirs.size());
  float scale = 0;
  const float diff = test::max_abs_diff(ours, theirs, &scale);
  EXPECT_LE(diff, 5e-3f * scale) << diff << " of " << scale;
}

TEST_F(SmolVlm, KeepingEverythingThroughThePruningPathEqualsNone) {
  const std::vector<float> none = first_logits("none", Budget::all());
  for (const std::string method : {"random", "fastervlm", "hiprune", "divprune"}) {
    SCOPED_TRACE(method);
    EXPECT_EQ(first_logits(method, Budget::all()), none);
  }
}

TEST_F(SmolVlm, EveryMethodRunsOrRefusesAsTheFamilyTableSays) {
  test::expect_methods_run_or_refuse_as_the_family_table_says(*vlm_, [](const std::string& method, Budget b) {
    return request(method, b, 1);
  });
}

// An image's budget is split over its tiles in proportion to their tokens, largest remainder first (evenly here:
// five tiles of 64), as HiPrune's LLaVA-NeXT code splits over crops; each tile keeps indices of its own grid, and
// a budget smaller than the number of tiles is the caller's error.
TEST_F(SmolVlm, AnImagesBudgetIsSplitOverItsTiles) {
  const Result r = vlm_->run(request("hiprune", Budget::tokens(36), 1));
  ASSERT_EQ(r.images.size(), 5u);
  EXPECT_EQ(r.tokens_kept, 36);
  std::vector<int64_t> kept;
  for (const ImageReport& im : r.images) {
    kept.push_back(im.tokens_kept);
    EXPECT_EQ(im.budget, im.tokens_kept);
    for (int32_t k : im.reduction.kept) {
      EXPECT_GE(k, 0);
      EXPECT_LT(k, 64);
    }
    EXPECT_EQ(std::set<int32_t>(im.reduction.kept.begin(), im.reduction.kept.end()).size(), im.reduction.kept.size());
  }
  EXPECT_EQ(kept, (std::vector<int64_t>{8, 7, 7, 7, 7}));
  // a ratio is taken of the whole image (320 tokens), then split
  const Result ratio = vlm_->run(request("fastervlm", Budget::fraction(0.112), 1));
  EXPECT_EQ(ratio.tokens_kept, Budget::fraction(0.112).resolve(320));
  EXPECT_THROW(vlm_->run(request("hiprune", Budget::tokens(3), 1)), InputError);
}

}  // namespace
}  // namespace vtprune::pipeline
