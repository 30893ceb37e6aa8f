// VisionZip (Yang et al., CVPR 2025, arXiv 2412.04467): dominant tokens by [CLS] attention, plus contextual
// tokens merged by key similarity. The CLS token itself is one of the D dominant outputs.
//
//   dominant   = {CLS} ∪ top_{D-1}(Σ_h attn_L[h, CLS, 1:])             (output: sequence order)
//   rest       = the other T-D tokens, ascending; m = mean-over-heads keys, L2-normalised
//   targets    = rest[arange(0, M, max(1, M // C))[:C]]               (M = T - D)
//   assign(j)  = argmax_t cos(m_j, m_t)  for every non-target j        (first maximum on ties)
//   context_t  = h_t + mean_{j: assign(j)=t} h_j                       (mean over >= 1: empty groups add 0)
//   output     = [h_dominant..., context_t...]                         (hidden = feature layer incl. CLS)
// Indices are SEQUENCE positions (0 = CLS, patch p -> p + 1), as the official all_indices.
// Code: dvlab-research/VisionZip@3151f6d visionzip/clip_encoder.py:42-85, utils.py:10-135.
//
// dominant_by=received is vtprune's adaptation for encoders without a CLS token (Qwen2.5-VL): the D dominant
// tokens are the top-D by the attention each token receives (mean over heads and queries), no CLS row is output,
// and indices are patch indices. metric=features merges the contextual tokens by the cosine of the features
// themselves (the LLM-input embeddings there) where the encoder gives no keys.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

struct Split {
  int64_t dominant = 0;
  int64_t contextual = 0;
};

