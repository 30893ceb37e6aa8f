// LLaVA-PruMerge and PruMerge+ (Shang et al., arXiv 2403.15388): adaptive IQR selection plus merging.
//
//   a[p]   = softmax_j(q_CLS · k_j / sqrt(C))[1 + p]      (single-head proxy on the LAST layer's raw q/k;
//                                                          CLS key dropped, not renormalised)
//   k      = #{p : a[p] > Q3 + 1.5·IQR}                   (numpy linear percentiles, strict >)
//   idx    = top_k(a)                                     (descending attention)
//   plus:  idx += [u in arange(0, N-1, int(int(1/(k/N))/3)) if u not in idx]   (ascending)
//   x'_i   = x_i + Σ_{j ∈ NN32(i)} a[j] · x_j             (NN by key cosine among all other patches,
//                                                          original features, raw weights)
//   e      = Σ_{j ∉ idx} a[j] · x_j                       (summary token, appended last)
//   output = [x'_{idx_0}, ..., x'_{idx_{k-1}}, e]         (attention order, not raster order)
// Code: 42Shawn/LLaVA-PruMerge@097c041 llava/model/multimodal_encoder/clip_encoder.py:34-47, 85-171, 174-281.
#include <algorithm>
#include <cmath>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

// The CLS row of softmax(q kᵀ · scale) over all T keys, computed in double, returned for the patch keys.
std::vector<float> cls_attention_proxy(const LayerTap& tap, double scale, int64_t n_patches) {
  const int64_t t = tap.keys.rows;
  std::vector<double> logits(static_cast<size_t>(t));
  double max_logit = -1e300;
  for (int64_t j = 0; j < t; ++j) {
    double s = 0.0;
    const auto key = tap.keys.row(j);
    for (int64_t c = 0; c < tap.keys.cols; ++c) s += double{tap.cls_query[static_cast<size_t>(c)]} * key[static_cast<size_t>(c)];
    logits[static_cast<size_t>(j)] = s * scale;
    max_logit = std::max(max_logit, logits[static_cast<size_t>(j)]);
  }
  double sum = 0.0;
  for (double& l : logits) sum += (l = std::exp(l - max_logit));
  std::vector<float> a(static_cast<size_t>(n_patches));
  for (int64_t p = 0; p < n_patches; ++p) a[static_cast<size_t>(p)] = static_cast<float>(logits[static_cast<size_t>(p + t - n_patches)] / sum);
  return a;
}

class PruMerge final : public Reducer {
 public:
  PruMerge(Options options, bool plus) : Reducer(std::move(options)), plus_(plus) {}
  const MethodInfo& info() const override { return plus_ ? prumerge_plus_info() : prumerge_info(); }

