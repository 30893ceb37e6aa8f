// One generated model pair (`vtprune make-test-model --shape S`) loaded as a Vlm, with its test image: what
// each pipeline suite sets up once in SetUpTestSuite.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "test_support.h"
#include "vtprune/pipeline.h"

namespace vtprune::test {

struct TestPair {
  std::filesystem::path dir;
  std::unique_ptr<pipeline::Vlm> vlm;
  std::vector<uint8_t> image;

  // Writes the pair into a fresh temp dir and loads it; nullptr (with `log` set) when make-test-model fails.
  static std::unique_ptr<TestPair> make(const std::string& shape, std::string* log) {
    auto pair = std::make_unique<TestPair>();
    pair->dir = temp_dir("pair-" + shape);
    if (run_command(vtprune_binary().string() + " make-test-model --shape " + shape + " --out " + pair->dir.string(), log) != 0)
      return nullptr;
    pipeline::VlmParams p;
    p.llm_path = (pair->dir / "llm.gguf").string();
    p.mmproj_path = (pair->dir / "mmproj.gguf").string();
    p.threads = 1;  // suites run in parallel with others on a 2-core machine
    p.n_ctx = 2048;
    pair->vlm = std::make_unique<pipeline::Vlm>(p);
    std::ifstream in(pair->dir / "image.png", std::ios::binary);
    pair->image.assign(std::istreambuf_iterator<char>(in), {});
    return pair;
  }
};

// max |got - want| and (in *scale) max |want|: logits compared relative to the largest one.
inline float max_abs_diff(const std::vector<float>& got, const std::vector<float>& want, float* scale) {
  float diff = 0;
  *scale = 0;
  for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
    *scale = std::max(*scale, std::abs(want[i]));
    diff = std::max(diff, std::abs(got[i] - want[i]));
  }
  return diff;
}

}  // namespace vtprune::test