class VisionZip final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return visionzip_info(); }

  bool cls_mode() const { return options().choice("dominant_by") == "cls"; }
  bool key_metric() const { return options().choice("metric") == "keys"; }

  Needs needs(const EncoderInfo& enc) const override {
    if (cls_mode() && !enc.has_cls) {
      throw Error("visionzip: dominant_by=cls needs a [CLS] token; this encoder has none (dominant_by=received ranks "
                  "by the attention each token receives)");
    }
    if (!cls_mode() && enc.has_cls) {
      throw Error("visionzip: dominant_by=received is for encoders without a [CLS] token; this one has one");
    }
    Needs n;
    n.add({.layer = options().layer("layer", enc), .received = !cls_mode(), .cls_attention = cls_mode(), .keys = key_metric()});
    n.cls_features = cls_mode();
    n.features = true;
    return n;
  }

 protected:
  // D and C from the options, or from the budget with the official 64-token ratio (54/10, 108/20, 162/30).
  Split split(int64_t budget, bool budget_given, int64_t seq_len) const {
    const int64_t d_opt = options().integer("dominant"), c_opt = options().integer("contextual");
    Split s;
    if (d_opt > 0 && c_opt >= 0) {
      s = {d_opt, c_opt};
      if (budget_given && s.dominant + s.contextual != budget) {
        throw Error("visionzip: dominant=" + std::to_string(d_opt) + " + contextual=" + std::to_string(c_opt) +
                    " do not add up to the budget " + std::to_string(budget));
      }
    } else {
      s.contextual = c_opt >= 0 ? c_opt : round_half_even(static_cast<double>(budget) * 10.0 / 64.0);
      s.dominant = d_opt > 0 ? d_opt : budget - s.contextual;
      if (s.dominant + s.contextual != budget) {
        throw Error("visionzip: dominant + contextual must equal the budget " + std::to_string(budget));
      }
    }
    if (s.dominant < 1) throw Error("visionzip: needs at least 1 dominant token (the CLS token)");
    if (s.dominant + s.contextual > seq_len) {
      throw Error("visionzip: dominant + contextual = " + std::to_string(s.dominant + s.contextual) + " exceed the " +
                  std::to_string(seq_len) + " tokens of the sequence");
    }
    return s;
  }

  Reduction run(const EncoderOutput& input, int64_t budget, bool budget_given) const override {
    const LayerTap& tap = input.tap(options().layer("layer", input.info), "visionzip");
    const bool with_cls = cls_mode();
    const int32_t offset = with_cls ? 1 : 0;  // sequence index of patch 0
    const int64_t t = input.seq_len(), d = input.features.cols;
    const int heads = input.info.heads;
    if (key_metric() && (heads <= 0 || tap.keys.cols % heads != 0)) {
      throw Error("visionzip: key width " + std::to_string(tap.keys.cols) + " is not a multiple of heads=" +
                  std::to_string(heads));
    }
    const Split s = split(budget, budget_given, t);
    auto hidden = [&](int32_t seq) {
      return with_cls && seq == 0 ? input.cls_features : input.features.row(seq - offset);
    };

    Reduction r;
    r.sequence_indices = with_cls;
    r.dim = d;
    if (with_cls) {
      // dominant: CLS + top (D-1) patches by CLS attention (mean over heads ranks like the official sum)
      const std::vector<int32_t> top = stable_top_k(tap.cls_attention.subspan(1), s.dominant - 1);
      r.selection_order.push_back(0);
      for (int32_t p : top) r.selection_order.push_back(p + 1);
    } else {
      r.selection_order = stable_top_k(tap.received, s.dominant);
    }
    std::vector<int32_t> dominant = r.selection_order;
    std::sort(dominant.begin(), dominant.end());
    std::vector<uint8_t> is_dominant(static_cast<size_t>(t), 0);
    for (int32_t q : dominant) {
      is_dominant[static_cast<size_t>(q)] = 1;
      r.kept.push_back(q);
      r.roles.push_back(with_cls && q == 0 ? TokenRole::Cls : TokenRole::Dominant);
      const auto h = hidden(q);
      r.tokens.insert(r.tokens.end(), h.begin(), h.end());
      r.groups.push_back({q});
    }

    // contextual: uniformly spaced targets among the rest, every other token merged into its nearest
    if (s.contextual > 0) {
      std::vector<int32_t> rest;
      for (int32_t q = 0; q < t; ++q) {
        if (!is_dominant[static_cast<size_t>(q)]) rest.push_back(q);
      }
      const auto m = static_cast<int64_t>(rest.size());
      const int64_t step = std::max<int64_t>(1, m / s.contextual);
      std::vector<uint8_t> is_target(static_cast<size_t>(m), 0);
      std::vector<int32_t> targets;  // positions in `rest`
      for (int64_t i = 0; i < m && static_cast<int64_t>(targets.size()) < s.contextual; i += step) {
        targets.push_back(static_cast<int32_t>(i));
        is_target[static_cast<size_t>(i)] = 1;
      }
      // metric: keys averaged over heads (metric=features: the features), then L2-normalised
      const int64_t hd = key_metric() ? tap.keys.cols / heads : d;
      std::vector<float> metric(static_cast<size_t>(m * hd), 0.0f);
      for (int64_t i = 0; i < m; ++i) {
        if (!key_metric()) {
          const auto h = hidden(rest[static_cast<size_t>(i)]);
          std::copy(h.begin(), h.end(), metric.begin() + i * hd);
          continue;
        }
        const auto key = tap.keys.row(rest[static_cast<size_t>(i)]);
        for (int h = 0; h < heads; ++h) {
          for (int64_t c = 0; c < hd; ++c) metric[static_cast<size_t>(i * hd + c)] += key[static_cast<size_t>(h * hd + c)];
        }
        for (int64_t c = 0; c < hd; ++c) metric[static_cast<size_t>(i * hd + c)] /= static_cast<float>(heads);
      }
      const std::vector<float> unit = normalize_rows({metric, m, hd});
      std::vector<float> target_rows;
      gather_rows({unit, m, hd}, targets, target_rows);
      std::vector<float> cosine(static_cast<size_t>(m) * targets.size());
      dot_products({unit, m, hd}, {target_rows, static_cast<int64_t>(targets.size()), hd}, cosine);

      const size_t c = targets.size();
      std::vector<std::vector<int32_t>> members(c);
      std::vector<std::vector<float>> sums(c, std::vector<float>(static_cast<size_t>(d), 0.0f));
      for (int64_t i = 0; i < m; ++i) {
        if (is_target[static_cast<size_t>(i)]) continue;
        const auto best = static_cast<size_t>(argmax_first(std::span<const float>(cosine).subspan(static_cast<size_t>(i) * c, c)));
        const int32_t q = rest[static_cast<size_t>(i)];
        members[best].push_back(q);
        const auto h = hidden(q);
        for (int64_t k = 0; k < d; ++k) sums[best][static_cast<size_t>(k)] += h[static_cast<size_t>(k)];
      }
      for (size_t ti = 0; ti < c; ++ti) {
        const int32_t q = rest[static_cast<size_t>(targets[ti])];
        const float count = static_cast<float>(std::max<size_t>(members[ti].size(), 1));
        const auto h = hidden(q);
        for (int64_t k = 0; k < d; ++k) r.tokens.push_back(h[static_cast<size_t>(k)] + sums[ti][static_cast<size_t>(k)] / count);
        r.kept.push_back(q);
        r.roles.push_back(TokenRole::Contextual);
        std::vector<int32_t> group{q};
        group.insert(group.end(), members[ti].begin(), members[ti].end());
        r.groups.push_back(std::move(group));
        r.stats["contextual_count_" + std::to_string(ti)] = static_cast<double>(members[ti].size());
      }
    }
    r.stats["dominant"] = static_cast<double>(s.dominant);
    r.stats["contextual"] = static_cast<double>(s.contextual);
    return r;
  }
};

}  // namespace

const MethodInfo& visionzip_info() {
  static const MethodInfo info{
      "visionzip",
      "VisionZip: Longer is Better but Not Necessary in Vision Language Models (CVPR 2025, arXiv 2412.04467)",
      "CLS + dominant patches by [CLS] attention, + contextual tokens merged by key similarity",
      "dvlab-research/VisionZip@3151f6d visionzip/clip_encoder.py:42-85, utils.py:10-135",
      BudgetUse::Exact,
      {{"dominant", OptionType::Integer, "0", "dominant tokens D, CLS included (0: budget - contextual)", {}, 0, 1e9},
       {"contextual", OptionType::Integer, "-1", "contextual tokens C (-1: round(budget*10/64), the 54/10 split)", {}, -1, 1e9},
       {"layer", OptionType::Layer, "feature", "layer of the CLS attention and keys (official: attentions[-2])"},
       {"dominant_by", OptionType::Choice, "cls",
        "cls: [CLS] attention, CLS output first (official); received: attention each token receives (no-CLS encoders)",
        {"cls", "received"}},
       {"metric", OptionType::Choice, "keys",
        "what contextual tokens are merged by: keys of the layer averaged over heads (official), or the features",
        {"keys", "features"}}}};
  return info;
}

std::unique_ptr<Reducer> make_visionzip(Options options) { return std::make_unique<VisionZip>(std::move(options)); }

}  // namespace vtprune::reduce
