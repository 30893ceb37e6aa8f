// An in-memory EncoderOutput with every tap any method asks for (random but valid: real softmax maps),
// for property and error-path tests.
#pragma once

#include <cmath>
#include <random>

#include "reduce/common.h"
#include "vtprune/reduce.h"

namespace vtprune::test {

struct SyntheticEncoder {
  EncoderOutput out;
  std::vector<std::vector<float>> store;

  SyntheticEncoder(Grid grid, int dim, uint64_t seed, bool has_cls = true, int projected_dim = 0) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> g;
    const int heads = 2;
    const int64_t n = grid.size(), t = n + (has_cls ? 1 : 0);
    out.info = {grid, has_cls, heads, 24, 22};
    auto vec = [&](int64_t count, float scale) -> std::span<const float> {
      auto& v = store.emplace_back(static_cast<size_t>(count));
      for (float& x : v) x = g(rng) * scale;
      return v;
    };
    out.features = {vec(n * dim, 1.0f), n, dim};
    if (has_cls) out.cls_features = vec(dim, 1.0f);
    const int pdim = projected_dim > 0 ? projected_dim : 2 * dim;
    out.projected = {vec(n * pdim, 1.0f), n, pdim};
    for (int layer : {8, 22, 23}) {
      // attention maps from random logits, reduced to the statistics
      std::vector<float> maps(static_cast<size_t>(heads * t * t));
      for (int64_t r = 0; r < heads * t; ++r) {
        float* row = maps.data() + r * t;
        float sum = 0;
        for (int64_t k = 0; k < t; ++k) sum += (row[k] = std::exp(1.5f * g(rng)));
        for (int64_t k = 0; k < t; ++k) row[k] /= sum;
      }
      std::vector<float> received, cls;
      reduce::attention_statistics(maps, heads, t, &received, has_cls ? &cls : nullptr);
      LayerTap tap;
      tap.layer = layer;
      tap.received = store.emplace_back(std::move(received));
      if (has_cls) tap.cls_attention = store.emplace_back(std::move(cls));
      tap.keys = {vec(t * dim, 1.0f), t, dim};
      if (has_cls) tap.cls_query = vec(dim, 1.0f);  // proxy logits ~ N(0, 1): a realistic outlier share
      out.taps.push_back(tap);
    }
    // prompt-side inputs (CDPruner): CLIP-like image / text embeddings (C = 8, two 77-token segments) and three
    // LLM prompt-token embeddings in the projected space
    out.image_embeds = {vec(n * 8, 1.0f), n, 8};
    out.text_embeds = {vec(2 * 8, 1.0f), 2, 8};
    out.prompt_embeddings = {vec(3 * pdim, 1.0f), 3, pdim};
  }
  SyntheticEncoder(const SyntheticEncoder&) = delete;
};

}  // namespace vtprune::test
