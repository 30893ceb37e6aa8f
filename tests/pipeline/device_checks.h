// vtprune's own graphs on another ggml device against the CPU, in one process: the LLaVA-1.5 ViT with every
// kind of tap, the projector, CLIP's text tower and image projection, and (with ../shared) the timm DeiT
// classifier and its pruned tail. Used by the RPC suite (an rpc-server on loopback: the same CPU kernels behind
// a non-host device) and the GPU suite (Vulkan on lavapipe, CUDA on a lent GPU).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_pair.h"
#include "vtprune/text.h"
#include "vtprune/vision.h"

namespace vtprune::test {

// max |got - want| <= tolerance * max |want|: a device's kernels sum in other orders (and may round activations
// to F16), so values move relative to the tensor's scale; a wrong row, position or missing op moves them by O(1).
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want, float tolerance, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_FALSE(want.empty()) << what;
  float scale = 0;
  const float diff = max_abs_diff(got, want, &scale);
  EXPECT_LE(diff, tolerance * scale) << what << ": max |diff| " << diff << " of max |value| " << scale;
}

// A request of `method` about the pair's image for the device suites: 8 greedy tokens, at every token when the
// method ignores budgets, else 64; PruMerge(+) on the layer the tiny mmproj stores, CDPruner with the LLM's
// relevance (no CLIP text tower loaded).
inline pipeline::Request device_request(const TestPair& pair, const std::string& method) {
  pipeline::Request r;
  r.images.push_back(pair.image);
  r.prompt = kPairQuestion;
  r.method = method;
  const MethodInfo* info = nullptr;
  for (const MethodInfo& m : methods()) {
    if (m.name == method) info = &m;
  }
  r.budget = info != nullptr && info->budget_use == BudgetUse::Ignored ? Budget::all() : Budget::tokens(64);
  if (method == "prumerge" || method == "prumerge_plus") r.options = {"layer=-2"};
  if (method == "cdpruner") r.options = {"relevance=llm"};
  r.sampling.max_tokens = 8;
  return r;
}

// The tiny pair's mmproj on `device` and on the CPU: features, CLS row, projected rows and, at the first block
// and the feature block, received / CLS attention, the full attention maps, keys and the CLS query; then the
// projector alone on the features.
inline void expect_encoder_equals_cpu(const std::filesystem::path& pair_dir, const std::string& device, float tolerance) {
  auto cpu = vision::VisionModel::from_mmproj(pair_dir / "mmproj.gguf");
  auto dev = vision::VisionModel::from_mmproj(pair_dir / "mmproj.gguf", {.device = device});
  EXPECT_EQ(cpu.device_name(), "CPU");
  EXPECT_NE(dev.device_name(), "CPU") << "the device under test is the CPU: " << device;
  const vision::Image image = vision::preprocess(vision::load_image(pair_dir / "image.png"), cpu.preprocess_recipe());
  Needs needs;
  needs.projected = needs.features = needs.cls_features = true;
  for (int layer : {0, cpu.info().feature_layer}) {
    needs.add({.layer = layer, .received = true, .cls_attention = true, .attention = true, .keys = true, .cls_query = true});
  }
  const vision::EncoderResult want = cpu.encode(image, needs, {.threads = 1});
  const vision::EncoderResult got = dev.encode(image, needs, {.threads = 1});
  expect_close(got.features, want.features, tolerance, "features");
  expect_close(got.cls_features, want.cls_features, tolerance, "CLS features");
  expect_close(got.projected, want.projected, tolerance, "projected");
  ASSERT_EQ(got.taps.size(), want.taps.size());
  for (size_t t = 0; t < want.taps.size(); ++t) {
    const std::string layer = " (layer " + std::to_string(want.taps[t].layer) + ")";
    expect_close(got.taps[t].received, want.taps[t].received, tolerance, "received attention" + layer);
    expect_close(got.taps[t].cls_attention, want.taps[t].cls_attention, tolerance, "CLS attention" + layer);
    expect_close(got.taps[t].attention, want.taps[t].attention, tolerance, "attention maps" + layer);
    expect_close(got.taps[t].keys, want.taps[t].keys, tolerance, "keys" + layer);
    expect_close(got.taps[t].cls_query, want.taps[t].cls_query, tolerance, "CLS query" + layer);
  }
  const MatrixView features{want.features, static_cast<int64_t>(want.features.size()) / want.dim, want.dim};
  expect_close(dev.project(features, 1), cpu.project(features, 1), tolerance, "projector");
}

// CLIP's text tower (the pair's `clip` folder) on `device`: text_embeds of a question and image_embeds of
// patch-shaped rows equal the CPU's.
inline void expect_clip_text_equals_cpu(const std::filesystem::path& pair_dir, const std::string& device, float tolerance) {
  const auto cpu = text::ClipTextModel::load(pair_dir / "clip");
  const auto dev = text::ClipTextModel::load(pair_dir / "clip", device);
  const std::string question = "What is the dog looking at?";
  expect_close(dev.text_embeds(question).data, cpu.text_embeds(question).data, tolerance, "CLIP text_embeds");
  std::vector<float> rows(static_cast<size_t>(7 * cpu.vision_width()));
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = std::sin(0.37f * static_cast<float>(i));
  const MatrixView features{rows, 7, cpu.vision_width()};
  expect_close(dev.image_embeds(features).data, cpu.image_embeds(features).data, tolerance, "CLIP image_embeds");
}

// The timm classifier (real DeiT-Tiny from ../shared) on `device`: logits of a real image, and the pruned tail
// (classify_tokens) on the tokens after block 4.
inline void expect_deit_equals_cpu(const std::string& device, float tolerance) {
  const auto dir = shared_dir() / "models" / "deit-tiny";
  auto cpu = vision::VisionModel::from_safetensors_timm(dir);
  auto dev = vision::VisionModel::from_safetensors_timm(dir, {.device = device});
  std::filesystem::path image_file;
  for (const auto& e : std::filesystem::directory_iterator(shared_dir() / "data" / "imagenet-sample" / "dev")) {
    if (image_file.empty() || e.path() < image_file) image_file = e.path();
  }
  const vision::Image image = vision::preprocess(vision::load_image(image_file), cpu.preprocess_recipe());
  const auto want = cpu.encode(image, {}, {.threads = 1, .logits = true});
  const auto got = dev.encode(image, {}, {.threads = 1, .logits = true});
  expect_close(got.logits, want.logits, tolerance, "DeiT logits");
  EXPECT_EQ(vision::top_k_classes(got.logits, 1), vision::top_k_classes(want.logits, 1));
  Needs rows;
  rows.features = rows.cls_features = true;
  const auto half = cpu.encode(image, rows, {.threads = 1, .stop_after_layer = 3});
  const MatrixView tokens{half.features, static_cast<int64_t>(half.features.size()) / half.dim, half.dim};
  expect_close(dev.classify_tokens(half.cls_features, tokens, 4, 1), cpu.classify_tokens(half.cls_features, tokens, 4, 1), tolerance,
               "DeiT classify_tokens");
}

}  // namespace vtprune::test
