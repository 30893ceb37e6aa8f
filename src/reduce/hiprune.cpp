// HiPrune (Liu et al., arXiv 2508.00553): hierarchical attention — anchors, buffers, registers.
//
//   s_obj[p]  = mean_h mean_q attn_obj[h, q, p]   (object layer; CLS key dropped, all queries incl. CLS)
//   s_deep[p] = same on the deep layer            (LLaVA: the feature layer, attentions[-2])
//   N_a       = round(B * alpha / 5)              (Python round: half to even)
//   anchors   = top_{N_a}(s_obj)
//   AB        = unique(anchors ∪ {a±1, a±w})      (clamped into [0, N-1], rows may wrap: as the code does)
//   registers = top_{B-|AB|}(s_deep - 1·[p ∈ AB]) (the code's `deep -= mask`)
//   keep      = sort(AB ∪ registers)              (raster order)
// Code: Danielement321/HiPrune@6e83a12 LLaVA/llava/model/llava_arch.py:140-184. The paper's Eq. 5 drops
// out-of-range neighbours instead of clamping them: border=drop. row_wrap=forbidden stops p±1 crossing rows.
//
// Qwen2.5-VL (qwen2_5_vl_HiPrune.py:566-577, 1855-1892): the scores are SUMS over queries (scores=sum: the
// mean times the number of queries), per merged token the mean over its 4 patches (done by the encoder, which
// hands this method the merged grid). Sums exceed 1, so subtracting 1 does not always push an anchor or buffer
// below the other tokens: a buffer token can be picked again as a register and collapses in the boolean mask,
// and fewer than B tokens are kept. registers=official reproduces that (the count is reported);
// registers=strict excludes AB exactly and always keeps B. With mean scores (< 1) the two are identical.
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
    const auto obj_mean = input.tap(o.layer("object_layer", input.info), "hiprune").received.subspan(skip);
    const auto deep_mean = input.tap(o.layer("deep_layer", input.info), "hiprune").received.subspan(skip);
    // scores=sum: the sum over queries the Qwen code computes, i.e. the mean times the number of queries
    const float scale = o.choice("scores") == "sum" ? static_cast<float>(input.queries()) : 1.0f;
    std::vector<float> s_obj(obj_mean.begin(), obj_mean.end()), s_deep(deep_mean.begin(), deep_mean.end());
    if (scale != 1.0f) {
      for (float& v : s_obj) v *= scale;
      for (float& v : s_deep) v *= scale;
    }
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
    const int64_t n_registers = budget - static_cast<int64_t>(ab.size());
    std::vector<int32_t> registers;
    if (o.choice("registers") == "strict") {
      registers = stable_top_k(s_deep, n_registers, in_ab);
    } else {  // the code's `deep -= mask; topk(deep, n_reg)`, in float32 as torch computes it
      std::vector<float> deep(s_deep.begin(), s_deep.end());
      for (int32_t p : ab) deep[static_cast<size_t>(p)] -= 1.0f;
      registers = stable_top_k(deep, n_registers);
    }

    std::vector<TokenRole> role_of(static_cast<size_t>(n), TokenRole::Kept);
    for (int32_t p : registers) role_of[static_cast<size_t>(p)] = TokenRole::Register;
    for (int32_t p : ab) role_of[static_cast<size_t>(p)] = TokenRole::Buffer;
    for (int32_t p : anchors) role_of[static_cast<size_t>(p)] = TokenRole::Anchor;

    std::vector<int32_t> kept = ab;
    int64_t picked_again = 0;  // registers that were already anchors / buffers: collapse in the official mask
    for (int32_t p : registers) {
      if (in_ab[static_cast<size_t>(p)]) {
        ++picked_again;
      } else {
        kept.push_back(p);
      }
    }
    std::sort(kept.begin(), kept.end());
    std::vector<TokenRole> roles;
    for (int32_t p : kept) roles.push_back(role_of[static_cast<size_t>(p)]);

    Reduction r = gather_reduction(input, std::move(kept), std::move(roles));
    r.stats["anchors"] = static_cast<double>(anchors.size());
    r.stats["buffers"] = static_cast<double>(ab.size() - anchors.size());
    r.stats["registers"] = static_cast<double>(static_cast<int64_t>(registers.size()) - picked_again);
    r.stats["duplicates_collapsed"] = static_cast<double>(picked_again);
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
      BudgetUse::Exact,  // registers=official with scores=sum may keep fewer (stats.duplicates_collapsed)
      {{"alpha", OptionType::Number, "0.1", "anchor share: N_a = round(B*alpha/5)", {}, 0.0, 5.0},
       {"object_layer", OptionType::Layer, "8",
        "layer of the anchor scores (official HIPRUNE_OBJECT_LAYER=9, 1-based = attentions[8])"},
       {"deep_layer", OptionType::Layer, "feature", "layer of the register scores (LLaVA code: attentions[-2])"},
       {"anchor_rounding", OptionType::Choice, "half_even", "rounding of B*alpha/5 (code: Python round)",
        {"half_even", "half_up", "floor", "ceil"}},
       {"border", OptionType::Choice, "clamp", "out-of-grid buffer neighbours: clamp (code) or drop (paper Eq. 5)",
        {"clamp", "drop"}},
       {"row_wrap", OptionType::Choice, "allowed", "may p-1 / p+1 wrap to the previous / next row (code: allowed)",
        {"allowed", "forbidden"}},
       {"scores", OptionType::Choice, "mean",
        "aggregate over queries: mean (LLaVA code) or sum (Qwen2.5-VL code; changes only what `deep -= mask` excludes)",
        {"mean", "sum"}},
       {"registers", OptionType::Choice, "official",
        "official: top-k of deep - 1·[anchors+buffers] (may pick a buffer again and keep fewer than B with sum scores); "
        "strict: exclude anchors+buffers, always B",
        {"official", "strict"}}}};
  return info;
}

std::unique_ptr<Reducer> make_hiprune(Options options) { return std::make_unique<HiPrune>(std::move(options)); }

}  // namespace vtprune::reduce
