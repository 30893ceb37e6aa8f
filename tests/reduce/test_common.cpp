// The shared primitives: one tie rule, numpy's percentile, Python's round, kNN, grids, pooling windows.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "reduce/common.h"

namespace vtprune::reduce {
namespace {

TEST(StableTopK, OrdersByScoreThenLowerIndex) {
  const std::vector<float> s = {0.5f, 0.9f, 0.5f, 0.1f, 0.9f, 0.5f};
  EXPECT_EQ(stable_top_k(s, 6), (std::vector<int32_t>{1, 4, 0, 2, 5, 3}));
  EXPECT_EQ(stable_top_k(s, 3), (std::vector<int32_t>{1, 4, 0}));
  EXPECT_TRUE(stable_top_k(s, 0).empty());
}

TEST(StableTopK, SkipsExcludedAndRejectsImpossibleK) {
  const std::vector<float> s = {3, 2, 1, 0};
  const std::vector<uint8_t> ex = {1, 0, 1, 0};
  EXPECT_EQ(stable_top_k(s, 2, ex), (std::vector<int32_t>{1, 3}));
  EXPECT_THROW(stable_top_k(s, 3, ex), Error);
  EXPECT_THROW(stable_top_k(s, -1), Error);
}

TEST(StableTopK, AgreesWithFullSortOnRandomTies) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(0, 9);  // many exact ties
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> s(200);
    for (float& v : s) v = static_cast<float>(level(rng));
    std::vector<int32_t> all(200);
    for (int i = 0; i < 200; ++i) all[static_cast<size_t>(i)] = i;
    std::stable_sort(all.begin(), all.end(), [&](int a, int b) { return s[static_cast<size_t>(a)] > s[static_cast<size_t>(b)]; });
    const int64_t k = trial * 4;
    EXPECT_EQ(stable_top_k(s, k), std::vector<int32_t>(all.begin(), all.begin() + k));
  }
}

TEST(Percentile, MatchesNumpyLinear) {
  // numpy.percentile([1, 2, 3, 4], [25, 50, 75]) == [1.75, 2.5, 3.25]
  const std::vector<float> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile_linear(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 75), 3.25);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 0), 1.0);
  EXPECT_DOUBLE_EQ(percentile_linear(v, 100), 4.0);
  // n = 576: positions 143.75 and 431.25
  std::vector<float> r(576);
  for (size_t i = 0; i < r.size(); ++i) r[i] = static_cast<float>(i);
  EXPECT_DOUBLE_EQ(percentile_linear(r, 25), 143.75);
  EXPECT_DOUBLE_EQ(percentile_linear(r, 75), 431.25);
  EXPECT_THROW(percentile_linear({}, 50), Error);
}

TEST(RoundHalfEven, IsPythonRound) {
  EXPECT_EQ(round_half_even(2.5), 2);
  EXPECT_EQ(round_half_even(3.5), 4);
  EXPECT_EQ(round_half_even(3.84), 4);  // HiPrune: 192 * 0.1 / 5
  EXPECT_EQ(round_half_even(2.56), 3);
  EXPECT_EQ(round_half_even(1.28), 1);
  EXPECT_EQ(round_half_even(0.5), 0);
}

TEST(ArgmaxFirst, TakesFirstOfEqualMaxima) {
  EXPECT_EQ(argmax_first(std::vector<float>{1, 3, 2, 3}), 1);
}

TEST(DotProducts, BlockedEqualsNaiveIncludingTails) {
  std::mt19937 rng(3);
  std::normal_distribution<float> g;
  for (int64_t n : {1, 3, 4, 7, 9}) {
    for (int64_t m : {1, 5, 8}) {
      const int64_t d = 37;
      std::vector<float> a(static_cast<size_t>(n * d)), b(static_cast<size_t>(m * d));
      for (float& x : a) x = g(rng);
      for (float& x : b) x = g(rng);
      std::vector<float> out(static_cast<size_t>(n * m));
      dot_products({a, n, d}, {b, m, d}, out);
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t j = 0; j < m; ++j) {
          double ref = 0;
          for (int64_t k = 0; k < d; ++k) ref += double{a[static_cast<size_t>(i * d + k)]} * b[static_cast<size_t>(j * d + k)];
          EXPECT_NEAR(out[static_cast<size_t>(i * m + j)], ref, 1e-4);
        }
      }
      std::vector<float> sym(static_cast<size_t>(n * n)), full(static_cast<size_t>(n * n));
      dot_products({a, n, d}, {a, n, d}, sym, true);
      dot_products({a, n, d}, {a, n, d}, full, false);
      for (size_t i = 0; i < sym.size(); ++i) EXPECT_NEAR(sym[i], full[i], 1e-5);
    }
  }
}

