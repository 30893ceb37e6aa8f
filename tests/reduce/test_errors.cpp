// Every error path of the core: each is a vtprune::Error whose message names what is wrong.
#include <gtest/gtest.h>

#include <limits>

#include "synthetic.h"

namespace vtprune {
namespace {

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Errors, BudgetOutOfRange) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  for (const char* m : {"hiprune", "fastervlm", "divprune", "cdpruner", "pool", "random", "visionzip", "prumerge", "dfmr", "none"}) {
    expect_error([&] { make_reducer(m)->reduce(enc.out, Budget::tokens(50)); }, "budget 50 is out of range");
    expect_error([&] { make_reducer(m)->reduce(enc.out, Budget::tokens(0)); }, "out of range");
  }
}

TEST(Errors, MissingTap) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  EncoderOutput o = enc.out;
  o.taps.erase(o.taps.begin());  // layer 8 gone
  expect_error([&] { make_reducer("hiprune")->reduce(o, Budget::tokens(10)); }, "no tap for layer 8");
  o = enc.out;
  o.taps[1].cls_attention = {};
  expect_error([&] { make_reducer("fastervlm")->reduce(o, Budget::tokens(10)); }, "needs layer 22 CLS attention");
  o = enc.out;
  o.taps[2].cls_query = {};
  expect_error([&] { make_reducer("prumerge")->reduce(o, Budget::all()); }, "needs layer 23 CLS query");
  o = enc.out;
  o.projected = {};
  expect_error([&] { make_reducer("divprune")->reduce(o, Budget::tokens(10)); }, "post-projector embeddings");
  o = enc.out;
  o.features = {};
  expect_error([&] { make_reducer("pool")->reduce(o, Budget::tokens(10)); }, "needs the patch features");
}

TEST(Errors, ShapeMismatchBetweenViews) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  EncoderOutput o = enc.out;
  o.taps[0].received = o.taps[0].received.first(10);
  expect_error([&] { make_reducer("hiprune")->reduce(o, Budget::tokens(10)); }, "received attention has 10 values, expected 50");
  o = enc.out;
  o.taps[2].keys.rows = 49;
  expect_error([&] { make_reducer("prumerge")->reduce(o, Budget::all()); }, "keys view");
  o = enc.out;
  o.cls_features = o.cls_features.first(3);
  expect_error([&] { make_reducer("visionzip")->reduce(o, Budget::tokens(10)); }, "cls_features has 3 values");
}

TEST(Errors, GridNotMatchingN) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  EncoderOutput o = enc.out;
  o.info.grid = {6, 8};
  expect_error([&] { make_reducer("pool")->reduce(o, Budget::tokens(10)); }, "expected 48 rows");
  o.info.grid = {0, 7};
  expect_error([&] { make_reducer("none")->reduce(o, Budget::all()); }, "grid 0x7 is empty");
}

TEST(Errors, NanOrInfInScores) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  std::vector<float> bad(enc.out.taps[1].received.begin(), enc.out.taps[1].received.end());
  bad[5] = std::numeric_limits<float>::quiet_NaN();
  EncoderOutput o = enc.out;
  o.taps[1].received = bad;
  expect_error([&] { make_reducer("hiprune")->reduce(o, Budget::tokens(10)); }, "received attention contains NaN or Inf at index 5");
  std::vector<float> feats(enc.out.features.data.begin(), enc.out.features.data.end());
  feats[3] = std::numeric_limits<float>::infinity();
  o = enc.out;
  o.features.data = feats;
  expect_error([&] { make_reducer("pool")->reduce(o, Budget::tokens(10)); }, "features contains NaN or Inf at index 3");
}

TEST(Errors, MethodNeedsClsButEncoderHasNone) {
  test::SyntheticEncoder enc({7, 7}, 8, 1, /*has_cls=*/false);
  for (const char* m : {"fastervlm", "visionzip", "prumerge", "prumerge_plus"}) {
    expect_error([&] { make_reducer(m)->reduce(enc.out, Budget::tokens(10)); }, "needs a [CLS] token");
  }
  // methods without a CLS requirement still run
  EXPECT_EQ(make_reducer("hiprune")->reduce(enc.out, Budget::tokens(10)).kept.size(), 10u);
}

