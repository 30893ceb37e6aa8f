// DFMR, LLaVA-Zip's "dynamic feature map reduction" (Wang & Xuan, arXiv 2412.08771) — a RECONSTRUCTION.
// No official code exists; every assumption below is an option (methods.md §3). Not the authors' code.
//
//   windows W_k of p x p patches;  σ_k = std over the window's positions (population), per channel,
//                                        averaged over channels            (std=channel)
//                                   or std of the patches' L2 norms         (std=norm)
//   info     = mean_k σ_k (aggregate=mean) or max_k σ_k (aggregate=max),
//              divided by the same statistic over the whole grid (normalize=global: scale-free)
//   s        = factors[0]; for (f, τ) in zip(factors[1:], thresholds): if info < τ: s = f
//              (less information -> more pooling)
//   tokens   = avg_pool2d(features, kernel=s, stride=s, ceil_mode)          (raster order)
// With a budget, s grows until the pooled grid fits (BudgetUse::Cap).
#include <algorithm>
#include <cmath>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {

Reduction pooled_reduction(const EncoderOutput& input, std::span<const Window> windows);  // pool.cpp

namespace {

// Population std of the rows `members` of `x`, per channel and averaged (channel), or of their L2 norms (norm).
double spread(const MatrixView& x, std::span<const int32_t> members, bool per_channel) {
  const int64_t d = x.cols;
  const auto m = static_cast<double>(members.size());
  if (per_channel) {
    std::vector<double> sum(static_cast<size_t>(d), 0.0), sq(static_cast<size_t>(d), 0.0);
    for (int32_t p : members) {
      const auto row = x.row(p);
      for (int64_t c = 0; c < d; ++c) {
        const double v = row[static_cast<size_t>(c)];
        sum[static_cast<size_t>(c)] += v;
        sq[static_cast<size_t>(c)] += v * v;
      }
    }
    double total = 0.0;
    for (int64_t c = 0; c < d; ++c) {
      const double mean = sum[static_cast<size_t>(c)] / m;
      total += std::sqrt(std::max(0.0, sq[static_cast<size_t>(c)] / m - mean * mean));
    }
    return total / static_cast<double>(d);
  }
  double sum = 0.0, sq = 0.0;
  for (int32_t p : members) {
    const auto row = x.row(p);
    const double norm = std::sqrt(static_cast<double>(dot(row.data(), row.data(), d)));
    sum += norm;
    sq += norm * norm;
  }
  const double mean = sum / m;
  return std::sqrt(std::max(0.0, sq / m - mean * mean));
}

class Dfmr final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return dfmr_info(); }
  Needs needs(const EncoderInfo&) const override {
    Needs n;
    n.features = true;
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool budget_given) const override {
    const auto& o = options();
    const Grid& g = input.info.grid;
    const bool per_channel = o.choice("std") == "channel";
    const auto p = static_cast<int>(std::min<int64_t>(o.integer("window"), std::min(g.h, g.w)));

    // image information: window spreads, aggregated, optionally relative to the whole grid's spread
    std::vector<double> sigmas;
    for (const Window& w : stride_pool_windows(g, p, /*ceil_mode=*/false)) {
      std::vector<int32_t> members;
      for (int r = w.r0; r < w.r1; ++r) {
        for (int c = w.c0; c < w.c1; ++c) members.push_back(r * g.w + c);
      }
      sigmas.push_back(spread(input.features, members, per_channel));
    }
    double info_score = o.choice("aggregate") == "max" ? *std::max_element(sigmas.begin(), sigmas.end())
                                                       : [&] { double s = 0; for (double v : sigmas) s += v; return s / static_cast<double>(sigmas.size()); }();
    if (o.choice("normalize") == "global") {
      std::vector<int32_t> all(static_cast<size_t>(g.size()));
      for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int32_t>(i);
      const double global = spread(input.features, all, per_channel);
      info_score = global > 0.0 ? info_score / global : 0.0;
    }

    // the rule: less information, more pooling
    const std::vector<double> factors = o.numbers("factors");
    const std::vector<double> thresholds = o.numbers("thresholds");
    if (thresholds.size() + 1 != factors.size()) {
      throw Error("dfmr: thresholds needs one value per factor after the first (" + std::to_string(factors.size() - 1) +
                  "), got " + std::to_string(thresholds.size()));
    }
    auto s = static_cast<int>(factors[0]);
    for (size_t i = 0; i < thresholds.size(); ++i) {
      if (info_score < thresholds[i]) s = static_cast<int>(factors[i + 1]);
    }
    const int chosen = s;
    const bool ceil_mode = o.boolean("ceil_mode");
    auto count = [&](int f) {
      return ceil_mode ? int64_t{(g.h + f - 1) / f} * ((g.w + f - 1) / f) : int64_t{g.h / f} * (g.w / f);
    };
    s = std::min(s, std::min(g.h, g.w));
    while (budget_given && count(s) > budget && s < std::max(g.h, g.w)) ++s;  // the budget caps the count
    if (count(s) < 1) throw Error("dfmr: pooling factor " + std::to_string(s) + " leaves no token on a " + std::to_string(g.h) + "x" + std::to_string(g.w) + " grid");
    if (budget_given && count(s) > budget) {
      throw Error("dfmr: no pooling factor fits the budget " + std::to_string(budget));
    }
    Reduction r = pooled_reduction(input, stride_pool_windows(g, s, ceil_mode));
    r.stats["info"] = info_score;
    r.stats["factor_rule"] = chosen;
    r.stats["factor"] = s;
    return r;
  }
};

}  // namespace

const MethodInfo& dfmr_info() {
  static const MethodInfo info{
      "dfmr",
      "LLaVA-Zip: Adaptive Visual Token Compression with Intrinsic Image Information (arXiv 2412.08771)",
      "average-pooled grid whose factor grows as the image's feature variation falls",
      "reconstruction from the paper's description (no official code); every assumption is an option",
      BudgetUse::Cap,
      {{"window", OptionType::Integer, "2", "window size p of the local std", {}, 1, 4096},
       {"std", OptionType::Choice, "channel", "std per channel averaged (channel) or of the L2 norms (norm)", {"channel", "norm"}},
       {"aggregate", OptionType::Choice, "mean", "window stds aggregated by mean or max", {"mean", "max"}},
       {"normalize", OptionType::Choice, "global", "divide by the whole grid's std (global) or not (none)", {"global", "none"}},
       {"factors", OptionType::NumberList, "1,2,3", "candidate pooling factors, least pooling first", {}, 1, 4096},
       {"thresholds", OptionType::NumberList, "0.75,0.6", "info below thresholds[i] selects factors[i+1]", {}, -1e9, 1e9},
       {"ceil_mode", OptionType::Boolean, "false", "keep partial border windows (avg_pool2d ceil_mode)"}}};
  return info;
}

std::unique_ptr<Reducer> make_dfmr(Options options) { return std::make_unique<Dfmr>(std::move(options)); }

}  // namespace vtprune::reduce
