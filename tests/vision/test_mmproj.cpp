// llama.cpp mmproj GGUF: the random-file writer, the loader (validation, legacy fc1/fc2 naming), the
// CLIP graph with taps, the projector on any number of tokens, and the mtmd_compat mode.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "reduce/common.h"
#include "test_support.h"
#include "vtprune/vision.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "ggml.h"
#include "gguf.h"
#pragma GCC diagnostic pop
#include <nlohmann/json.hpp>

#ifdef VTPRUNE_HAVE_MTMD
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "mtmd.h"
#pragma GCC diagnostic pop
#endif

namespace vtprune::vision {
namespace {

MmprojShape tiny_shape() {
  MmprojShape s;
  s.n_layer = 2;
  s.n_embd = 64;
  s.n_ff = 128;
  s.n_head = 4;
  s.image_size = 112;
  s.patch_size = 14;
  s.proj_out = 48;
  return s;
}

Image test_image(int size, uint32_t seed) {
  Image img;
  img.width = img.height = size;
  img.data.resize(static_cast<size_t>(3) * size * size);
  for (size_t i = 0; i < img.data.size(); ++i) {
    seed = seed * 1664525u + 1013904223u;
    img.data[i] = static_cast<float>(seed >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
  }
  return img;
}

double relative_error(std::span<const float> a, std::span<const float> b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(double(a[i]) - double(b[i])));
    den = std::max(den, std::abs(double(b[i])));
  }
  return num / std::max(den, 1e-30);
}

void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class VisionMmproj : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::temp_dir("vision_mmproj");
    write_test_mmproj(dir_ / "tiny-f16.gguf", tiny_shape(), 42, WeightType::F16);
    write_test_mmproj(dir_ / "tiny-f32.gguf", tiny_shape(), 42, WeightType::F32);
  }
  static std::filesystem::path dir_;
};
std::filesystem::path VisionMmproj::dir_;

