// A build with a GPU backend (VTPRUNE_GPU=vulkan|cuda|metal, or a VTPRUNE_BACKEND_DL build with a GPU module
// beside it: scripts/test-vulkan.sh): on the first GPU device ("gpu", as --mmproj-offload picks it), vtprune's
// own graphs (the LLaVA ViT with every tap, the projector, CLIP's text tower, the DeiT classifier) equal the
// CPU's; the LLM on the device (-ngl 99) with the own graph or libmtmd's encoder there too answers as the CPU
// does in the same binary; libmtmd's taps read through the eval callback equal the CPU's. Skipped when the
// build finds no GPU device (scripts/test-vulkan.sh fails on a skip).
#include <gtest/gtest.h>

#include <cmath>

#include "device_checks.h"
#include "llama.h"
#include "test_pair.h"
#include "vtprune/devices.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"

namespace vtprune::pipeline {
namespace {

// Tolerances. The device's kernels accumulate in other orders (and lavapipe's F16 matmuls in F32 with other
// tiles) than ggml's CPU kernels, on F16 weights: logits are compared to 1e-2 of the largest logit (the tiny
// models' logits are O(1); a wrong position or row would move them by O(1)), greedy answers exactly.
constexpr float kLogitTolerance = 1e-2f;

using test::max_abs_diff;  // libmtmd's embeddings below

// vtprune's own graphs against the CPU: values to 1e-2 of each tensor's largest value (F16 activations in the
// device's matmuls, other summation orders; a missing op, a wrong row or position moves them by O(1)).
constexpr float kGraphTolerance = 2e-2f;

#define REQUIRE_GPU_DEVICE()                                                                                   \
  do {                                                                                                         \
    if (resolved_device_name("gpu") == "CPU") GTEST_SKIP() << "this build finds no GPU device (vtprune devices)"; \
  } while (0)

void expect_same_answers(const std::string& shape, const std::vector<std::pair<std::string, Budget>>& runs, bool vision_gpu) {
  REQUIRE_GPU_DEVICE();
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
  if (vision_gpu && device.encoder() == family::Encoder::Own) {
    EXPECT_EQ(device.vision_model().device_name(), resolved_device_name("gpu"));
  }
  for (const auto& [method, budget] : runs) {
    SCOPED_TRACE(shape + " " + method);
    Request r = test::device_request(*pair, method);
    r.budget = budget;
    test::expect_answers_like(*pair->vlm, device, r, kLogitTolerance);
  }
}

TEST(Gpu, OwnGraphsOnTheDeviceEqualTheCpu) {
  REQUIRE_GPU_DEVICE();
  std::string log;
  const auto pair = test::TestPair::make("tiny", &log);
  ASSERT_NE(pair, nullptr) << log;
  {
    SCOPED_TRACE("encoder");
    test::expect_encoder_equals_cpu(pair->dir, "gpu", kGraphTolerance);
  }
  {
    SCOPED_TRACE("CLIP text");
    test::expect_clip_text_equals_cpu(pair->dir, "gpu", kGraphTolerance);
  }
  if (!test::shared_dir().empty() && std::filesystem::exists(test::shared_dir() / "models" / "deit-tiny")) {
    SCOPED_TRACE("DeiT");
    test::expect_deit_equals_cpu("gpu", kGraphTolerance);
  }
}

TEST(Gpu, LlavaLlmAndOwnGraphOnTheDeviceAnswerAsTheCpu) {
  std::vector<std::pair<std::string, Budget>> runs;
  for (const MethodInfo& m : methods()) runs.push_back({m.name, m.budget_use == BudgetUse::Ignored ? Budget::all() : Budget::tokens(64)});
  expect_same_answers("tiny", runs, /*vision_gpu=*/true);
}

TEST(Gpu, QwenLlmAndLibmtmdEncoderOnTheDeviceAnswerAsTheCpu) {
  expect_same_answers("qwen2.5-vl", {{"none", Budget::all()}, {"hiprune", Budget::fraction(0.334)}, {"fastervlm", Budget::fraction(0.112)}},
                      /*vision_gpu=*/true);
}

// libmtmd's graph on the device: the eval callback reads the tapped blocks' Q and K back from device memory, and
// the received attention equals the CPU's.
TEST(Gpu, LibmtmdTapsOnTheDeviceEqualTheCpu) {
  REQUIRE_GPU_DEVICE();
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
  // libmtmd's graph keeps ggml's default precision, so the device accumulates its F16 weights' products in F16
  // (vtprune's own graphs ask for F32): Q and K, hence the statistics, move by ~1e-3 of their scale (lavapipe:
  // 2.5e-3). Compared as the own graphs are: to 2e-2 of the largest value.
  for (size_t t = 0; t < 2; ++t) test::expect_close(received[1][t], received[0][t], kGraphTolerance, "tap " + std::to_string(t));
  test::expect_close(embeddings[1], embeddings[0], kGraphTolerance, "embeddings");
}

// One VisionModel on the device running graphs of changing shapes in turn, as a server does (a method without
// taps, one that materialises a tapped layer's softmax, the projector on another number of rows): every result
// equals the CPU's. Guards Compute's fresh device backend per graph shape (ggml-vulkan corrupted the heap
// without it: compute.cpp).
TEST(Gpu, OwnGraphsOfChangingShapesOnTheDeviceEqualTheCpu) {
  REQUIRE_GPU_DEVICE();
  std::string log;
  const auto dir = test::temp_dir("gpu-shapes");
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape tiny --out " + dir.string(), &log), 0) << log;
  auto cpu = vision::VisionModel::from_mmproj(dir / "mmproj.gguf");
  auto dev = vision::VisionModel::from_mmproj(dir / "mmproj.gguf", {.device = "gpu"});
  const vision::Image image = vision::preprocess(vision::load_image(dir / "image.png"), cpu.preprocess_recipe());
  Needs plain;
  plain.features = true;
  Needs tapped = plain;
  tapped.add({.layer = cpu.info().feature_layer, .received = true, .cls_attention = true, .attention = true});
  for (int round = 0; round < 3; ++round) {
    for (const Needs* needs : {&plain, &tapped}) {
      SCOPED_TRACE("round " + std::to_string(round) + (needs == &plain ? ", no taps" : ", softmax taps"));
      const auto want = cpu.encode(image, *needs, {.threads = 1});
      const auto got = dev.encode(image, *needs, {.threads = 1});
      test::expect_close(got.features, want.features, kGraphTolerance, "features");
      for (size_t t = 0; t < want.taps.size(); ++t) {
        test::expect_close(got.taps[t].received, want.taps[t].received, kGraphTolerance, "received attention");
        test::expect_close(got.taps[t].attention, want.taps[t].attention, kGraphTolerance, "attention maps");
      }
      const int64_t rows = 16 + 100 * round;
      const MatrixView kept{std::span<const float>(want.features).first(static_cast<size_t>(rows * want.dim)), rows, want.dim};
      test::expect_close(dev.project(kept, 1), cpu.project(kept, 1), kGraphTolerance, "projector");
    }
  }
}

}  // namespace
}  // namespace vtprune::pipeline
