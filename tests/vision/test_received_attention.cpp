// The received-attention reduction of the libmtmd taps (vision::received_attention) against a float64 brute
// force, for token counts that fill one query block, several, and several with a partial last block (the query
// block is at most 256 queries): every block must read the same K.
#include <gtest/gtest.h>

#include <random>

#include "test_support.h"
#include "vtprune/mtmd_encoder.h"

namespace vtprune::vision {
namespace {

TEST(ReceivedAttention, EqualsBruteForceForOneAndManyQueryBlocks) {
  constexpr int kHeads = 3, kDim = 8;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.5f);  // peaked enough that a wrong key or query shows
  for (int64_t n : {1, 7, 255, 256, 257, 600, 1100}) {
    SCOPED_TRACE(n);
    std::vector<float> q(static_cast<size_t>(n * kHeads * kDim)), k(q.size());
    for (float& v : q) v = normal(rng);
    for (float& v : k) v = normal(rng);
    const std::vector<double> want = test::brute_force_received(q, k, kDim, kHeads, n);
    for (int threads : {1, 2}) {
      const std::vector<float> got = received_attention(q, k, n, kHeads, kDim, 1.0f / std::sqrt(float{kDim}), threads);
      ASSERT_EQ(got.size(), want.size());
      double sum = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        // float32 scores, exp and sums over up to 1100 keys against float64: 1e-5 relative
        EXPECT_NEAR(got[i], want[i], 1e-5 * want[i] + 1e-9) << "key " << i << ", threads " << threads;
        sum += got[i];
      }
      EXPECT_NEAR(sum, 1.0, 1e-4);  // each query's softmax sums to 1: the mean over queries and heads does too
    }
  }
}

TEST(ReceivedAttention, WrongShapesAreAnError) {
  const std::vector<float> q(2 * 2 * 4), k(2 * 2 * 4);
  EXPECT_THROW(received_attention(q, k, 3, 2, 4, 0.5f, 1), Error);
  EXPECT_THROW(received_attention(q, std::vector<float>(4), 2, 2, 4, 0.5f, 1), Error);
}

}  // namespace
}  // namespace vtprune::vision
