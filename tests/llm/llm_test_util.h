// Shared helpers for the llm tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "test_support.h"
#include "vtprune/llm.h"

namespace vtprune::test {

inline std::string stories_model() { return (shared_dir() / "models/stories260K/model.gguf").string(); }

inline float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// A generated tiny LLaMA GGUF, written once per (type) per test process.
inline std::string tiny_model(llm::WeightType type = llm::WeightType::f16) {
  const auto path = temp_dir(std::string("tiny-") + std::string(llm::to_string(type))) / "llm.gguf";
  llm::write_test_llm(path.string(), llm::test_llm_shape("tiny"), /*seed=*/42, type);
  return path.string();
}

inline llm::SessionParams test_session_params(int n_ctx = 512, int n_batch = 512) {
  llm::SessionParams p;
  p.n_ctx = n_ctx;
  p.n_batch = n_batch;
  p.threads = 1;  // robust when ctest or other builds share the cores (ggml threads spin-wait)
  return p;
}

}  // namespace vtprune::test