TEST(Errors, ImpossibleMethodSettings) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  expect_error([&] { make_reducer("hiprune", {"alpha=5"})->reduce(enc.out, Budget::tokens(3)); }, "more than the budget 3");
  expect_error([&] { make_reducer("visionzip", {"dominant=5", "contextual=3"})->reduce(enc.out, Budget::tokens(10)); },
               "do not add up to the budget 10");
  expect_error([&] { make_reducer("visionzip", {"dominant=45", "contextual=10"})->reduce(enc.out, Budget::all()); },
               "exceed the 50 tokens");
  expect_error([&] { make_reducer("dfmr", {"thresholds=0.5"})->reduce(enc.out, Budget::all()); },
               "thresholds needs one value per factor");
  expect_error([&] { make_reducer("prumerge")->reduce(enc.out, Budget::tokens(1)); }, "no room beside the summary token");
}

TEST(Errors, CdPrunerPromptInputs) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  EncoderOutput o = enc.out;
  o.image_embeds = {};
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); },
               "cdpruner: needs image_embeds (CLIP visual_projection(post_layernorm(patch features))), none given");
  o = enc.out;
  o.text_embeds = {};
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); },
               "cdpruner: needs text_embeds (CLIP text tower embeddings of the prompt), none given");
  o = enc.out;
  o.prompt_embeddings = {};
  expect_error([&] { make_reducer("cdpruner", {"relevance=llm"})->reduce(o, Budget::tokens(10)); },
               "cdpruner: needs prompt_embeddings (the LLM's token embeddings of the prompt), none given");
  o = enc.out;
  o.projected = {};
  expect_error([&] { make_reducer("cdpruner", {"relevance=none"})->reduce(o, Budget::tokens(10)); },
               "post-projector embeddings");
  // relevance=llm compares with the projected tokens: the pre-projector space cannot be used
  expect_error([&] { make_reducer("cdpruner", {"relevance=llm", "space=features"})->reduce(enc.out, Budget::tokens(10)); },
               "needs space=projected");
  expect_error([] { make_reducer("cdpruner", {"relevance=text"}); }, "relevance=text expects one of clip|llm|none");
}

TEST(Errors, CdPrunerShapesAndValues) {
  test::SyntheticEncoder enc({7, 7}, 8, 1);
  EncoderOutput o = enc.out;
  o.image_embeds.rows = 48;
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); }, "image_embeds view [48 x 8]");
  o = enc.out;
  std::vector<float> wide(3 * 9, 0.5f);
  o.text_embeds = {wide, 3, 9};
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); },
               "image_embeds [49 x 8] and text_embeds [3 x 9] differ in width");
  o = enc.out;
  std::vector<float> prompt(2 * 5, 0.5f);
  o.prompt_embeddings = {prompt, 2, 5};
  expect_error([&] { make_reducer("cdpruner", {"relevance=llm"})->reduce(o, Budget::tokens(10)); },
               "prompt_embeddings [2 x 5] and projected embeddings [49 x 16] differ in width");
  o = enc.out;
  std::vector<float> text(enc.out.text_embeds.data.begin(), enc.out.text_embeds.data.end());
  text[9] = std::numeric_limits<float>::quiet_NaN();
  o.text_embeds.data = text;
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); }, "text_embeds contains NaN or Inf at index 9");
  o = enc.out;
  std::vector<float> proj(enc.out.projected.data.begin(), enc.out.projected.data.end());
  proj[20] = std::numeric_limits<float>::infinity();
  o.projected.data = proj;
  expect_error([&] { make_reducer("cdpruner")->reduce(o, Budget::tokens(10)); }, "projected embeddings contains NaN or Inf at index 20");
}

}  // namespace
}  // namespace vtprune