TEST_F(VisionMmproj, LoadsLlavaLayoutAndConventions) {
  auto model = VisionModel::from_mmproj(dir_ / "tiny-f16.gguf");
  const EncoderInfo info = model.info();
  EXPECT_EQ(info.grid.h, 8);
  EXPECT_EQ(info.grid.w, 8);
  EXPECT_TRUE(info.has_cls);
  EXPECT_EQ(info.heads, 4);
  EXPECT_EQ(info.num_layers, 3);     // the legacy converter dropped the last of 3 layers
  EXPECT_EQ(info.feature_layer, 1);  // -2 of the original depth = the last stored block
  EXPECT_EQ(model.stored_layers(), 2);
  EXPECT_EQ(model.dim(), 64);
  EXPECT_EQ(model.projector_dim(), 48);
  EXPECT_EQ(model.architecture(), Architecture::Clip);
  const Preprocess& recipe = model.preprocess_recipe();
  EXPECT_EQ(recipe.kind, Preprocess::Kind::LlavaPadSquare);
  EXPECT_EQ(recipe.image_size, 112);
  EXPECT_FLOAT_EQ(recipe.mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(recipe.std[2], 0.27577711f);
}

TEST_F(VisionMmproj, EncodesWithTapsAndRejectsUnstoredLayers) {
  auto model = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf");
  const Image image = test_image(112, 1);
  Needs needs;
  for (int layer : {0, 1}) {
    TapRequest r;
    r.layer = layer;
    r.received = r.cls_attention = r.attention = r.keys = r.cls_query = true;
    needs.add(r);
  }
  needs.cls_features = true;
  needs.projected = true;
  const auto result = model.encode(image, needs, {2, false});
  const EncoderOutput out = result.view();
  out.validate();
  EXPECT_EQ(out.features.rows, 64);
  EXPECT_EQ(out.features.cols, 64);
  EXPECT_EQ(out.projected.rows, 64);
  EXPECT_EQ(out.projected.cols, 48);
  ASSERT_EQ(out.taps.size(), 2u);
  for (const auto& tap : out.taps) {
    std::vector<float> received, cls_attention;
    reduce::attention_statistics(tap.attention, 4, 65, &received, &cls_attention);
    for (int k = 0; k < 65; ++k) {
      EXPECT_NEAR(tap.received[k], received[k], 1e-5);
      EXPECT_NEAR(tap.cls_attention[k], cls_attention[k], 1e-5);
    }
    // The CLS query row is row 0 of the q projection; keys are [T x D].
    EXPECT_EQ(tap.keys.rows, 65);
    EXPECT_EQ(tap.cls_query.size(), 64u);
  }
  // A tap on the layer the file does not store is one clear error.
  Needs last;
  TapRequest r;
  r.layer = 2;
  r.received = true;
  last.add(r);
  expect_error_containing([&] { model.encode(image, last); }, "not stored");
  // Features do not depend on whether taps were computed (softmax path vs flash attention).
  const auto plain = model.encode(image, Needs{}, {2, false});
  EXPECT_LT(relative_error(plain.features, result.features), 1e-4);
}

TEST_F(VisionMmproj, ProjectorRunsOnAnySubsetOfTokens) {
  auto model = VisionModel::from_mmproj(dir_ / "tiny-f16.gguf");
  Needs needs;
  needs.projected = true;
  const auto result = model.encode(test_image(112, 2), needs, {2, false});
  const MatrixView all{result.features, 64, 64};
  const auto projected_all = model.project(all, 2);
  ASSERT_EQ(projected_all.size(), result.projected.size());
  EXPECT_LT(relative_error(projected_all, result.projected), 1e-5);
  // Rows are independent: projecting 3 kept tokens gives the same 3 rows.
  const std::vector<int32_t> kept = {5, 17, 63};
  std::vector<float> subset;
  reduce::gather_rows(all, kept, subset);
  const auto projected = model.project(MatrixView{subset, 3, 64}, 1);
  ASSERT_EQ(projected.size(), 3u * 48);
  for (size_t i = 0; i < kept.size(); ++i) {
    const std::span<const float> row(projected.data() + i * 48, 48);
    const std::span<const float> ref(projected_all.data() + kept[i] * 48, 48);
    EXPECT_LT(relative_error(row, ref), 1e-5) << "kept row " << kept[i];
  }
  EXPECT_THROW(model.project(MatrixView{subset, 1, 192}), Error);
}

TEST_F(VisionMmproj, F16AndF32FilesAgree) {
  auto f16 = VisionModel::from_mmproj(dir_ / "tiny-f16.gguf");
  auto f32 = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf");
  const Image image = test_image(112, 3);
  const auto a = f16.encode(image, Needs{}, {1, false});
  const auto b = f32.encode(image, Needs{}, {1, false});
  // Same random draws, F16 rounding of the weights only.
  EXPECT_LT(relative_error(a.features, b.features), 2e-2);
}

// Q8_0 and BF16 weight matrices (what users make with llama.cpp's quantiser): they load, encode and project,
// and agree with the F32 file of the same draws to their precision.
TEST_F(VisionMmproj, Q8AndBf16FilesLoadAndAgree) {
  MmprojShape shape = tiny_shape();
  shape.proj_out = 64;  // Q8_0 rows are blocks of 32
  const auto dir = test::temp_dir("mmproj_types");
  write_test_mmproj(dir / "f32.gguf", shape, 7, WeightType::F32);
  write_test_mmproj(dir / "bf16.gguf", shape, 7, WeightType::BF16);
  write_test_mmproj(dir / "q8_0.gguf", shape, 7, WeightType::Q8_0);
  Needs projected;
  projected.projected = true;
  const Image image = test_image(112, 8);
  auto reference_model = VisionModel::from_mmproj(dir / "f32.gguf");
  const auto reference = reference_model.encode(image, projected, {1, false});
  for (const char* name : {"bf16.gguf", "q8_0.gguf"}) {
    auto model = VisionModel::from_mmproj(dir / name);
    const auto out = model.encode(image, projected, {1, false});
    ASSERT_EQ(out.features.size(), reference.features.size()) << name;
    const double err = relative_error(out.features, reference.features);
    EXPECT_GT(err, 0.0) << name;
    EXPECT_LT(err, 3e-2) << name;
    EXPECT_LT(relative_error(out.projected, reference.projected), 5e-2) << name;
    // llama.cpp's graph too (its conv_2d on a BF16 kernel would abort without a cast)
    auto compat = VisionModel::from_mmproj(dir / name, {.mtmd_compat = true});
    EXPECT_EQ(compat.encode(image, projected, {1, false}).features.size(), reference.features.size()) << name;
  }
  shape.proj_out = 48;
  EXPECT_THROW(write_test_mmproj(dir / "bad.gguf", shape, 7, WeightType::Q8_0), Error);
  EXPECT_EQ(parse_mmproj_weight_type("q8_0"), WeightType::Q8_0);
  EXPECT_THROW(parse_mmproj_weight_type("q4_k"), Error);
}

// A BF16 patch kernel (what convert_hf_to_gguf --outtype bf16 can write): ggml's conv_2d cannot take it, so
// mtmd_compat casts it to F16 (exact for these values); both modes encode it, same as the F16 kernel.
TEST_F(VisionMmproj, Bf16PatchKernelEncodesInBothModes) {
  const auto dir = test::temp_dir("mmproj_bf16_patch");
  const auto f16_file = dir / "f16.gguf", bf16_file = dir / "bf16-patch.gguf";
  write_test_mmproj(f16_file, tiny_shape(), 9, WeightType::F16);
  {
    ggml_context* data_raw = nullptr;
    gguf_init_params params{/*no_alloc=*/false, &data_raw};
    std::unique_ptr<gguf_context, decltype(&gguf_free)> in(gguf_init_from_file(f16_file.c_str(), params), gguf_free);
    std::unique_ptr<ggml_context, decltype(&ggml_free)> data(data_raw, ggml_free);
    ASSERT_TRUE(in);
    std::unique_ptr<gguf_context, decltype(&gguf_free)> out(gguf_init_empty(), gguf_free);
    gguf_set_kv(out.get(), in.get());
    ggml_init_params scratch_params{size_t{16} << 20, nullptr, false};
    std::unique_ptr<ggml_context, decltype(&ggml_free)> scratch(ggml_init(scratch_params), ggml_free);
    for (int64_t i = 0; i < gguf_get_n_tensors(in.get()); ++i) {
      const ggml_tensor* t = ggml_get_tensor(data.get(), gguf_get_tensor_name(in.get(), i));
      if (std::string(t->name) != "v.patch_embd.weight") {
        gguf_add_tensor(out.get(), t);
        continue;
      }
      ASSERT_EQ(t->type, GGML_TYPE_F16);
      ggml_tensor* bf16 = ggml_new_tensor(scratch.get(), GGML_TYPE_BF16, ggml_n_dims(t), t->ne);
      ggml_set_name(bf16, t->name);
      std::vector<float> values(static_cast<size_t>(ggml_nelements(t)));
      ggml_fp16_to_fp32_row(static_cast<const ggml_fp16_t*>(t->data), values.data(), ggml_nelements(t));
      ggml_fp32_to_bf16_row(values.data(), static_cast<ggml_bf16_t*>(bf16->data), ggml_nelements(t));
      gguf_add_tensor(out.get(), bf16);
    }
    ASSERT_TRUE(gguf_write_to_file(out.get(), bf16_file.c_str(), false));
  }
  const Image image = test_image(112, 10);
  for (const bool compat : {false, true}) {
    auto reference = VisionModel::from_mmproj(f16_file, {.mtmd_compat = compat});
    auto model = VisionModel::from_mmproj(bf16_file, {.mtmd_compat = compat});
    const auto a = model.encode(image, Needs{}, {1, false});
    const auto b = reference.encode(image, Needs{}, {1, false});
    ASSERT_EQ(a.features.size(), b.features.size());
    EXPECT_LT(relative_error(a.features, b.features), 2e-2) << (compat ? "mtmd_compat" : "default");
  }
}

TEST_F(VisionMmproj, MtmdCompatFollowsLlamaCppGraph) {
  MmprojOptions compat;
  compat.mtmd_compat = true;
  auto model = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf", compat);
  auto faithful = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf");
  const Image image = test_image(112, 4);
  const auto a = model.encode(image, Needs{}, {1, false});
  const auto b = faithful.encode(image, Needs{}, {1, false});
  ASSERT_EQ(a.features.size(), b.features.size());
  EXPECT_GT(relative_error(a.features, b.features), 1e-2);  // different layers, order and positions
  Needs taps;
  TapRequest r;
  r.layer = 0;
  r.received = true;
  taps.add(r);
  EXPECT_THROW(model.encode(image, taps), Error);
}

// share(): a second handle on the same weights; two threads encode at once (taps included) and each gets
// exactly what the lone model gets; the weights outlive the handle they came from.
TEST_F(VisionMmproj, SharedHandlesEncodeConcurrently) {
  auto original = std::make_unique<VisionModel>(VisionModel::from_mmproj(dir_ / "tiny-f32.gguf"));
  VisionModel shared = original->share();
  EXPECT_EQ(shared.dim(), original->dim());
  Needs taps;
  TapRequest r;
  r.layer = 0;
  r.received = true;
  taps.add(r);
  const Image image_a = test_image(112, 6), image_b = test_image(112, 7);
  const auto alone_a = original->encode(image_a, taps, {1, false});
  const auto alone_b = original->encode(image_b, Needs{}, {1, false});
  for (int round = 0; round < 3; ++round) {
    EncoderResult a, b;
    std::thread other([&] { b = shared.encode(image_b, Needs{}, {1, false}); });
    a = original->encode(image_a, taps, {1, false});
    other.join();
    EXPECT_EQ(a.features, alone_a.features);
    ASSERT_EQ(a.taps.size(), 1u);
    EXPECT_EQ(a.taps[0].received, alone_a.taps[0].received);
    EXPECT_EQ(b.features, alone_b.features);
  }
  original.reset();
  EXPECT_EQ(shared.encode(image_b, Needs{}, {1, false}).features, alone_b.features);
}

// f16_attention: the untapped blocks' flash attention on F16 K/V, as llama.cpp. Close to the F32 path but
// not identical (it is a real change of precision); tapped blocks keep the exact softmax path.
TEST_F(VisionMmproj, F16AttentionIsCloseButNotIdentical) {
  MmprojOptions f16;
  f16.f16_attention = true;
  auto fast = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf", f16);
  auto exact = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf");
  const Image image = test_image(112, 5);
  const auto a = fast.encode(image, Needs{}, {1, false});
  const auto b = exact.encode(image, Needs{}, {1, false});
  ASSERT_EQ(a.features.size(), b.features.size());
  const double err = relative_error(a.features, b.features);
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 1e-2);
  std::printf("[ metric ] f16_attention vs F32 K/V features, relative error %.3g\n", err);
}