TEST(CosineKnn, ExcludesSelfAndRanksByCosine) {
  // rows on the unit circle at angles 0, 10, 20, 90, 180 degrees
  std::vector<float> rows;
  for (double deg : {0.0, 10.0, 20.0, 90.0, 180.0}) {
    rows.push_back(static_cast<float>(std::cos(deg * M_PI / 180)));
    rows.push_back(static_cast<float>(std::sin(deg * M_PI / 180)));
  }
  const std::vector<int32_t> queries = {0, 4};
  const auto nn = cosine_knn({rows, 5, 2}, queries, 3);
  EXPECT_EQ(nn[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(nn[1], (std::vector<int32_t>{3, 2, 1}));
  EXPECT_EQ(cosine_knn({rows, 5, 2}, queries, 100)[0].size(), 4u);  // k is capped at n - 1
}

TEST(CrossNeighbourhood, ClampWrapsLikeTheOfficialCode) {
  const Grid g{24, 24};
  std::vector<int32_t> out;
  cross_neighbourhood(5, g, Border::Clamp, true, out);  // top row: p - 24 clamps to 0
  EXPECT_EQ(out, (std::vector<int32_t>{5, 4, 6, 0, 29}));
  out.clear();
  cross_neighbourhood(5, g, Border::Drop, true, out);  // paper Eq. 5: dropped
  EXPECT_EQ(out, (std::vector<int32_t>{5, 4, 6, 29}));
  out.clear();
  cross_neighbourhood(47, g, Border::Clamp, true, out);  // last column: p + 1 wraps to the next row
  EXPECT_EQ(out, (std::vector<int32_t>{47, 46, 48, 23, 71}));
  out.clear();
  cross_neighbourhood(47, g, Border::Clamp, false, out);
  EXPECT_EQ(out, (std::vector<int32_t>{47, 46, 23, 71}));
  out.clear();
  cross_neighbourhood(575, g, Border::Clamp, true, out);  // bottom-right corner
  EXPECT_EQ(out, (std::vector<int32_t>{575, 574, 575, 551, 575}));
}

TEST(PoolWindows, AdaptiveBinsMatchTorch) {
  // AdaptiveAvgPool2d 5 -> 3: [0,2), [1,4), [3,5)
  const auto w = adaptive_pool_windows({5, 5}, {3, 3});
  ASSERT_EQ(w.size(), 9u);
  EXPECT_EQ(w[0].r0, 0); EXPECT_EQ(w[0].r1, 2);
  EXPECT_EQ(w[4].r0, 1); EXPECT_EQ(w[4].r1, 4);
  EXPECT_EQ(w[8].c0, 3); EXPECT_EQ(w[8].c1, 5);
  // stride windows: ceil mode keeps the partial border
  EXPECT_EQ(stride_pool_windows({5, 5}, 2, true).size(), 9u);
  EXPECT_EQ(stride_pool_windows({5, 5}, 2, false).size(), 4u);
  EXPECT_EQ(stride_pool_windows({5, 5}, 2, true).back().size(), 1);
}

TEST(PoolWindows, AverageIsTheWindowMean) {
  const std::vector<float> f = {1, 2, 3, 4};  // 2x2 grid, 1 channel
  std::vector<float> tokens;
  std::vector<std::vector<int32_t>> groups;
  const auto windows = stride_pool_windows({2, 2}, 2, false);
  average_windows({f, 4, 1}, {2, 2}, windows, tokens, groups);
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_FLOAT_EQ(tokens[0], 2.5f);
  EXPECT_EQ(groups[0], (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(AttentionStatistics, ReceivedAndClsRow) {
  // 2 heads, 2 tokens
  const std::vector<float> a = {0.9f, 0.1f, 0.3f, 0.7f,   // head 0: rows q0, q1
                                0.5f, 0.5f, 0.1f, 0.9f};  // head 1
  std::vector<float> received, cls;
  attention_statistics(a, 2, 2, &received, &cls);
  EXPECT_NEAR(received[0], (0.9 + 0.3 + 0.5 + 0.1) / 4, 1e-7);
  EXPECT_NEAR(received[1], (0.1 + 0.7 + 0.5 + 0.9) / 4, 1e-7);
  EXPECT_NEAR(cls[0], 0.7, 1e-7);
  EXPECT_NEAR(cls[1], 0.3, 1e-7);
  EXPECT_THROW(attention_statistics(a, 3, 2, &received, nullptr), Error);
}

}  // namespace
}  // namespace vtprune::reduce
