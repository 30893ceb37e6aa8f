// HiPrune (Liu et al., arXiv 2508.00553): hierarchical attention — anchors, buffers, registers.
//
//   s_obj[p]  = mean_h mean_q attn_obj[h, q, p]   (object layer; CLS key dropped, all queries incl. CLS)
//   s_deep[p] = same on the deep layer            (LLaVA: the feature layer, attentions[-2])
//   N_a       = round(B * alpha / 5)              (Python round: half to even)
//   anchors   = top_{N_a}(s_obj)
//   AB        = unique(anchors ∪ {a±1, a±w})      (clamped into [0, N-1], rows may wrap: as the code does)
//   registers = top_{B-|AB|}(s_deep over patches not in AB)
//   keep      = sort(AB ∪ registers)              (raster order; exactly B tokens)
// Code: Danielement321/HiPrune@6e83a12 LLaVA/llava/model/llava_arch.py:140-184. The paper's Eq. 5 drops
// out-of-range neighbours instead of clamping them: border=drop. row_wrap=forbidden stops p±1 crossing rows.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

int64_t anchor_count(int64_t budget, double alpha, const std::string& rounding) {
  const double x = static_cast<double>(budget) * alpha / 5.0;
  if (rounding == "half_up") return static_cast<int64_t>(std::floor(x + 0.5));
  if (rounding == "floor") return static_cast<int64_t>(std::floor(x));
  if (rounding == "ceil") return static_cast<int64_t>(std::ceil(x));
  return round_half_even(x);
}

class HiPrune final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return hiprune_info(); }

  Needs needs(const EncoderInfo& enc) const override {
    Needs n;
    n.add({.layer = options().layer("object_layer", enc), .received = true});
    n.add({.layer = options().layer("deep_layer", enc), .received = true});
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool) const override {
    const auto& o = options();
    const int skip = input.info.has_cls ? 1 : 0;  // drop the CLS key column, no renormalisation
    const auto s_obj = input.tap(o.layer("object_layer", input.info), "hiprune").received.subspan(skip);
    const auto s_deep = input.tap(o.layer("deep_layer", input.info), "hiprune").received.subspan(skip);
    const Grid& grid = input.info.grid;
    const int64_t n = grid.size();

    const int64_t n_anchors = std::min(anchor_count(budget, o.number("alpha"), o.choice("anchor_rounding")), n);
    const std::vector<int32_t> anchors = stable_top_k(s_obj, n_anchors);

    const Border border = o.choice("border") == "drop" ? Border::Drop : Border::Clamp;
    const bool row_wrap = o.choice("row_wrap") == "allowed";
    std::vector<int32_t> ab;
    for (int32_t a : anchors) cross_neighbourhood(a, grid, border, row_wrap, ab);
    std::sort(ab.begin(), ab.end());
    ab.erase(std::unique(ab.begin(), ab.end()), ab.end());
    if (static_cast<int64_t>(ab.size()) > budget) {
      throw Error("hiprune: " + std::to_string(n_anchors) + " anchors and their buffers are " +
                  std::to_string(ab.size()) + " tokens, more than the budget " + std::to_string(budget) +
                  " (lower alpha)");
    }

    std::vector<uint8_t> in_ab(static_cast<size_t>(n), 0);
    for (int32_t p : ab) in_ab[static_cast<size_t>(p)] = 1;
    const std::vector<int32_t> registers = stable_top_k(s_deep, budget - static_cast<int64_t>(ab.size()), in_ab);

    std::vector<TokenRole> role_of(static_cast<size_t>(n), TokenRole::Kept);
    for (int32_t p : ab) role_of[static_cast<size_t>(p)] = TokenRole::Buffer;
    for (int32_t p : anchors) role_of[static_cast<size_t>(p)] = TokenRole::Anchor;
    for (int32_t p : registers) role_of[static_cast<size_t>(p)] = TokenRole::Register;

    std::vector<int32_t> kept = ab;
    kept.insert(kept.end(), registers.begin(), registers.end());
    std::sort(kept.begin(), kept.end());
    std::vector<TokenRole> roles;
    for (int32_t p : kept) roles.push_back(role_of[static_cast<size_t>(p)]);

    Reduction r = gather_reduction(input, std::move(kept), std::move(roles));
    r.stats["anchors"] = static_cast<double>(anchors.size());
    r.stats["buffers"] = static_cast<double>(ab.size() - anchors.size());
    r.stats["registers"] = static_cast<double>(registers.size());
    return r;
  }
};

}  // namespace

const MethodInfo& hiprune_info() {
  static const MethodInfo info{
      "hiprune",
      "HiPrune: Training-Free Visual Token Pruning via Hierarchical Attention in VLMs (arXiv 2508.00553)",
      "object-layer anchors + their cross buffers + deep-layer registers (top attention received), raster order",
      "Danielement321/HiPrune@6e83a12 LLaVA/llava/model/llava_arch.py:140-184",
      BudgetUse::Exact,
      {{"alpha", OptionType::Number, "0.1", "anchor share: N_a = round(B*alpha/5)", {}, 0.0, 5.0},
       {"object_layer", OptionType::Layer, "8",
        "layer of the anchor scores (official HIPRUNE_OBJECT_LAYER=9, 1-based = attentions[8])"},
       {"deep_layer", OptionType::Layer, "feature", "layer of the register scores (LLaVA code: attentions[-2])"},
       {"anchor_rounding", OptionType::Choice, "half_even", "rounding of B*alpha/5 (code: Python round)",
        {"half_even", "half_up", "floor", "ceil"}},
       {"border", OptionType::Choice, "clamp", "out-of-grid buffer neighbours: clamp (code) or drop (paper Eq. 5)",
        {"clamp", "drop"}},
       {"row_wrap", OptionType::Choice, "allowed", "may p-1 / p+1 wrap to the previous / next row (code: allowed)",
        {"allowed", "forbidden"}}}};
  return info;
}

std::unique_ptr<Reducer> make_hiprune(Options options) { return std::make_unique<HiPrune>(std::move(options)); }

}  // namespace vtprune::reduce
