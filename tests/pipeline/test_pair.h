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

// `other` (the same files on another device or host) answers request `r` as `reference` does: the same greedy
// answer and kept count, and next-token logits after the prompt within `tolerance` of the largest logit.
inline void expect_answers_like(pipeline::Vlm& reference, pipeline::Vlm& other, pipeline::Request r, float tolerance) {
  const pipeline::Result want_run = reference.run(r);
  const pipeline::Result got_run = other.run(r);
  EXPECT_EQ(got_run.answer, want_run.answer);
  EXPECT_EQ(got_run.tokens_kept, want_run.tokens_kept);
  r.sampling.max_tokens = 0;
  reference.run(r);
  const std::vector<float> want = reference.session().last_logits();
  other.run(r);
  const std::vector<float> got = other.session().last_logits();
  ASSERT_EQ(got.size(), want.size());
  float scale = 0;
  const float diff = max_abs_diff(got, want, &scale);
  EXPECT_LE(diff, tolerance * scale) << "max |diff| " << diff << " of max |logit| " << scale;
}

}  // namespace vtprune::test
