// LLaVA-NeXT (AnyRes) end to end on a generated tiny pair in llama.cpp's LLaVA-1.6 layout (`make-test-model --shape
// llava-next`: LLaVA-1.5's tower at a tiny width with llava-v1.6's grid pinpoints; a 2:1 image fits 672 x 336 ->
// the overview + 2 x 1 crops of 24 x 24 tokens): each tile is one unit, the image's budget is split over them, and
// the rows that reach the LLM are exactly the tiles' kept features, projected, in HiPrune's official 'spatial'
// order (or LLaVA-NeXT's unpadded one, or libmtmd's), checked against the same tiles encoded and placed by hand, and
// with llama.cpp's graph and order against libmtmd's own tiles and helper decode.
#include <gtest/gtest.h>

#include <set>

#include "mtmd_reference.h"
#include "test_pair.h"
#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/gguf_file.h"
#include "vtprune/llm.h"
#include "vtprune/pipeline.h"
#include "vtprune/vision.h"

namespace vtprune::pipeline {
namespace {

constexpr const char* kQuestion = test::kPairQuestion;
constexpr char kLlavaNextShape[] = "llava-next";
constexpr int kSide = 24;  // 336 px / 14 px

class LlavaNext : public test::PairSuite<kLlavaNextShape> {
 protected:
  // The LLM's next-token logits after LLaVA's prompt around `rows` (one image), decoded by hand.
  static std::vector<float> logits_for(std::vector<float> rows) {
    const int64_t n = static_cast<int64_t>(rows.size()) / vlm_->session().n_embd_inp();
    std::vector<llm::Chunk> images;
    images.push_back(llm::Chunk::from_embeddings(std::move(rows), n));
    const std::vector<llm::Chunk> prompt = llm::llava15_prompt(kQuestion, std::move(images));
    llm::SamplingParams sampling;
    sampling.max_tokens = 0;
    vlm_->session().generate(prompt, sampling);
    return vlm_->session().last_logits();
  }
};

TEST_F(LlavaNext, AnImageIsTheOverviewAndItsCrops) {
  EXPECT_EQ(vlm_->family().name, "llava-next");
  EXPECT_EQ(vlm_->encoder(), family::Encoder::Own);
  const Result r = vlm_->run(request("none", Budget::all(), 1));
  ASSERT_EQ(r.images.size(), 3u);
  for (size_t k = 0; k < r.images.size(); ++k) {
    EXPECT_EQ(r.images[k].image, 0);
    EXPECT_EQ(r.images[k].tile, static_cast<int>(k));
    EXPECT_EQ(r.images[k].tokens_in, kSide * kSide);
    EXPECT_EQ(r.images[k].grid.w, kSide);
  }
  EXPECT_EQ(r.tokens_in, 3 * kSide * kSide);
  EXPECT_EQ(r.tokens_kept, r.tokens_in);
  // an mlp file without pinpoints stays LLaVA-1.5
  const auto dir = test::temp_dir("llava15-beside-next");
  vision::MmprojShape shape{.n_layer = 2, .n_embd = 64, .n_ff = 128, .n_head = 4, .proj_out = 64};
  vision::write_test_mmproj(dir / "mmproj.gguf", shape, 1);
  EXPECT_EQ(family::detect(io::GgufFile(dir / "mmproj.gguf", "mmproj")).name, "llava-1.5");
}

// llama.cpp loads the generated LLaVA-1.6 file too, and its AnyRes split (llava_uhd with the same pinpoints) makes
// the same three tiles of this image: the overview and two crops, each encoded as its own chunk.
TEST_F(LlavaNext, LlamaMtmdCliSplitsTheImageIntoTheSameTiles) {
  std::string log;
  const std::string cmd = std::string(VTPRUNE_MTMD_CLI) + " -m " + (*dir_ / "llm.gguf").string() + " --mmproj " +
                          (*dir_ / "mmproj.gguf").string() + " --image " + (*dir_ / "image.png").string() +
                          " -p hello --chat-template vicuna -n 1 --temp 0 -t 1 2>&1";
  ASSERT_EQ(test::run_command(cmd, &log), 0) << log;
  size_t encoded = 0;
  for (size_t at = log.find("mtmd batch encoding done"); at != std::string::npos; at = log.find("mtmd batch encoding done", at + 1)) ++encoded;
  EXPECT_EQ(encoded, 3u) << log.substr(0, 3000);
}

// llama.cpp's own AnyRes split of the pair's 640 x 320 image (libmtmd's llava_uhd with the same pinpoints: 672 x 336,
// Pillow-compatible bicubic) and vtprune's give the same tiles: with --mtmd-compat (llama.cpp's graph) each tile's
// embeddings equal libmtmd's chunk for it, bit for bit. libmtmd's chunks come in its own order: the crops, then
// the overview (the `mtmd` layout).
TEST_F(LlavaNext, MtmdCompatTilesEqualLibmtmdsChunks) {
  const vision::RgbImage image = vision::decode_image(*image_, "image.png");
  const int width = vlm_->session().n_embd_inp();
  const std::vector<std::vector<float>> theirs = test::libmtmd_image_embeddings(*dir_ / "mmproj.gguf", image, width);
  ASSERT_EQ(theirs.size(), 3u) << "2 x 1 crops + the overview";
  vision::VisionModel compat = vision::VisionModel::from_mmproj(*dir_ / "mmproj.gguf", {.mtmd_compat = true});
  const vision::AnyResTiles tiles = vision::anyres_tiles(image, compat.preprocess_recipe().anyres_pinpoints, 336);
  ASSERT_EQ(tiles.tiles.size(), 3u);
  Needs needs;
  needs.projected = true;
  for (size_t k = 0; k < 3; ++k) {
    const vision::EncoderResult ours = compat.encode(vision::normalize(tiles.tiles[k], compat.preprocess_recipe()), needs, {1, false});
    const size_t chunk = k == 0 ? 2 : k - 1;  // libmtmd: crop 0, crop 1, overview
    float scale = 0;
    const float diff = test::max_abs_diff(ours.projected, theirs[chunk], &scale);
    EXPECT_LT(diff, 1e-3f * scale) << "tile " << k << " vs libmtmd's chunk " << chunk;  // 0 here; 1e-3 as test_mmproj
  }
}

// With llama.cpp's graph and order (--mtmd-compat --anyres-layout mtmd) vtprune computes what llama.cpp computes:
// - LLaVA's prompt around libmtmd's own chunks (crops, then the overview), decoded one batch per chunk as libmtmd's
//   helper decodes (what llama-mtmd-cli runs), gives the helper's first-token logits exactly: same tokens, same
//   positions, same arithmetic;
// - the pipeline's prompt is that prompt: decoded as one batch (vtprune's default) they give the same floats.
// Between the two decodes only ggml's batch-size-dependent F16 rounding differs (on this random 2-layer model ~3% of
// its small largest logit; see test_qwen.cpp), which is why the chain is checked link by link, each exactly.
TEST_F(LlavaNext, MtmdCompatPromptIsLibmtmdsPrompt) {
  pipeline::VlmParams p = pair_params();
  p.anyres_layout = "mtmd";
  p.mmproj.mtmd_compat = true;
  Vlm like_llama(p);
  like_llama.run(request("none", Budget::all(), 0));
  const std::vector<float> pipeline_logits = like_llama.session().last_logits();

  const vision::RgbImage image = vision::decode_image(*image_, "image.png");
  std::string text = llm::llava15_prompt_text(kQuestion);
  const size_t at = text.find(llm::kImageMarker);
  const int width = vlm_->session().n_embd_inp();
  std::vector<llm::Chunk> prompt{llm::Chunk::from_text(text.substr(0, at))};
  for (const auto& rows : test::libmtmd_image_embeddings(*dir_ / "mmproj.gguf", image, width)) {
    prompt.push_back(llm::Chunk::from_embeddings(rows, static_cast<int64_t>(rows.size()) / width));
  }
  prompt.push_back(llm::Chunk::from_text(text.substr(at + llm::kImageMarker.size())));
  ASSERT_EQ(prompt.size(), 5u);

  text.replace(at, llm::kImageMarker.size(), mtmd_default_marker());
  const std::vector<float> helper = test::libmtmd_helper_logits(*dir_, text, image);
  llm::Session per_chunk(p.llm_path, {.n_ctx = 2048, .threads = 1, .text_as_embeddings = false});
  per_chunk.prefill(prompt);
  EXPECT_EQ(per_chunk.last_logits(), helper);

  llm::Session single(p.llm_path, {.n_ctx = 2048, .threads = 1});
  EXPECT_TRUE(single.prefill(prompt).single_batch);
  EXPECT_EQ(single.last_logits(), pipeline_logits);
}

// What reaches the LLM, rebuilt by hand: the image split by vision::anyres_tiles, each tile encoded by a
// VisionModel of the same file with the same taps, the rows HiPrune kept (the pipeline's report) projected, and
// placed in the layout's order (spatial, spatial_unpad with its newline rows, mtmd): the same arithmetic, so equal up to 1e-5 of the largest logit, while the other
// layout's order moves the (small, random-weight) logits by ~1e-3 of the largest.
TEST_F(LlavaNext, RowsEnterInHiprunesSpatialOrderUnpaddedOrLibmtmdsOrder) {
  pipeline::VlmParams tiles_params = pair_params();
  tiles_params.anyres_layout = "mtmd";
  Vlm tile_after_tile(tiles_params);
  pipeline::VlmParams unpad_params = tiles_params;
  unpad_params.anyres_layout = "spatial_unpad";
  Vlm unpadded(unpad_params);

  Request req = request("hiprune", Budget::tokens(300), 0);
  const Result r = vlm_->run(req);
  const std::vector<float> spatial = vlm_->session().last_logits();
  ASSERT_EQ(r.images.size(), 3u);
  EXPECT_EQ(r.tokens_kept, 300);
  const Result t = tile_after_tile.run(req);
  const std::vector<float> tiled = tile_after_tile.session().last_logits();
  ASSERT_EQ(t.images.size(), 3u);
  const Result u = unpadded.run(req);
  const std::vector<float> with_newlines = unpadded.session().last_logits();
  // 640 x 320 has the aspect of 672 x 336: nothing to unpad, so every kept row stays and 24 newlines join them
  EXPECT_EQ(u.n_prompt_tokens, r.n_prompt_tokens + 24);

  vision::VisionModel model = vision::VisionModel::from_mmproj(*dir_ / "mmproj.gguf");
  const vision::AnyResTiles tiles =
      vision::anyres_tiles(vision::decode_image(*image_, "image.png"), model.preprocess_recipe().anyres_pinpoints, 336);
  ASSERT_EQ(tiles.tiles.size(), 3u);
  ASSERT_EQ(tiles.columns, 2);
  // the taps HiPrune asks for too, so that the tapped blocks run as in the pipeline (materialised softmax)
  Needs needs = make_reducer("hiprune", vlm_->method_options("hiprune", {}))->needs(vlm_->encoder_info());
  needs.features = true;
  const int64_t width = vlm_->session().n_embd_inp();
  std::vector<std::vector<float>> projected;  // per tile: its kept rows, projected, in kept order
  for (size_t k = 0; k < 3; ++k) {
    ASSERT_EQ(r.images[k].reduction.kept, t.images[k].reduction.kept) << "the layout does not change the selection";
    const vision::EncoderResult e = model.encode(vision::normalize(tiles.tiles[k], model.preprocess_recipe()), needs, {1, false});
    std::vector<float> kept;
    for (int32_t p : r.images[k].reduction.kept) {
      kept.insert(kept.end(), e.features.begin() + p * e.dim, e.features.begin() + (p + 1) * e.dim);
    }
    projected.push_back(model.project({kept, static_cast<int64_t>(r.images[k].reduction.kept.size()), e.dim}, 1));
  }
  // mtmd: each crop in turn, then the overview
  std::vector<float> by_tile;
  for (size_t k : {1, 2, 0}) by_tile.insert(by_tile.end(), projected[k].begin(), projected[k].end());
  // spatial: the overview, then the crops' rows by (row in the 24-high strip, crop column, column in the crop)
  // spatial_unpad: the same, with the file's newline row after each of the 24 patch rows
  std::vector<float> by_place = projected[0], by_place_unpadded = projected[0];
  ASSERT_EQ(static_cast<int64_t>(model.image_newline().size()), width);
  for (int y = 0; y < kSide; ++y) {
    for (int crop = 1; crop <= 2; ++crop) {
      const std::vector<int32_t>& kept = r.images[static_cast<size_t>(crop)].reduction.kept;
      for (size_t j = 0; j < kept.size(); ++j) {
        if (kept[j] / kSide != y) continue;
        const auto row = projected[static_cast<size_t>(crop)].begin() + static_cast<ptrdiff_t>(j) * width;
        by_place.insert(by_place.end(), row, row + width);
        by_place_unpadded.insert(by_place_unpadded.end(), row, row + width);
      }
    }
    by_place_unpadded.insert(by_place_unpadded.end(), model.image_newline().begin(), model.image_newline().end());
  }
  ASSERT_EQ(by_place.size(), by_tile.size());
  ASSERT_NE(by_place, by_tile) << "the two layouts must differ on this image for the test to mean anything";

  const std::vector<float> want_spatial = logits_for(by_place), want_tiled = logits_for(by_tile);
  float scale = 0;
  const float spatial_error = test::max_abs_diff(spatial, want_spatial, &scale);
  EXPECT_LE(spatial_error, 1e-5f * scale);
  const float tiled_error = test::max_abs_diff(tiled, want_tiled, &scale);
  EXPECT_LE(tiled_error, 1e-5f * scale);
  const float unpadded_error = test::max_abs_diff(with_newlines, logits_for(by_place_unpadded), &scale);
  EXPECT_LE(unpadded_error, 1e-5f * scale);
  const float layouts_apart = test::max_abs_diff(want_spatial, want_tiled, &scale);
  EXPECT_GT(layouts_apart, 1e-4f * scale) << "the order of rows matters";
}

TEST_F(LlavaNext, KeepingEverythingThroughThePruningPathEqualsNone) {
  const std::vector<float> none = first_logits("none", Budget::all());
  for (const std::string method : {"random", "divprune"}) {
    SCOPED_TRACE(method);
    EXPECT_EQ(first_logits(method, Budget::all()), none);
  }
}

TEST_F(LlavaNext, EveryMethodRunsOrRefusesAsTheFamilyTableSays) {
  test::expect_methods_run_or_refuse_as_the_family_table_says(*vlm_, [](const std::string& method, Budget b) {
    Request r = request(method, b, 1);
    if (method == "prumerge" || method == "prumerge_plus") r.options = {"layer=-2"};  // the mmproj stores 23 of 24 layers
    if (method == "cdpruner") r.options = {"relevance=llm"};  // the official relevance needs a CLIP text tower (--clip-text)
    return r;
  });
}

// The image's budget is split over its three tiles by largest remainder (HiPrune's code gives each int(budget /
// tiles)); a ratio is taken of all 1728 tokens; a budget below one token a tile is the caller's error.
TEST_F(LlavaNext, AnImagesBudgetIsSplitOverItsTiles) {
  const Result r = vlm_->run(request("hiprune", Budget::tokens(100), 1));
  ASSERT_EQ(r.images.size(), 3u);
  std::vector<int64_t> kept;
  for (const ImageReport& im : r.images) {
    kept.push_back(im.tokens_kept);
    EXPECT_EQ(std::set<int32_t>(im.reduction.kept.begin(), im.reduction.kept.end()).size(), im.reduction.kept.size());
    for (int32_t k : im.reduction.kept) EXPECT_LT(k, kSide * kSide);
  }
  EXPECT_EQ(kept, (std::vector<int64_t>{34, 33, 33}));
  const Result ratio = vlm_->run(request("fastervlm", Budget::fraction(0.112), 1));
  EXPECT_EQ(ratio.tokens_kept, Budget::fraction(0.112).resolve(3 * kSide * kSide));
  EXPECT_THROW(vlm_->run(request("hiprune", Budget::tokens(2), 1)), InputError);
  pipeline::VlmParams bad = pair_params();
  bad.anyres_layout = "unpad";
  EXPECT_THROW({ Vlm v(bad); }, InputError);
  // spatial_unpad needs the file's newline row: a NeXT mmproj without v.image_newline is refused up front
  const auto dir = test::temp_dir("next-without-newline");
  vision::MmprojShape shape{.n_layer = 2, .n_embd = 64, .n_ff = 128, .n_head = 4, .proj_out = 64,
                            .anyres_pinpoints = vision::llava_next_pinpoints(), .image_newline = false};
  vision::write_test_mmproj(dir / "mmproj.gguf", shape, 1);
  bad.mmproj_path = (dir / "mmproj.gguf").string();
  bad.anyres_layout = "spatial_unpad";
  try {
    Vlm v(bad);
    ADD_FAILURE() << "expected a refusal";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("v.image_newline"), std::string::npos) << e.what();
  }
  bad.anyres_layout = "spatial";
  EXPECT_NO_THROW({ Vlm v(bad); });
}

}  // namespace
}  // namespace vtprune::pipeline
