// A build with a GPU backend (VTPRUNE_GPU=vulkan|cuda|metal): the LLM on the device (-ngl 99) and libmtmd's
// encoder on the device (--mmproj-offload) answer as the CPU does in the same binary, and libmtmd's taps read
// through the eval callback equal the CPU's. vtprune's own LLaVA-1.5 graph stays on the CPU in every build.
// Written for the first GPU build; so far compiled and run only in a CPU build (VTPRUNE_GPU_TEST_ON_CPU), where
// "the device" is the CPU again.
#include <gtest/gtest.h>

#include <cmath>

#include "llama.h"
#include "test_pair.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"

namespace vtprune::pipeline {
namespace {

// Tolerances. The device's kernels accumulate in other orders (and lavapipe's F16 matmuls in F32 with other
// tiles) than ggml's CPU kernels, on F16 weights: logits are compared to 1e-2 of the largest logit (the tiny
// models' logits are O(1); a wrong position or row would move them by O(1)), greedy answers exactly.
constexpr float kLogitTolerance = 1e-2f;

using test::max_abs_diff;  // libmtmd's embeddings below

void expect_same_answers(const std::string& shape, const std::vector<std::pair<std::string, Budget>>& runs, bool vision_gpu) {
  std::string log;
  const auto pair = test::TestPair::make(shape, &log);
  ASSERT_NE(pair, nullptr) << log;
  VlmParams p;
  p.llm_path = (pair->dir / "llm.gguf").string();
  p.mmproj_path = (pair->dir / "mmproj.gguf").string();
  p.threads = 1;
  p.n_ctx = 2048;
  p.n_gpu_layers = 99;
  p.vision_gpu = vision_gpu;
  Vlm device(p);
  for (const auto& [method, budget] : runs) {
    SCOPED_TRACE(shape + " " + method);
    Request r;
    r.images.push_back(pair->image);
    r.prompt = "What is in the image?";
    r.method = method;
    r.budget = budget;
    if (method == "prumerge" || method == "prumerge_plus") r.options = {"layer=-2"};
    if (method == "cdpruner") r.options = {"relevance=llm"};
    r.sampling.max_tokens = 8;
    test::expect_answers_like(*pair->vlm, device, r, kLogitTolerance);
  }
}

TEST(Gpu, LlavaLlmOnTheDeviceAnswersAsTheCpu) {
  std::vector<std::pair<std::string, Budget>> runs;
  for (const MethodInfo& m : methods()) runs.push_back({m.name, m.budget_use == BudgetUse::Ignored ? Budget::all() : Budget::tokens(64)});
  expect_same_answers("tiny", runs, /*vision_gpu=*/false);
}

TEST(Gpu, QwenLlmAndLibmtmdEncoderOnTheDeviceAnswerAsTheCpu) {
  expect_same_answers("qwen2.5-vl", {{"none", Budget::all()}, {"hiprune", Budget::fraction(0.334)}, {"fastervlm", Budget::fraction(0.112)}},
                      /*vision_gpu=*/true);
}

// libmtmd's graph on the device: the eval callback reads the tapped blocks' Q and K back from device memory, and
// the received attention equals the CPU's to 1e-4 relative (the statistics are means of softmax rows, O(1/N)).
TEST(Gpu, LibmtmdTapsOnTheDeviceEqualTheCpu) {
  std::string log;
  const auto dir = test::temp_dir("gpu-taps");
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape qwen2.5-vl --out " + dir.string(), &log), 0) << log;
  llama_model* model = llama_model_load_from_file((dir / "llm.gguf").c_str(), llama_model_default_params());
  ASSERT_NE(model, nullptr);
  const family::Family& fam = family::by_name("qwen2.5-vl");
  std::vector<std::vector<float>> received[2];
  std::vector<float> embeddings[2];
  for (int device = 0; device < 2; ++device) {
    vision::MtmdEncoder encoder(dir / "mmproj.gguf", fam, model, {.threads = 1, .use_gpu = device == 1});
    const std::vector<vision::RgbImage> images = {vision::load_image(dir / "image.png")};
    const vision::MtmdPrompt prompt = encoder.tokenize(std::string(vision::MtmdEncoder::marker()) + "What is it?", images);
    size_t chunk = 0;
    while (!prompt.chunks()[chunk].image) ++chunk;
    Needs needs;
    for (int layer : {1, encoder.info().num_layers - 1}) needs.add({.layer = layer, .received = true});
    const vision::EncoderResult e = encoder.encode(prompt, chunk, needs);
    for (const auto& tap : e.taps) received[device].push_back(tap.received);
    embeddings[device] = e.features;
  }
  llama_model_free(model);
  ASSERT_EQ(received[0].size(), 2u);
  ASSERT_EQ(received[1].size(), 2u);
  for (size_t t = 0; t < 2; ++t) {
    ASSERT_EQ(received[0][t].size(), received[1][t].size());
    for (size_t i = 0; i < received[0][t].size(); ++i) {
      EXPECT_NEAR(received[1][t][i], received[0][t][i], 1e-4 * std::abs(received[0][t][i]) + 1e-7) << "tap " << t << " token " << i;
    }
  }
  float scale = 0;
  EXPECT_LE(max_abs_diff(embeddings[1], embeddings[0], &scale), 1e-2f * scale);
}

}  // namespace
}  // namespace vtprune::pipeline