  Needs needs(const EncoderInfo& enc) const override {
    if (!enc.has_cls) throw Error(info().name + ": needs a [CLS] token; this encoder has none");
    Needs n;
    n.add({.layer = options().layer("layer", enc), .keys = true, .cls_query = true});
    n.features = true;
    return n;
  }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool budget_given) const override {
    const auto& o = options();
    const std::string& name = info().name;
    const LayerTap& tap = input.tap(o.layer("layer", input.info), name);
    const int64_t n = input.num_patches(), d = input.features.cols;
    if (tap.keys.rows != n + 1) throw Error(name + ": keys must have N+1 rows (CLS first)");

    // 1. attention proxy and the IQR outlier count
    const double scale = 1.0 / std::sqrt(static_cast<double>(d));  // official: C**-0.5, C = feature width
    const std::vector<float> a = cls_attention_proxy(tap, scale, n);
    const double q1 = percentile_linear(a, 25.0), q3 = percentile_linear(a, 75.0);
    const double upper = q3 + o.number("iqr_k") * (q3 - q1);
    int64_t outliers = 0;
    for (float v : a) outliers += double{v} > upper ? 1 : 0;
    // The official code crashes (PruMerge+) or keeps only the summary token when nothing is an outlier;
    // we keep at least the most-attended patch.
    const int64_t k = std::max<int64_t>(outliers, 1);
    std::vector<int32_t> idx = stable_top_k(a, k);
    std::vector<TokenRole> roles(idx.size(), TokenRole::Outlier);

    // 2. PruMerge+: spatially uniform supplements
    int64_t stride = 0;
    if (plus_) {
      const auto step_length = static_cast<int64_t>(1.0 / (static_cast<double>(k) / static_cast<double>(n)));
      stride = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(step_length) / o.number("stride_divisor")));
      std::vector<uint8_t> taken(static_cast<size_t>(n), 0);
      for (int32_t p : idx) taken[static_cast<size_t>(p)] = 1;
      for (int64_t u = 0; u < n - 1; u += stride) {  // arange(0, 575, stride): the last patch is never sampled
        if (!taken[static_cast<size_t>(u)]) {
          idx.push_back(static_cast<int32_t>(u));
          roles.push_back(TokenRole::Uniform);
        }
      }
    }

    // 3. budget cap (our extension; the official code has none): drop the tail of the kept order
    const bool summary = o.boolean("summary");
    if (budget_given) {
      const int64_t room = budget - (summary ? 1 : 0);
      if (room < 1) throw Error(name + ": a budget of " + std::to_string(budget) + " leaves no room beside the summary token");
      if (static_cast<int64_t>(idx.size()) > room) {
        idx.resize(static_cast<size_t>(room));
        roles.resize(static_cast<size_t>(room));
      }
    }

    // 4. merge each kept token with its key-cosine neighbours
    const int64_t patch_row0 = tap.keys.rows - n;
    const MatrixView patch_keys{tap.keys.data.subspan(static_cast<size_t>(patch_row0 * tap.keys.cols)), n, tap.keys.cols};
    const std::vector<float> unit_keys = normalize_rows(patch_keys);
    const MatrixView unit{unit_keys, n, tap.keys.cols};
    const int64_t k_nn = std::min<int64_t>(o.integer("k_nn"), n - 1);
    const auto neighbours = cosine_knn(unit, idx, k_nn);

    Reduction r;
    r.dim = d;
    r.tokens.reserve((idx.size() + 1) * static_cast<size_t>(d));
    for (size_t row = 0; row < idx.size(); ++row) {
      const int32_t i = idx[row];
      const std::vector<int32_t>& nn = neighbours[row];
      const auto xi = input.features.row(i);
      std::vector<float> acc(static_cast<size_t>(d), 0.0f);
      for (int32_t j : nn) {
        const float w = a[static_cast<size_t>(j)];
        const auto xj = input.features.row(j);
        for (int64_t c = 0; c < d; ++c) acc[static_cast<size_t>(c)] += w * xj[static_cast<size_t>(c)];
      }
      for (int64_t c = 0; c < d; ++c) r.tokens.push_back(xi[static_cast<size_t>(c)] + acc[static_cast<size_t>(c)]);
      std::vector<int32_t> group{i};
      group.insert(group.end(), nn.begin(), nn.end());
      r.groups.push_back(std::move(group));
    }

    // 5. the summary token: attention-weighted sum of everything not kept
    if (summary) {
      std::vector<uint8_t> kept_mask(static_cast<size_t>(n), 0);
      for (int32_t p : idx) kept_mask[static_cast<size_t>(p)] = 1;
      std::vector<float> e(static_cast<size_t>(d), 0.0f);
      std::vector<int32_t> pruned;
      for (int64_t j = 0; j < n; ++j) {
        if (kept_mask[static_cast<size_t>(j)]) continue;
        pruned.push_back(static_cast<int32_t>(j));
        const float w = a[static_cast<size_t>(j)];
        const auto xj = input.features.row(j);
        for (int64_t c = 0; c < d; ++c) e[static_cast<size_t>(c)] += w * xj[static_cast<size_t>(c)];
      }
      r.tokens.insert(r.tokens.end(), e.begin(), e.end());
      r.groups.push_back(std::move(pruned));
      roles.push_back(TokenRole::Summary);
    }

    r.kept = std::move(idx);
    r.roles = std::move(roles);
    r.stats["outliers"] = static_cast<double>(outliers);
    r.stats["iqr_q1"] = q1;
    r.stats["iqr_q3"] = q3;
    r.stats["iqr_upper"] = upper;
    if (plus_) r.stats["stride"] = static_cast<double>(stride);
    return r;
  }

 private:
  bool plus_;
};

std::vector<OptionSpec> prumerge_options(bool plus) {
  std::vector<OptionSpec> v = {
      {"layer", OptionType::Layer, "-1", "layer whose raw q_proj/k_proj give the proxy attention and keys (code: 23 = last)"},
      {"iqr_k", OptionType::Number, "1.5", "outlier threshold Q3 + iqr_k * IQR", {}, 0.0, 100.0},
      {"k_nn", OptionType::Integer, "32", "neighbours merged into each kept token (by key cosine)", {}, 0, 1e9},
      {"summary", OptionType::Boolean, "true", "append the attention-weighted sum of pruned tokens as a last token"}};
  if (plus) {
    v.push_back({"stride_divisor", OptionType::Number, "3",
                 "uniform stride = int(int(N/k) / divisor) (HEAD: 3; commit db0b0c8: 4)", {}, 0.01, 1e6});
  }
  return v;
}

}  // namespace

const MethodInfo& prumerge_info() {
  static const MethodInfo info{
      "prumerge",
      "LLaVA-PruMerge: Adaptive Token Reduction for Efficient Large Multimodal Models (arXiv 2403.15388)",
      "IQR outliers of [CLS] attention, each merged with its 32 key-nearest patches, + 1 summary token",
      "42Shawn/LLaVA-PruMerge@097c041 clip_encoder.py:85-171 (token_prune_merge_advanced)",
      BudgetUse::Cap,
      prumerge_options(false)};
  return info;
}

const MethodInfo& prumerge_plus_info() {
  static const MethodInfo info{
      "prumerge_plus",
      "LLaVA-PruMerge+ (arXiv 2403.15388)",
      "PruMerge outliers + spatially uniform supplements, each merged with its key-nearest patches, + summary",
      "42Shawn/LLaVA-PruMerge@097c041 clip_encoder.py:174-281 (token_prune_merge_advanced_plus)",
      BudgetUse::Cap,
      prumerge_options(true)};
  return info;
}

std::unique_ptr<Reducer> make_prumerge(Options options) { return std::make_unique<PruMerge>(std::move(options), false); }
std::unique_ptr<Reducer> make_prumerge_plus(Options options) {
  return std::make_unique<PruMerge>(std::move(options), true);
}

}  // namespace vtprune::reduce
