// DivPrune (Alvar et al., CVPR 2025, arXiv 2503.02175): diversity by greedy max-min selection.
//
//   D[i, j] = 1 - cos(x_i, x_j)                       (x: post-projector embeddings by default)
//   s_0     = argmax_j (2nd smallest of D[:, j])      (largest nearest-neighbour distance; the smallest
//                                                      entry of a column is its self-distance)
//   s_t     = argmax_j min_{s in S} D[s, j]           (first maximum on ties, as torch.argmax)
//   output  = sort(S)                                 (raster order, unchanged features)
// Code: vbdi/divprune@799e2d9 LLaVA/llava/model/llava_arch.py:147-171, 365-385.
// Deviation: already selected tokens are never picked again; the official loop can re-pick one only when
// distances tie at zero (duplicate embeddings), which would yield duplicate tokens.
#include <algorithm>
#include <limits>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

class DivPrune final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return divprune_info(); }

  Needs needs(const EncoderInfo&) const override {
    Needs n;
    n.projected = options().choice("space") == "projected";
    n.features = !n.projected;
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool) const override {
    const MatrixView& x = options().choice("space") == "projected" ? input.projected : input.features;
    const int64_t n = x.rows;
    const std::vector<float> unit = normalize_rows(x);
    std::vector<float> dist(static_cast<size_t>(n * n));
    dot_products({unit, n, x.cols}, {unit, n, x.cols}, dist, /*symmetric=*/true);
    for (float& v : dist) v = 1.0f - v;

    // step 0: each column's second-smallest distance (counting ties), i.e. its nearest neighbour
    std::vector<float> score(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      float lo1 = std::numeric_limits<float>::infinity(), lo2 = lo1;
      for (int64_t i = 0; i < n; ++i) {
        const float v = dist[static_cast<size_t>(i * n + j)];
        if (v < lo1) {
          lo2 = lo1;
          lo1 = v;
        } else if (v < lo2) {
          lo2 = v;
        }
      }
      score[static_cast<size_t>(j)] = n > 1 ? lo2 : lo1;
    }
    std::vector<int32_t> order;
    std::vector<uint8_t> chosen(static_cast<size_t>(n), 0);
    std::vector<float> min_dist(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
    for (int64_t step = 0; step < budget; ++step) {
      if (step > 0) score = min_dist;
      for (int64_t j = 0; j < n; ++j) {
        if (chosen[static_cast<size_t>(j)]) score[static_cast<size_t>(j)] = -std::numeric_limits<float>::infinity();
      }
      const auto pick = static_cast<int32_t>(argmax_first(score));
      order.push_back(pick);
      chosen[static_cast<size_t>(pick)] = 1;
      const float* row = dist.data() + int64_t{pick} * n;
      for (int64_t j = 0; j < n; ++j) min_dist[static_cast<size_t>(j)] = std::min(min_dist[static_cast<size_t>(j)], row[j]);
    }
    std::vector<int32_t> kept = order;
    std::sort(kept.begin(), kept.end());
    std::vector<TokenRole> roles(kept.size(), TokenRole::Kept);
    Reduction r = gather_reduction(input, std::move(kept), std::move(roles));
    r.selection_order = std::move(order);
    return r;
  }
};

}  // namespace

const MethodInfo& divprune_info() {
  static const MethodInfo info{
      "divprune",
      "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models (CVPR 2025, arXiv 2503.02175)",
      "greedy max-min diverse subset by cosine distance of the projected embeddings, raster order",
      "vbdi/divprune@799e2d9 LLaVA/llava/model/llava_arch.py:147-171",
      BudgetUse::Exact,
      {{"space", OptionType::Choice, "projected",
        "embeddings the distances use: projected (official, LLM input) or features (pre-projector, cheaper)",
        {"projected", "features"}}}};
  return info;
}

std::unique_ptr<Reducer> make_divprune(Options options) { return std::make_unique<DivPrune>(std::move(options)); }

}  // namespace vtprune::reduce
