// pool: 2D average pooling of the patch grid to a budget (the LLaVA-style spatial pooling baseline).
//
//   s        = sqrt(B / (h*w));  out grid = (max(1, floor(h*s)), max(1, floor(w*s)))   (aspect kept, <= B)
//   token_ij = mean of the patches in AdaptiveAvgPool2d's bin (i, j)
// or, with stride=S > 0, avg_pool2d(kernel=S, stride=S, ceil_mode=true) regardless of the budget.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {

Grid pooled_grid(const Grid& in, int64_t budget) {
  const double s = std::sqrt(static_cast<double>(budget) / static_cast<double>(in.size()));
  Grid out{std::clamp(static_cast<int>(std::floor(in.h * s + 1e-9)), 1, in.h),
           std::clamp(static_cast<int>(std::floor(in.w * s + 1e-9)), 1, in.w)};
  while (out.size() > budget) (out.h >= out.w ? out.h : out.w) -= 1;  // only for extreme aspect ratios
  return out;
}

Reduction pooled_reduction(const EncoderOutput& input, std::span<const Window> windows) {
  Reduction r;
  r.dim = input.features.cols;
  average_windows(input.features, input.info.grid, windows, r.tokens, r.groups);
  for (const Window& w : windows) {
    r.kept.push_back(w.r0 * input.info.grid.w + w.c0);
    r.roles.push_back(TokenRole::Pooled);
  }
  return r;
}

namespace {

class Pool final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return pool_info(); }
  Needs needs(const EncoderInfo&) const override {
    Needs n;
    n.features = true;
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool) const override {
    const Grid& g = input.info.grid;
    const auto stride = static_cast<int>(options().integer("stride"));
    std::vector<Window> windows;
    Grid out;
    if (stride > 0) {
      windows = stride_pool_windows(g, stride, /*ceil_mode=*/true);
      out = {(g.h + stride - 1) / stride, (g.w + stride - 1) / stride};
    } else {
      out = pooled_grid(g, budget);
      windows = adaptive_pool_windows(g, out);
    }
    Reduction r = pooled_reduction(input, windows);
    r.stats["grid_h"] = out.h;
    r.stats["grid_w"] = out.w;
    return r;
  }
};

}  // namespace

const MethodInfo& pool_info() {
  static const MethodInfo info{
      "pool",
      "- (LLaVA-style spatial average pooling)",
      "average of each cell of the largest aspect-preserving grid with at most B cells",
      "baseline (torch AdaptiveAvgPool2d bins)",
      BudgetUse::AtMost,
      {{"stride", OptionType::Integer, "0", "fixed avg_pool2d kernel=stride (ceil mode); 0: pool to the budget", {}, 0, 4096}}};
  return info;
}

std::unique_ptr<Reducer> make_pool(Options options) { return std::make_unique<Pool>(std::move(options)); }

}  // namespace vtprune::reduce
