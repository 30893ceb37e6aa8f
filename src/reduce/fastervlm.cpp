// FasterVLM (Zhang et al., arXiv 2412.01818): keep the top-B patches by [CLS] attention.
//
//   score[p] = mean_h attn_L[h, CLS, 1 + p]          (CLS query row of the feature layer, CLS key dropped)
//   keep     = top_B(score), output in raster order   (the official code builds an index mask)
//
// rank_by=received is vtprune's adaptation for encoders without a CLS token (Qwen2.5-VL): the attention each
// token receives, mean over heads and all queries (HiPrune's score), in place of the CLS row.
#include <algorithm>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

class FasterVlm final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return fastervlm_info(); }

  Needs needs(const EncoderInfo& enc) const override {
    const bool cls_row = options().choice("rank_by") == "cls";
    if (cls_row && !enc.has_cls) {
      throw Error("fastervlm: rank_by=cls needs a [CLS] token; this encoder has none (rank_by=received ranks by the "
                  "attention each token receives)");
    }
    Needs n;
    n.add({.layer = options().layer("layer", enc), .received = !cls_row, .cls_attention = cls_row});
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool) const override {
    const LayerTap& tap = input.tap(options().layer("layer", input.info), "fastervlm");
    const int skip = input.info.has_cls ? 1 : 0;  // drop the CLS key
    const auto score = options().choice("rank_by") == "cls" ? tap.cls_attention.subspan(1) : tap.received.subspan(skip);
    std::vector<int32_t> kept = stable_top_k(score, budget);
    std::sort(kept.begin(), kept.end());
    std::vector<TokenRole> roles(kept.size(), TokenRole::Kept);
    return gather_reduction(input, std::move(kept), std::move(roles));
  }
};

}  // namespace

const MethodInfo& fastervlm_info() {
  static const MethodInfo info{
      "fastervlm",
      "FasterVLM: [CLS] Attention is All You Need for Training-Free Visual Token Pruning (arXiv 2412.01818)",
      "top-B patches by [CLS]-row attention of the feature layer, raster order",
      "Theia-4869/FasterVLM@f5d5f12 llava_arch.py:141-155",
      BudgetUse::Exact,
      {{"layer", OptionType::Layer, "feature", "layer whose CLS attention ranks patches (official: attentions[-2])"},
       {"rank_by", OptionType::Choice, "cls",
        "cls: the [CLS] query's attention (official); received: attention each token receives (no-CLS encoders)",
        {"cls", "received"}}}};
  return info;
}

std::unique_ptr<Reducer> make_fastervlm(Options options) { return std::make_unique<FasterVlm>(std::move(options)); }

}  // namespace vtprune::reduce