TEST_F(VisionMmproj, BrokenFilesAreClearErrors) {
  const auto not_gguf = dir_ / "not.gguf";
  std::ofstream(not_gguf) << "definitely not a gguf file";
  expect_error_containing([&] { VisionModel::from_mmproj(not_gguf); }, not_gguf.string());
  // Truncated: the header survives, the tensor data does not.
  const auto full = dir_ / "tiny-f32.gguf";
  const auto cut = dir_ / "cut.gguf";
  {
    std::ifstream in(full, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(cut, std::ios::binary).write(bytes.data(), static_cast<long>(bytes.size() / 2));
  }
  EXPECT_THROW(VisionModel::from_mmproj(cut), Error);
  expect_error_containing([&] { VisionModel::from_safetensors_timm(full); }, full.string());
}

// Writes a safetensors file: tensors as (name, torch shape, F32 values).
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::tuple<std::string, std::vector<int64_t>, std::vector<float>>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, shape, values] : tensors) {
    header[name] = {{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + values.size() * 4}}};
    offset += values.size() * 4;
  }
  const std::string text = header.dump();
  const uint64_t len = text.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&len), 8);
  out.write(text.data(), static_cast<long>(len));
  for (const auto& [name, shape, values] : tensors) {
    out.write(reinterpret_cast<const char*>(values.data()), static_cast<long>(values.size() * 4));
  }
}

