// One generated model pair (`vtprune make-test-model --shape S`) loaded as a Vlm, with its test image: what
// each pipeline suite sets up once in SetUpTestSuite.
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/pipeline.h"

namespace vtprune::test {

struct TestPair {
  std::filesystem::path dir;
  std::unique_ptr<pipeline::Vlm> vlm;
  std::vector<uint8_t> image;

  // How the suites load a pair in `dir`: one thread (suites run in parallel with others on a 2-core machine).
  static pipeline::VlmParams params(const std::filesystem::path& dir) {
    pipeline::VlmParams p;
    p.llm_path = (dir / "llm.gguf").string();
    p.mmproj_path = (dir / "mmproj.gguf").string();
    p.threads = 1;
    p.n_ctx = 2048;
    return p;
  }

  // Writes the pair into a fresh temp dir and loads it; nullptr (with `log` set) when make-test-model fails.
  static std::unique_ptr<TestPair> make(const std::string& shape, std::string* log) {
    auto pair = std::make_unique<TestPair>();
    pair->dir = temp_dir("pair-" + shape);
    if (run_command(vtprune_binary().string() + " make-test-model --shape " + shape + " --out " + pair->dir.string(), log) != 0)
      return nullptr;
    pair->vlm = std::make_unique<pipeline::Vlm>(params(pair->dir));
    std::ifstream in(pair->dir / "image.png", std::ios::binary);
    pair->image.assign(std::istreambuf_iterator<char>(in), {});
    return pair;
  }
};

// A suite on one generated pair of `Shape`, made once for the suite: request() asks kPairQuestion about its
// image, first_logits() gives the next-token logits after the prompt (prefill only).
inline constexpr const char* kPairQuestion = "What is in the image?";
template <const char* Shape>
class PairSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string log;
    pair_ = TestPair::make(Shape, &log);
    ASSERT_NE(pair_, nullptr) << log;
    dir_ = &pair_->dir;
    vlm_ = pair_->vlm.get();
    image_ = &pair_->image;
  }
  static void TearDownTestSuite() { pair_.reset(); }
  // The suite's pair as VlmParams, to load it again with other options.
  static pipeline::VlmParams pair_params() { return TestPair::params(*dir_); }
  static pipeline::Request request(const std::string& method, Budget budget, int max_tokens = 8) {
    pipeline::Request r;
    r.images.push_back(*image_);
    r.prompt = kPairQuestion;
    r.method = method;
    r.budget = budget;
    r.sampling.max_tokens = max_tokens;
    return r;
  }
  static std::vector<float> first_logits(const std::string& method, Budget budget, std::vector<std::string> options = {}) {
    pipeline::Request r = request(method, budget, 0);
    r.options = std::move(options);
    vlm_->run(r);
    return vlm_->session().last_logits();
  }
  static inline std::unique_ptr<TestPair> pair_;
  static inline std::filesystem::path* dir_ = nullptr;
  static inline pipeline::Vlm* vlm_ = nullptr;
  static inline std::vector<uint8_t>* image_ = nullptr;
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

// Each method at every token, about a third and about a ninth of `vlm`'s image (one image, whole or in tiles;
// `request(method, budget)` builds the request): runs (official or adapted) with fewer prompt tokens and less KV, or refuses with
// an error that names the family, as the family table says.
inline void expect_methods_run_or_refuse_as_the_family_table_says(
    pipeline::Vlm& vlm, const std::function<pipeline::Request(const std::string&, Budget)>& request) {
  using pipeline::Result;
  const Result full = vlm.run(request("none", Budget::all()));
  const int64_t n = full.tokens_in;
  ASSERT_GT(n, 9);
  const family::Family& fam = vlm.family();
  for (const MethodInfo& m : methods()) {
    SCOPED_TRACE(m.name);
    const auto rule = std::find_if(fam.methods.begin(), fam.methods.end(), [&](const family::MethodRule& r) { return r.method == m.name; });
    ASSERT_NE(rule, fam.methods.end()) << "every method needs an entry in the " << fam.name << " family";
    if (rule->support == family::Support::Refused) {
      try {
        vlm.run(request(m.name, Budget::tokens(n / 3)));
        ADD_FAILURE() << "expected a refusal";
      } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find(fam.name), std::string::npos) << e.what();
      }
      continue;
    }
    int64_t last_kept = n + 1, last_prompt = full.n_prompt_tokens + 1, last_kv = full.kv_bytes + 1;
    for (Budget b : {Budget::all(), Budget::fraction(0.334), Budget::fraction(0.112)}) {
      SCOPED_TRACE(b.to_string());
      if (m.budget_use == BudgetUse::Ignored && b.kind != Budget::Kind::All) continue;
      const Result r = vlm.run(request(m.name, b));
      ASSERT_EQ(r.images.size(), full.images.size());  // one per image, or per tile of a tiled image
      const int64_t budget = b.resolve(n);
      const bool may_collapse = m.name == "hiprune";
      int64_t collapsed = 0;
      for (const auto& im : r.images) {
        const auto it = im.reduction.stats.find("duplicates_collapsed");
        if (it != im.reduction.stats.end()) collapsed += static_cast<int64_t>(it->second);
      }
      if (m.name == "none" || b.kind == Budget::Kind::All) {
        EXPECT_LE(r.tokens_kept, n);
      } else if (m.budget_use == BudgetUse::Exact && !may_collapse) {
        EXPECT_EQ(r.tokens_kept, budget);
      } else {
        // HiPrune's official Qwen registers may collapse onto buffers (fewer kept, reported); caps / pooling keep
        // at most the budget
        EXPECT_LE(r.tokens_kept, budget);
        EXPECT_GE(r.tokens_kept, 1);
      }
      if (m.budget_use == BudgetUse::Exact) {
        EXPECT_LT(r.tokens_kept, last_kept + (b.kind == Budget::Kind::All ? 1 : 0));
      } else {  // adaptive (DFMR) or pooled: never more than with a larger budget
        EXPECT_LE(r.tokens_kept, last_kept);
      }
      EXPECT_EQ(r.n_prompt_tokens, full.n_prompt_tokens - n + r.tokens_kept);
      EXPECT_LE(r.n_prompt_tokens, last_prompt);
      EXPECT_LE(r.kv_bytes, last_kv);
      last_kept = r.tokens_kept, last_prompt = r.n_prompt_tokens, last_kv = r.kv_bytes;
      if (may_collapse && b.kind != Budget::Kind::All) {
        EXPECT_EQ(r.tokens_kept + collapsed, budget);
      }
    }
  }
}

}  // namespace vtprune::test
