// Property tests: every method on random valid inputs, grids 7x7 .. 27x27 and 16x24, every budget 1..N.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "synthetic.h"

namespace vtprune {
namespace {

struct GridCase {
  int h, w;
};

class MethodProperties : public ::testing::TestWithParam<std::tuple<std::string, GridCase>> {};

bool raster_order(const std::string& m) {
  return m == "hiprune" || m == "fastervlm" || m == "divprune" || m == "random" || m == "pool" || m == "none" || m == "dfmr";
}

TEST_P(MethodProperties, ValidDeterministicAndWithinBudget) {
  const auto& [method, gc] = GetParam();
  const Grid grid{gc.h, gc.w};
  test::SyntheticEncoder enc(grid, 16, 1234 + static_cast<uint64_t>(gc.h * 100 + gc.w));
  const int64_t n = grid.size();
  const auto reducer = make_reducer(method);
  const BudgetUse use = reducer->info().budget_use;
  // Adaptive methods do not depend on the budget except through the cap: a stride over budgets suffices.
  const int64_t step = (use == BudgetUse::Cap || use == BudgetUse::Ignored) ? std::max<int64_t>(1, n / 40) : 1;
  for (int64_t b = 1; b <= n; b += (b < 8 ? 1 : step)) {
    SCOPED_TRACE("budget " + std::to_string(b));
    Reduction r;
    try {
      r = reducer->reduce(enc.out, Budget::tokens(b));
    } catch (const Error& e) {
      // the only budgets a method may refuse: too small for its fixed parts
      const std::string msg = e.what();
      ASSERT_TRUE(method.rfind("prumerge", 0) == 0 && b == 1) << msg;
      continue;
    }
    const int64_t limit = r.sequence_indices ? n + 1 : n;
    std::set<int32_t> unique(r.kept.begin(), r.kept.end());
    ASSERT_EQ(unique.size(), r.kept.size()) << "duplicate indices";
    for (int32_t k : r.kept) ASSERT_TRUE(k >= 0 && k < limit) << k;
    const int64_t rows = r.rows();
    ASSERT_EQ(static_cast<int64_t>(r.roles.size()), rows);
    ASSERT_GE(rows, 1);
    if (use == BudgetUse::Exact) {
      ASSERT_EQ(rows, b);
    }
    if (use == BudgetUse::AtMost || use == BudgetUse::Cap) {
      ASSERT_LE(rows, b);
    }
    if (raster_order(method)) {
      ASSERT_TRUE(std::is_sorted(r.kept.begin(), r.kept.end()));
    }
    for (float v : r.tokens) ASSERT_TRUE(std::isfinite(v));
    ASSERT_EQ(r.dim, enc.out.features.cols);
    if (b % 17 == 1) {  // determinism (spot checks keep the suite fast)
      const Reduction again = reducer->reduce(enc.out, Budget::tokens(b));
      ASSERT_EQ(again.kept, r.kept);
      ASSERT_EQ(again.tokens, r.tokens);
    }
  }
}

TEST(MethodBehaviour, AdaptiveMethodsRunWithoutBudget) {
  for (const char* method : {"prumerge", "prumerge_plus", "dfmr", "none"}) {
    for (GridCase gc : {GridCase{7, 7}, GridCase{24, 24}, GridCase{16, 24}}) {
      test::SyntheticEncoder enc({gc.h, gc.w}, 16, 99);
      const Reduction r = make_reducer(method)->reduce(enc.out, Budget::all());
      EXPECT_GE(r.rows(), 1) << method;
      EXPECT_LE(static_cast<int64_t>(r.kept.size()), enc.out.num_patches()) << method;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllMethods, MethodProperties,
    ::testing::Combine(::testing::Values("hiprune", "prumerge", "prumerge_plus", "dfmr", "visionzip", "fastervlm",
                                         "divprune", "pool", "random", "none"),
                       ::testing::Values(GridCase{7, 7}, GridCase{14, 14}, GridCase{24, 24}, GridCase{27, 27},
                                         GridCase{16, 24})),
    [](const auto& test_info) {
      const GridCase g = std::get<1>(test_info.param);
      return std::get<0>(test_info.param) + "_" + std::to_string(g.h) + "x" + std::to_string(g.w);
    });

TEST(MethodBehaviour, HiPruneRolesAddUp) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  const Reduction r = make_reducer("hiprune")->reduce(enc.out, Budget::tokens(192));
  EXPECT_EQ(r.stats.at("anchors"), 4);  // round(192 * 0.1 / 5)
  EXPECT_EQ(r.stats.at("anchors") + r.stats.at("buffers") + r.stats.at("registers"), 192);
}

TEST(MethodBehaviour, HiPruneDropBorderNeverAddsCornerArtifacts) {
  // with border=drop no neighbour is clamped: every buffer is a true grid neighbour of an anchor
  test::SyntheticEncoder enc({7, 7}, 16, 11);
  const Reduction r = make_reducer("hiprune", {"alpha=1", "border=drop", "row_wrap=forbidden"})->reduce(enc.out, Budget::tokens(40));
  std::vector<int32_t> anchors;
  for (size_t i = 0; i < r.kept.size(); ++i) {
    if (r.roles[i] == TokenRole::Anchor) anchors.push_back(r.kept[i]);
  }
  for (size_t i = 0; i < r.kept.size(); ++i) {
    if (r.roles[i] != TokenRole::Buffer) continue;
    const int32_t p = r.kept[i];
    bool adjacent = false;
    for (int32_t a : anchors) adjacent |= (std::abs(p / 7 - a / 7) + std::abs(p % 7 - a % 7)) == 1;
    EXPECT_TRUE(adjacent) << p;
  }
}

TEST(MethodBehaviour, RandomDependsOnSeedOnly) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  const auto a = make_reducer("random", {"seed=1"})->reduce(enc.out, Budget::tokens(64)).kept;
  const auto b = make_reducer("random", {"seed=1"})->reduce(enc.out, Budget::tokens(64)).kept;
  const auto c = make_reducer("random", {"seed=2"})->reduce(enc.out, Budget::tokens(64)).kept;
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(MethodBehaviour, PoolKeepsAspectAndAverages) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  const Reduction r = make_reducer("pool")->reduce(enc.out, Budget::tokens(64));
  EXPECT_EQ(r.rows(), 64);  // 8 x 8 windows of 3 x 3
  float mean0 = 0;
  for (int32_t p : r.groups[0]) mean0 += enc.out.features.row(p)[0];
  EXPECT_NEAR(r.tokens[0], mean0 / 9.0f, 1e-5);
  EXPECT_EQ(make_reducer("pool")->reduce(enc.out, Budget::tokens(192)).rows(), 169);  // 13 x 13
  test::SyntheticEncoder wide({16, 24}, 16, 5);
  EXPECT_EQ(make_reducer("pool")->reduce(wide.out, Budget::tokens(96)).rows(), 96);  // 8 x 12
}

TEST(MethodBehaviour, PruMergeCapTruncatesTheTail) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  const Reduction full = make_reducer("prumerge_plus")->reduce(enc.out, Budget::all());
  ASSERT_GT(full.rows(), 20);
  const Reduction capped = make_reducer("prumerge_plus")->reduce(enc.out, Budget::tokens(20));
  EXPECT_EQ(capped.rows(), 20);
  EXPECT_EQ(std::vector<int32_t>(full.kept.begin(), full.kept.begin() + 19), capped.kept);
}

TEST(MethodBehaviour, DfmrPoolsMoreWhenInformationIsLow) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  // i.i.d. random features: local std is close to the global std -> high information -> no pooling
  const Reduction busy = make_reducer("dfmr")->reduce(enc.out, Budget::all());
  EXPECT_EQ(busy.stats.at("factor"), 1);
  // a flat image (every patch the same up to a tiny ripple) -> pooled by the largest factor
  std::vector<float> flat(static_cast<size_t>(576 * 16));
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = 1.0f + 1e-3f * static_cast<float>((i / 16) / 24);  // varies by row only
  EncoderOutput o = enc.out;
  o.features = {flat, 576, 16};
  const Reduction calm = make_reducer("dfmr")->reduce(o, Budget::all());
  EXPECT_LT(calm.stats.at("info"), 0.6);
  EXPECT_EQ(calm.stats.at("factor"), 3);
  EXPECT_EQ(calm.rows(), 64);
}

TEST(MethodBehaviour, VisionZipSplitFollowsTheOfficialRatio) {
  test::SyntheticEncoder enc({24, 24}, 16, 5);
  for (auto [budget, dominant] : {std::pair{64, 54}, {128, 108}, {192, 162}}) {
    const Reduction r = make_reducer("visionzip")->reduce(enc.out, Budget::tokens(budget));
    EXPECT_EQ(r.stats.at("dominant"), dominant);
    EXPECT_EQ(r.kept[0], 0);  // CLS first
    EXPECT_EQ(r.roles[0], TokenRole::Cls);
  }
}

}  // namespace
}  // namespace vtprune