// The same random weights in Hugging Face form: GGUF ggml shapes [in, out] are torch [out, in] with the same
// bytes; the legacy ffn_down / ffn_up names go back to fc1 / fc2. The projector goes to its own file with
// original-LLaVA names (model.mm_projector.0/2).
void convert_mmproj_to_hf(const std::filesystem::path& gguf_path, const std::filesystem::path& tower,
                          const std::filesystem::path& projector) {
  ggml_context* data_ctx = nullptr;
  gguf_init_params params{};
  params.no_alloc = false;
  params.ctx = &data_ctx;
  gguf_context* gguf = gguf_init_from_file(gguf_path.c_str(), params);
  ASSERT_NE(gguf, nullptr);
  const auto get = [&](const std::string& name) {
    const ggml_tensor* t = ggml_get_tensor(data_ctx, name.c_str());
    EXPECT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, GGML_TYPE_F32) << name;
    std::vector<int64_t> shape;
    for (int d = ggml_n_dims(t) - 1; d >= 0; --d) shape.push_back(t->ne[d]);
    const float* f = static_cast<const float*>(t->data);
    return std::make_pair(shape, std::vector<float>(f, f + ggml_nelements(t)));
  };
  std::vector<std::tuple<std::string, std::vector<int64_t>, std::vector<float>>> hf, proj;
  const auto put = [&](auto& list, const std::string& to, const std::string& from) {
    auto [shape, values] = get(from);
    list.emplace_back(to, shape, values);
  };
  const std::string vm = "vision_tower.vision_model.";
  put(hf, vm + "embeddings.class_embedding", "v.class_embd");
  put(hf, vm + "embeddings.patch_embedding.weight", "v.patch_embd.weight");
  put(hf, vm + "embeddings.position_embedding.weight", "v.position_embd.weight");
  put(hf, vm + "pre_layrnorm.weight", "v.pre_ln.weight");
  put(hf, vm + "pre_layrnorm.bias", "v.pre_ln.bias");
  const int layers = static_cast<int>(gguf_get_val_u32(gguf, gguf_find_key(gguf, "clip.vision.block_count")));
  for (int il = 0; il < layers; ++il) {
    const std::string g = "v.blk." + std::to_string(il) + ".", h = vm + "encoder.layers." + std::to_string(il) + ".";
    for (const auto& [to, from] : std::vector<std::pair<std::string, std::string>>{
             {"self_attn.q_proj", "attn_q"}, {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
             {"self_attn.out_proj", "attn_out"}, {"layer_norm1", "ln1"}, {"layer_norm2", "ln2"},
             {"mlp.fc1", "ffn_down"}, {"mlp.fc2", "ffn_up"}}) {
      put(hf, h + to + ".weight", g + from + ".weight");
      put(hf, h + to + ".bias", g + from + ".bias");
    }
  }
  put(proj, "model.mm_projector.0.weight", "mm.0.weight");
  put(proj, "model.mm_projector.0.bias", "mm.0.bias");
  put(proj, "model.mm_projector.2.weight", "mm.2.weight");
  put(proj, "model.mm_projector.2.bias", "mm.2.bias");
  write_safetensors(tower, hf);
  write_safetensors(projector, proj);
  gguf_free(gguf);
  ggml_free(data_ctx);
}

