// The safetensors loader on tiny synthetic timm ViTs: a valid file loads and runs; every kind of broken
// file (header, offsets, dtype, shape, missing tensor, config) is one Error naming the file and tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "test_support.h"
#include "vtprune/vision.h"

namespace vtprune::vision {
namespace {

struct Tensor {
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<float> values;
};
using TensorMap = std::map<std::string, Tensor>;

// A 1-block timm ViT: width 8, 2 heads, patch 4, image 8 (2x2 grid), 10 classes.
TensorMap tiny_vit() {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  TensorMap m;
  const auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    Tensor t;
    t.shape = shape;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    t.values.resize(static_cast<size_t>(n));
    for (float& v : t.values) v = normal(rng);
    m[name] = t;
  };
  add("patch_embed.proj.weight", {8, 3, 4, 4});
  add("patch_embed.proj.bias", {8});
  add("cls_token", {1, 1, 8});
  add("pos_embed", {1, 5, 8});
  for (const char* n : {"norm1", "norm2"}) {
    add(std::string("blocks.0.") + n + ".weight", {8});
    add(std::string("blocks.0.") + n + ".bias", {8});
  }
  add("blocks.0.attn.qkv.weight", {24, 8});
  add("blocks.0.attn.qkv.bias", {24});
  add("blocks.0.attn.proj.weight", {8, 8});
  add("blocks.0.attn.proj.bias", {8});
  add("blocks.0.mlp.fc1.weight", {16, 8});
  add("blocks.0.mlp.fc1.bias", {16});
  add("blocks.0.mlp.fc2.weight", {8, 16});
  add("blocks.0.mlp.fc2.bias", {8});
  add("norm.weight", {8});
  add("norm.bias", {8});
  add("head.weight", {10, 8});
  add("head.bias", {10});
  return m;
}

// Writes `tensors` as safetensors; `edit_header` may corrupt the JSON before it is written.
void write(const std::filesystem::path& path, const TensorMap& tensors,
           const std::function<void(nlohmann::json&)>& edit_header = {}) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = t.values.size() * 4;
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (edit_header) edit_header(header);
  const std::string text = header.dump();
  const uint64_t len = text.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<long>(len));
  for (const auto& [name, t] : tensors) out.write(reinterpret_cast<const char*>(t.values.data()), static_cast<long>(t.values.size() * 4));
}

class VisionSafetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("vision_safetensors");
    std::ofstream(dir_ / "config.json") << R"({"model_args": {"num_heads": 2, "layer_norm_eps": 1e-6},
      "pretrained_cfg": {"crop_pct": 0.875, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}})";
  }
  // Loading must fail with an Error whose message contains every needle.
  void expect_load_error(const std::vector<std::string>& needles) {
    try {
      VisionModel::from_safetensors_timm(dir_);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  }
  std::filesystem::path dir_;
};

TEST_F(VisionSafetensors, TinyTimmVitLoadsAndRuns) {
  write(dir_ / "model.safetensors", tiny_vit());
  auto model = VisionModel::from_safetensors_timm(dir_);
  EXPECT_EQ(model.info().grid.h, 2);
  EXPECT_EQ(model.info().heads, 2);
  EXPECT_EQ(model.num_classes(), 10);
  EXPECT_EQ(model.preprocess_recipe().image_size, 8);
  EXPECT_EQ(model.preprocess_recipe().resize_shorter, 9);  // floor(8 / 0.875)
  EXPECT_FLOAT_EQ(model.preprocess_recipe().mean[1], 0.5f);
  Image image;
  image.width = image.height = 8;
  image.data.assign(3 * 8 * 8, 0.5f);
  const auto result = model.encode(image, Needs{}, {1, true});
  EXPECT_EQ(result.logits.size(), 10u);
  EXPECT_EQ(result.features.size(), 4u * 8);
  for (float v : result.logits) EXPECT_TRUE(std::isfinite(v));
}

TEST_F(VisionSafetensors, WrongShapeNamesTensorAndShapes) {
  auto m = tiny_vit();
  m["blocks.0.attn.proj.weight"].shape = {4, 16};
  write(dir_ / "model.safetensors", m);
  expect_load_error({"model.safetensors", "blocks.0.attn.proj.weight", "[4, 16]", "[8, 8]"});
}

TEST_F(VisionSafetensors, MissingTensorIsNamed) {
  auto m = tiny_vit();
  m.erase("blocks.0.mlp.fc2.bias");
  write(dir_ / "model.safetensors", m);
  expect_load_error({"missing tensor blocks.0.mlp.fc2.bias"});
}

TEST_F(VisionSafetensors, UnsupportedDtypeIsNamed) {
  auto m = tiny_vit();
  write(dir_ / "model.safetensors", m, [](nlohmann::json& h) { h["norm.weight"]["dtype"] = "I32"; });
  expect_load_error({"norm.weight", "I32"});
}

TEST_F(VisionSafetensors, OffsetsThatDoNotMatchTheShape) {
  write(dir_ / "model.safetensors", tiny_vit(), [](nlohmann::json& h) { h["head.bias"]["data_offsets"][1] = 0; });
  expect_load_error({"head.bias", "data_offsets"});
}

TEST_F(VisionSafetensors, TruncatedDataAndBadHeaders) {
  write(dir_ / "model.safetensors", tiny_vit());
  const auto size = std::filesystem::file_size(dir_ / "model.safetensors");
  std::filesystem::resize_file(dir_ / "model.safetensors", size - 16);
  expect_load_error({"model.safetensors", "truncated"});
  {
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary);
    const uint64_t len = 1000;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << "{}";
  }
  expect_load_error({"header length"});
  {
    std::ofstream out(dir_ / "model.safetensors", std::ios::binary);
    const std::string text = "{not json";
    const uint64_t len = text.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << text;
  }
  expect_load_error({"not valid JSON"});
}

TEST_F(VisionSafetensors, ConfigMistakesAreNamed) {
  write(dir_ / "model.safetensors", tiny_vit());
  std::ofstream(dir_ / "config.json") << R"({"model_args": {"num_heads": 3}})";
  expect_load_error({"not divisible by 3 heads"});
  std::ofstream(dir_ / "config.json") << R"({"pretrained_cfg": {"interpolation": "bilinear"}, "model_args": {"num_heads": 2}})";
  expect_load_error({"config.json", "bilinear"});
  auto m = tiny_vit();
  m["dist_token"] = m["cls_token"];
  write(dir_ / "model.safetensors", m);
  std::ofstream(dir_ / "config.json") << R"({"model_args": {"num_heads": 2}})";
  expect_load_error({"dist_token"});
}

}  // namespace
}  // namespace vtprune::vision
