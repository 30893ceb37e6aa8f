// Property tests: every method on random valid inputs, grids 7x7 .. 27x27 and 16x24, every budget 1..N.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <string>

#include "synthetic.h"

namespace vtprune {
namespace {

struct GridCase {
  int h, w;
};

class MethodProperties : public ::testing::TestWithParam<std::tuple<std::string, GridCase>> {};

bool raster_order(const std::string& m) {
  return m == "hiprune" || m == "fastervlm" || m == "divprune" || m == "cdpruner" || m == "random" || m == "pool" || m == "none" || m == "dfmr";
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
                                         "divprune", "cdpruner", "pool", "random", "none"),
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

// ---- CDPruner ------------------------------------------------------------------------------------

std::vector<double> unit_row(const MatrixView& m, int64_t i) {
  auto row = m.row(i);
  double norm = 0;
  for (float v : row) norm += double{v} * v;
  norm = std::sqrt(norm);
  std::vector<double> u(row.begin(), row.end());
  for (double& v : u) v /= norm;
  return u;
}

double cosine(const MatrixView& a, int64_t i, const MatrixView& b, int64_t j) {
  const auto u = unit_row(a, i), v = unit_row(b, j);
  double s = 0;
  for (size_t k = 0; k < u.size(); ++k) s += u[k] * v[k];
  return s;
}

// log det of a small symmetric positive definite matrix (Cholesky, double); -inf when not positive definite
double log_det(std::vector<double> a, size_t n) {
  double ld = 0;
  for (size_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (size_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return -std::numeric_limits<double>::infinity();
    const double l = std::sqrt(d);
    a[j * n + j] = l;
    ld += 2 * std::log(l);
    for (size_t i = j + 1; i < n; ++i) {
      double v = a[i * n + j];
      for (size_t k = 0; k < j; ++k) v -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = v / l;
    }
  }
  return ld;
}

TEST(MethodBehaviour, CdPrunerIsTheGreedyDeterminantMaximiser) {
  // The fast Cholesky-style updates must pick, at every step, the token that maximises det(L[S + j]) (the
  // definition of greedy MAP inference), with L = diag(r) S diag(r) built here in double from the inputs.
  test::SyntheticEncoder enc({7, 7}, 16, 21);
  const MatrixView& x = enc.out.projected;  // 49 x 32: full rank up to 32 picks
  const int64_t n = x.rows, budget = 20;
  for (const char* mode : {"clip", "llm", "none"}) {
    SCOPED_TRACE(mode);
    std::vector<double> raw(static_cast<size_t>(n), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      if (std::string(mode) == "clip") {
        for (int64_t m = 0; m < enc.out.text_embeds.rows; ++m) raw[i] -= cosine(enc.out.image_embeds, i, enc.out.text_embeds, m);
        raw[i] /= static_cast<double>(enc.out.text_embeds.rows);
      } else if (std::string(mode) == "llm") {
        for (int64_t p = 0; p < enc.out.prompt_embeddings.rows; ++p) raw[i] += cosine(x, i, enc.out.prompt_embeddings, p);
        raw[i] /= static_cast<double>(enc.out.prompt_embeddings.rows);
      }
    }
    std::vector<double> r(static_cast<size_t>(n), 1.0);
    if (std::string(mode) != "none") {
      const auto [lo, hi] = std::minmax_element(raw.begin(), raw.end());
      for (int64_t i = 0; i < n; ++i) r[i] = (raw[i] - *lo + 1e-6) / (*hi - *lo);
    }
    const Reduction red = make_reducer("cdpruner", {std::string("relevance=") + mode})->reduce(enc.out, Budget::tokens(budget));
    if (std::string(mode) == "none") {
      EXPECT_TRUE(red.relevance.empty());
    } else {
      ASSERT_EQ(red.relevance.size(), static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(red.relevance[i], r[i], 1e-5);  // float32 cosines vs double
    }
    std::vector<int32_t> chosen;
    for (int64_t step = 0; step < budget; ++step) {
      int32_t best = -1;
      double best_ld = -std::numeric_limits<double>::infinity();
      for (int32_t j = 0; j < n; ++j) {
        if (std::find(chosen.begin(), chosen.end(), j) != chosen.end()) continue;
        auto set = chosen;
        set.push_back(j);
        std::vector<double> sub(set.size() * set.size());
        for (size_t a = 0; a < set.size(); ++a) {
          for (size_t b = 0; b < set.size(); ++b) {
            const double cos = a == b ? 1.0 : cosine(x, set[a], x, set[b]);  // a unit vector with itself: 1 exactly
            sub[a * set.size() + b] = r[set[a]] * cos * r[set[b]];
          }
        }
        const double ld = log_det(sub, set.size());
        if (ld > best_ld) best_ld = ld, best = j;
      }
      chosen.push_back(best);
    }
    EXPECT_EQ(red.selection_order, chosen);
    if (std::string(mode) == "none") {
      EXPECT_EQ(red.selection_order[0], 0);  // every L_jj = 1: the first index
    }
    EXPECT_EQ(red.stats.count("rank_exhausted_at"), 0u);
  }
}

TEST(MethodBehaviour, CdPrunerRelevanceSignsFollowTheCode) {
  // The first pick maximises L_jj = r_j^2: the most relevant token. CLIP relevance is the NEGATED cosine (the
  // official code's sign), so a text embedding opposite to patch 17's image embedding makes patch 17 the most
  // relevant; LLM relevance is the plain cosine, so a prompt embedding equal to patch 30's projection picks it.
  test::SyntheticEncoder enc({7, 7}, 16, 3);
  EncoderOutput o = enc.out;
  std::vector<float> text(enc.out.image_embeds.row(17).begin(), enc.out.image_embeds.row(17).end());
  for (float& v : text) v = -v;
  o.text_embeds = {text, 1, enc.out.image_embeds.cols};
  EXPECT_EQ(make_reducer("cdpruner")->reduce(o, Budget::tokens(5)).selection_order[0], 17);
  std::vector<float> prompt(enc.out.projected.row(30).begin(), enc.out.projected.row(30).end());
  o.prompt_embeddings = {prompt, 1, enc.out.projected.cols};
  const Reduction llm = make_reducer("cdpruner", {"relevance=llm"})->reduce(o, Budget::tokens(5));
  EXPECT_EQ(llm.selection_order[0], 30);
  EXPECT_EQ(*std::max_element(llm.relevance.begin(), llm.relevance.end()), llm.relevance[30]);
  // relevance=none is the DPP on the similarity alone: it does not read the prompt
  EncoderOutput bare = enc.out;
  bare.image_embeds = bare.text_embeds = bare.prompt_embeddings = {};
  EXPECT_EQ(make_reducer("cdpruner", {"relevance=none"})->reduce(bare, Budget::tokens(9)).kept.size(), 9u);
}

TEST(MethodBehaviour, CdPrunerRankExhaustionFallsBackToRelevance) {
  // D = 4 < budget: after 4 picks every other token lies in their span (the official loop would divide by the
  // square root of rounding noise). The guard records the step and takes the rest by relevance, descending.
  test::SyntheticEncoder enc({7, 7}, 16, 8);
  std::vector<float> narrow(static_cast<size_t>(49 * 4));
  for (int64_t i = 0; i < 49; ++i) {
    for (int k = 0; k < 4; ++k) narrow[static_cast<size_t>(i * 4 + k)] = enc.out.projected.row(i)[static_cast<size_t>(k)];
  }
  EncoderOutput o = enc.out;
  o.projected = {narrow, 49, 4};
  o.prompt_embeddings = {};
  const Reduction r = make_reducer("cdpruner")->reduce(o, Budget::tokens(12));
  ASSERT_EQ(r.stats.count("rank_exhausted_at"), 1u);
  EXPECT_EQ(r.stats.at("rank_exhausted_at"), 4);
  ASSERT_EQ(r.selection_order.size(), 12u);
  for (size_t i = 5; i < 12; ++i) {  // the fallback picks come in descending relevance
    EXPECT_GE(r.relevance[r.selection_order[i - 1]], r.relevance[r.selection_order[i]]);
  }
  for (size_t i = 4; i < 12; ++i) {  // and each is the most relevant token not yet chosen
    for (int32_t j = 0; j < 49; ++j) {
      if (std::find(r.selection_order.begin(), r.selection_order.begin() + static_cast<long>(i), j) ==
          r.selection_order.begin() + static_cast<long>(i)) {
        EXPECT_LE(r.relevance[j], r.relevance[r.selection_order[i]]);
      }
    }
  }
}

}  // namespace
}  // namespace vtprune