TEST_F(VisionMmproj, HuggingFaceSafetensorsTowerEqualsMmproj) {
  const auto tower = dir_ / "hf" / "model.safetensors";
  const auto projector = dir_ / "hf" / "mm_projector.safetensors";
  std::filesystem::create_directories(tower.parent_path());
  convert_mmproj_to_hf(dir_ / "tiny-f32.gguf", tower, projector);
  ClipOptions options;
  options.projector = projector;
  options.feature_layer = -1;  // the file keeps 2 layers; the mmproj's feature layer is its last block
  auto hf = VisionModel::from_safetensors_clip(tower.parent_path(), options);
  auto gguf = VisionModel::from_mmproj(dir_ / "tiny-f32.gguf");
  EXPECT_EQ(hf.info().num_layers, 2);
  EXPECT_EQ(hf.info().feature_layer, 1);
  EXPECT_EQ(hf.info().heads, 1);  // no config.json: width / 64
  EXPECT_EQ(hf.projector_dim(), 48);
  EXPECT_EQ(hf.preprocess_recipe().kind, Preprocess::Kind::LlavaPadSquare);
  // Heads matter for attention: give the real count through config.json.
  std::ofstream(tower.parent_path() / "config.json") << R"({"vision_config": {"num_attention_heads": 4, "layer_norm_eps": 1e-5, "hidden_act": "quick_gelu"}})";
  hf = VisionModel::from_safetensors_clip(tower.parent_path(), options);
  EXPECT_EQ(hf.info().heads, 4);
  Needs needs;
  needs.projected = true;
  const Image image = test_image(112, 5);
  const auto a = hf.encode(image, needs, {1, false});
  const auto b = gguf.encode(image, needs, {1, false});
  EXPECT_LT(relative_error(a.features, b.features), 1e-6);
  EXPECT_LT(relative_error(a.projected, b.projected), 1e-6);
  // Without the projector file there is no projector; a missing file is a clear error.
  auto tower_only = VisionModel::from_safetensors_clip(tower);
  EXPECT_EQ(tower_only.projector_dim(), 0);
  EXPECT_EQ(tower_only.info().feature_layer, 0);  // -2 of 2 layers
  ClipOptions missing;
  missing.projector = dir_ / "hf" / "nope.safetensors";
  expect_error_containing([&] { VisionModel::from_safetensors_clip(tower, missing); }, "nope.safetensors");
}

#ifdef VTPRUNE_HAVE_MTMD
struct MtmdContextFree {
  void operator()(mtmd_context* c) const { mtmd_free(c); }
};
struct MtmdBitmapFree {
  void operator()(mtmd_bitmap* b) const { mtmd_bitmap_free(b); }
};
struct MtmdChunksFree {
  void operator()(mtmd_input_chunks* c) const { mtmd_input_chunks_free(c); }
};

// llama.cpp's own LLaVA path (libmtmd, same pinned tree) on the same file and pixels: mtmd_compat must
// reproduce its embeddings; the default (Hugging Face-faithful) mode must not.
TEST_F(VisionMmproj, MtmdCompatEqualsLibmtmdEmbeddings) {
  for (const char* file : {"tiny-f32.gguf", "tiny-f16.gguf"}) {
    const auto path = dir_ / file;
    // An image already at the model's size: mtmd's fit-and-pad resize is then the identity.
    RgbImage pixels{112, 112, std::vector<uint8_t>(112 * 112 * 3)};
    uint32_t seed = 99;
    for (auto& p : pixels.pixels) {
      seed = seed * 1664525u + 1013904223u;
      p = static_cast<uint8_t>(seed >> 24);
    }
    mtmd_context_params params = mtmd_context_params_default();
    params.use_gpu = false;
    params.print_timings = false;
    params.n_threads = 2;
    params.warmup = false;
    params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;  // llama.cpp's default: flash attention on CPU
    std::unique_ptr<mtmd_context, MtmdContextFree> ctx(mtmd_init_from_file(path.c_str(), nullptr, params));
    ASSERT_TRUE(ctx) << path;
    std::unique_ptr<mtmd_bitmap, MtmdBitmapFree> bitmap(mtmd_bitmap_init(112, 112, pixels.pixels.data()));
    std::unique_ptr<mtmd_input_chunks, MtmdChunksFree> chunks(mtmd_input_chunks_init());
    mtmd_input_part part{nullptr, bitmap.get()};
    const mtmd_input_part* parts[] = {&part};
    ASSERT_EQ(mtmd_tokenize_from_parts(ctx.get(), chunks.get(), parts, 1, false), 0);
    ASSERT_EQ(mtmd_input_chunks_size(chunks.get()), 1u);
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks.get(), 0);
    ASSERT_EQ(mtmd_input_chunk_get_n_tokens(chunk), 64u);
    ASSERT_EQ(mtmd_encode_chunk(ctx.get(), chunk), 0);
    const float* embd = mtmd_get_output_embd(ctx.get());
    const std::vector<float> upstream(embd, embd + 64 * 48);

    MmprojOptions compat;
    compat.mtmd_compat = true;
    auto model = VisionModel::from_mmproj(path, compat);
    const Image image = preprocess(pixels, model.preprocess_recipe());
    Needs needs;
    needs.projected = true;
    const auto ours = model.encode(image, needs, {2, false});
    ASSERT_EQ(ours.projected.size(), upstream.size());
    const double err = relative_error(ours.projected, upstream);
    std::printf("[ metric ] %s: mtmd_compat vs libmtmd embeddings, max relative error %.3g\n", file, err);
    EXPECT_LT(err, 1e-3) << file;

    auto faithful = VisionModel::from_mmproj(path);
    const auto hf = faithful.encode(image, needs, {2, false});
    EXPECT_GT(relative_error(hf.projected, upstream), 1e-2) << file;
  }
}
#endif

}  // namespace
}  // namespace vtprune::vision
