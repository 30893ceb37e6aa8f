// Random Qwen2.5-VL model pairs (`vtprune make-test-model --shape qwen2.5-vl | qwen2.5-vl-3b`): the mmproj has
// exactly the tensors, shapes, types and metadata of llama.cpp's converter; the 3B shape's headers match
// Qwen2.5-VL-3B-Instruct; libmtmd loads the tiny pair, tokenises a chat prompt around the image into
// text / image / text with llama.cpp's own grid and encodes it; llama-mtmd-cli (same pinned source) runs it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gguf.h"
#include "gguf_tables.h"
#include "test_support.h"
#include "vtprune/llm.h"
#include "vtprune/vision.h"

#ifdef VTPRUNE_HAVE_MTMD
#include "llama.h"
#include "mtmd.h"
#endif

namespace vtprune::vision {
namespace {

namespace fs = std::filesystem;
using test::expect_tables_equal;
using test::Gguf;
using test::read_header;
using test::run_command;
using test::TensorInfo;
using test::tensor_table;
using test::temp_dir;
using test::vtprune_binary;




// What conversion/qwenvl.py (Qwen2VLVisionModel) writes for a Qwen2.5-VL vision tower: the Conv3D split into
// two temporal halves, no position embedding / CLS / pre-LN, RMSNorm weights only, separate q/k/v with biases,
// SwiGLU, the merger's ln_q as post_ln and its MLP as mm.0 / mm.2. `matrix` types the 2-D weights by row width.
std::map<std::string, TensorInfo> expected_tensors(int64_t d, int64_t ff, int n_layer, int64_t out, ggml_type patch,
                                                   const std::function<ggml_type(int64_t)>& matrix) {
  const int64_t m = 4 * d;
  std::map<std::string, TensorInfo> t;
  t["v.patch_embd.weight"] = {{14, 14, 3, d}, patch};
  t["v.patch_embd.weight.1"] = {{14, 14, 3, d}, patch};
  for (int il = 0; il < n_layer; ++il) {
    const std::string p = "v.blk." + std::to_string(il) + ".";
    t[p + "ln1.weight"] = {{d}, GGML_TYPE_F32};
    t[p + "ln2.weight"] = {{d}, GGML_TYPE_F32};
    for (const char* proj : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
      t[p + proj + ".weight"] = {{d, d}, matrix(d)};
      t[p + proj + ".bias"] = {{d}, GGML_TYPE_F32};
    }
    t[p + "ffn_gate.weight"] = {{d, ff}, matrix(d)};
    t[p + "ffn_gate.bias"] = {{ff}, GGML_TYPE_F32};
    t[p + "ffn_up.weight"] = {{d, ff}, matrix(d)};
    t[p + "ffn_up.bias"] = {{ff}, GGML_TYPE_F32};
    t[p + "ffn_down.weight"] = {{ff, d}, matrix(ff)};
    t[p + "ffn_down.bias"] = {{d}, GGML_TYPE_F32};
  }
  t["v.post_ln.weight"] = {{d}, GGML_TYPE_F32};
  t["mm.0.weight"] = {{m, m}, matrix(m)};
  t["mm.0.bias"] = {{m}, GGML_TYPE_F32};
  t["mm.2.weight"] = {{m, out}, matrix(m)};
  t["mm.2.bias"] = {{out}, GGML_TYPE_F32};
  return t;
}


// Exactly the keys the converter writes (MmprojModel + Qwen2VLVisionModel + general.*), with their values.
void expect_mmproj_metadata(const Gguf& g, const Qwen25VlMmprojShape& s, uint32_t file_type) {
  std::set<std::string> keys;
  for (int64_t i = 0; i < gguf_get_n_kv(g.get()); ++i) keys.insert(gguf_get_key(g.get(), i));
  const std::set<std::string> expected = {
      "general.architecture", "general.type", "general.name", "general.file_type", "general.quantization_version",
      "clip.has_vision_encoder", "clip.projector_type", "clip.use_silu", "clip.vision.projection_dim",
      "clip.vision.image_size", "clip.vision.patch_size", "clip.vision.embedding_length",
      "clip.vision.feed_forward_length", "clip.vision.block_count", "clip.vision.attention.head_count",
      "clip.vision.image_mean", "clip.vision.image_std", "clip.vision.n_wa_pattern",
      "clip.vision.attention.layer_norm_epsilon"};
  EXPECT_EQ(keys, expected);
  const auto str = [&](const char* k) { return std::string(gguf_get_val_str(g.get(), gguf_find_key(g.get(), k))); };
  const auto u32 = [&](const char* k) {
    const int64_t id = gguf_find_key(g.get(), k);
    EXPECT_EQ(gguf_get_kv_type(g.get(), id), GGUF_TYPE_UINT32) << k;
    return gguf_get_val_u32(g.get(), id);
  };
  EXPECT_EQ(str("general.architecture"), "clip");
  EXPECT_EQ(str("general.type"), "mmproj");
  EXPECT_EQ(str("clip.projector_type"), "qwen2.5vl_merger");
  EXPECT_EQ(u32("general.file_type"), file_type);
  EXPECT_EQ(u32("general.quantization_version"), 2u);
  EXPECT_TRUE(gguf_get_val_bool(g.get(), gguf_find_key(g.get(), "clip.has_vision_encoder")));
  EXPECT_TRUE(gguf_get_val_bool(g.get(), gguf_find_key(g.get(), "clip.use_silu")));
  EXPECT_EQ(u32("clip.vision.projection_dim"), static_cast<uint32_t>(s.proj_out));
  EXPECT_EQ(u32("clip.vision.image_size"), 560u);
  EXPECT_EQ(u32("clip.vision.patch_size"), 14u);
  EXPECT_EQ(u32("clip.vision.embedding_length"), static_cast<uint32_t>(s.n_embd));
  EXPECT_EQ(u32("clip.vision.feed_forward_length"), static_cast<uint32_t>(s.n_ff));
  EXPECT_EQ(u32("clip.vision.block_count"), static_cast<uint32_t>(s.n_layer));
  EXPECT_EQ(u32("clip.vision.attention.head_count"), static_cast<uint32_t>(s.n_head));
  EXPECT_EQ(u32("clip.vision.n_wa_pattern"), static_cast<uint32_t>(s.n_wa_pattern));
  EXPECT_EQ(gguf_get_val_f32(g.get(), gguf_find_key(g.get(), "clip.vision.attention.layer_norm_epsilon")), 1e-6f);
  const auto f32x3 = [&](const char* k) {
    const int64_t id = gguf_find_key(g.get(), k);
    EXPECT_EQ(gguf_get_arr_type(g.get(), id), GGUF_TYPE_FLOAT32);
    EXPECT_EQ(gguf_get_arr_n(g.get(), id), 3u);
    const auto* p = static_cast<const float*>(gguf_get_arr_data(g.get(), id));
    return std::vector<float>(p, p + 3);
  };
  EXPECT_EQ(f32x3("clip.vision.image_mean"), (std::vector<float>{0.48145466f, 0.4578275f, 0.40821073f}));
  EXPECT_EQ(f32x3("clip.vision.image_std"), (std::vector<float>{0.26862954f, 0.26130258f, 0.27577711f}));
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The tiny pair as make-test-model --shape qwen2.5-vl --seed 42 writes it (from the library, so that these tests
// do not depend on the CLI), and a 252x196 picture: not square, wider and taller than one 112-px window.
class VisionQwen25vl : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = temp_dir("qwen25vl-pair");
    const auto llm_shape = llm::test_llm_shape("qwen2.5-vl");
    llm::write_test_llm((dir_ / "llm.gguf").string(), llm_shape, 42);
    Qwen25VlMmprojShape shape = qwen25vl_mmproj_shape("qwen2.5-vl");
    shape.proj_out = llm_shape.n_embd;
    write_test_mmproj_qwen25vl(dir_ / "mmproj.gguf", shape, 42);
    RgbImage image{252, 196, std::vector<uint8_t>(252 * 196 * 3)};
    for (int y = 0; y < image.height; ++y) {
      for (int x = 0; x < image.width; ++x) {
        uint8_t* p = &image.pixels[(static_cast<size_t>(y) * image.width + x) * 3];
        const bool disc = (x - 80) * (x - 80) + (y - 70) * (y - 70) < 30 * 30;
        p[0] = disc ? 220 : static_cast<uint8_t>(x);
        p[1] = disc ? 40 : static_cast<uint8_t>(y);
        p[2] = static_cast<uint8_t>((x * 7 + y * 3) % 256);
      }
    }
    save_png(dir_ / "image.png", image);
  }
  static inline fs::path dir_;
};

TEST_F(VisionQwen25vl, TinyMmprojIsTheConvertersLayout) {
  const auto shape = qwen25vl_mmproj_shape("qwen2.5-vl");
  EXPECT_EQ(shape.n_layer, 4);
  EXPECT_EQ(shape.n_wa_pattern, 2);  // blocks 1 and 3 global, 0 and 2 windowed
  const auto g = read_header((dir_ / "mmproj.gguf").string());
  ASSERT_TRUE(g);
  expect_tables_equal(tensor_table(g), expected_tensors(64, 128, 4, 64, GGML_TYPE_F16, [](int64_t) { return GGML_TYPE_F16; }));
  expect_mmproj_metadata(g, shape, 1);
}

// `vtprune make-test-model --shape qwen2.5-vl` writes exactly the library's files (same seed, same bytes) and its
// picture: not square, larger than one 112-px window on both sides.
TEST_F(VisionQwen25vl, MakeTestModelCliWritesThePair) {
  const fs::path dir = temp_dir("qwen25vl-cli");
  std::string out;
  ASSERT_EQ(run_command(vtprune_binary().string() + " make-test-model --shape qwen2.5-vl --seed 42 --out " + dir.string(),
                        &out), 0) << out;
  EXPECT_EQ(slurp(dir / "llm.gguf"), slurp(dir_ / "llm.gguf"));
  EXPECT_EQ(slurp(dir / "mmproj.gguf"), slurp(dir_ / "mmproj.gguf"));
  const RgbImage image = load_image(dir / "image.png");
  EXPECT_EQ(image.width, 252);
  EXPECT_EQ(image.height, 196);
}

// The converter's type rules: the patch embedding is F16 only in an F16 file (else F32); Q8_0 rows must split
// into 32-value blocks, so the 3420-wide ffn_down of the real tower falls back to F16.
TEST_F(VisionQwen25vl, WeightTypesFollowTheConverter) {
  const Qwen25VlMmprojShape s3b = qwen25vl_mmproj_shape("qwen2.5-vl-3b");
  struct Case {
    WeightType type;
    ggml_type matrix, patch;
    uint32_t file_type;
  };
  for (const Case c : {Case{WeightType::F32, GGML_TYPE_F32, GGML_TYPE_F32, 0}, Case{WeightType::F16, GGML_TYPE_F16, GGML_TYPE_F16, 1},
                       Case{WeightType::BF16, GGML_TYPE_BF16, GGML_TYPE_F32, 32}, Case{WeightType::Q8_0, GGML_TYPE_Q8_0, GGML_TYPE_F32, 7}}) {
    SCOPED_TRACE(ggml_type_name(c.matrix));
    const auto path = temp_dir("types") / "mmproj.gguf";
    write_test_mmproj_qwen25vl_header(path, s3b, c.type);
    const auto g = read_header(path.string());
    ASSERT_TRUE(g);
    const auto matrix = [&](int64_t row) {
      return c.matrix == GGML_TYPE_Q8_0 && row % 32 != 0 ? GGML_TYPE_F16 : c.matrix;
    };
    expect_tables_equal(tensor_table(g), expected_tensors(1280, 3420, 32, 2048, c.patch, matrix));
    expect_mmproj_metadata(g, s3b, c.file_type);
  }
  // A full Q8_0 file of the tiny shape loads into libmtmd below; here: the writer refuses impossible shapes.
  Qwen25VlMmprojShape bad = qwen25vl_mmproj_shape("qwen2.5-vl");
  bad.n_ff = bad.n_embd;  // libmtmd would take it for a legacy file with ffn up/down swapped
  EXPECT_THROW(write_test_mmproj_qwen25vl(temp_dir("bad") / "m.gguf", bad, 0), Error);
  bad = qwen25vl_mmproj_shape("qwen2.5-vl");
  bad.n_head = 3;
  EXPECT_THROW(write_test_mmproj_qwen25vl(temp_dir("bad") / "m.gguf", bad, 0), Error);
  EXPECT_THROW(qwen25vl_mmproj_shape("qwen2.5-vl-7b"), Error);
}

// `make-test-model --shape qwen2.5-vl-3b --header-only`: both files' layouts without their 7.5 GB of weights.
TEST_F(VisionQwen25vl, Header3bMatchesQwen25Vl3b) {
  const fs::path dir = temp_dir("qwen25vl-3b");
  std::string out;
  ASSERT_EQ(run_command(vtprune_binary().string() + " make-test-model --shape qwen2.5-vl-3b --header-only --out " +
                            dir.string(), &out), 0) << out;
  EXPECT_LT(fs::file_size(dir / "mmproj.gguf"), 1u << 20);
  EXPECT_LT(fs::file_size(dir / "llm.gguf"), 8u << 20);
  const auto g = read_header((dir / "mmproj.gguf").string());
  ASSERT_TRUE(g);
  EXPECT_EQ(gguf_get_n_tensors(g.get()), 519);  // 2 + 32 x 16 + 5
  const Qwen25VlMmprojShape s = qwen25vl_mmproj_shape("qwen2.5-vl-3b");
  EXPECT_EQ(s.n_embd, 1280);
  EXPECT_EQ(s.n_ff, 3420);
  EXPECT_EQ(s.n_head, 16);
  EXPECT_EQ(s.n_wa_pattern, 8);  // fullatt_block_indexes 7, 15, 23, 31
  EXPECT_EQ(s.proj_out, 2048);
  expect_tables_equal(tensor_table(g), expected_tensors(1280, 3420, 32, 2048, GGML_TYPE_F16, [](int64_t) { return GGML_TYPE_F16; }));
  expect_mmproj_metadata(g, s, 1);
  // ~669M parameters in the tower + merger, as Qwen2.5-VL's
  size_t bytes = 0;
  for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) bytes += gguf_get_tensor_size(g.get(), i);
  EXPECT_GT(bytes, 1'300'000'000u);
  EXPECT_LT(bytes, 1'400'000'000u);
  const auto llm = read_header(dir / "llm.gguf");
  ASSERT_TRUE(llm);
  EXPECT_EQ(gguf_get_n_tensors(llm.get()), 434);
  EXPECT_EQ(gguf_get_val_u32(llm.get(), gguf_find_key(llm.get(), "qwen2vl.embedding_length")), 2048u);
  const RgbImage image = load_image(dir / "image.png");
  EXPECT_EQ(image.width, 1024);
  EXPECT_EQ(image.height, 768);
  // LLaVA shapes have no header-only mode: a clear error, not a half-written pair
  EXPECT_EQ(run_command(vtprune_binary().string() + " make-test-model --shape tiny --header-only --out " +
                            (dir / "llava").string(), &out), 1);
  EXPECT_NE(out.find("--header-only"), std::string::npos) << out;
}

#ifdef VTPRUNE_HAVE_MTMD
struct ModelFree {
  void operator()(llama_model* m) const { llama_model_free(m); }
};
struct MtmdFree {
  void operator()(mtmd_context* c) const { mtmd_free(c); }
};
struct BitmapFree {
  void operator()(mtmd_bitmap* b) const { mtmd_bitmap_free(b); }
};
struct ChunksFree {
  void operator()(mtmd_input_chunks* c) const { mtmd_input_chunks_free(c); }
};

// libmtmd (built from the same pinned source) takes the pair as a Qwen2.5-VL model: M-RoPE, the image cut
// into text / image / text around <|vision_start|> <|vision_end|>, llama.cpp's dynamic-resolution grid
// (252x196 is already a multiple of 28: 9 x 7 merged tokens, several 4x4-token windows wide and tall).
TEST_F(VisionQwen25vl, LibmtmdLoadsTokenisesAndEncodesThePair) {
  llama_backend_init();
  llama_model_params mp = llama_model_default_params();
  std::unique_ptr<llama_model, ModelFree> model(llama_model_load_from_file((dir_ / "llm.gguf").c_str(), mp));
  ASSERT_TRUE(model);
  EXPECT_EQ(llama_model_rope_type(model.get()), LLAMA_ROPE_TYPE_MROPE);
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = false;
  params.print_timings = false;
  params.n_threads = 2;
  params.warmup = false;
  std::unique_ptr<mtmd_context, MtmdFree> ctx(mtmd_init_from_file((dir_ / "mmproj.gguf").c_str(), model.get(), params));
  ASSERT_TRUE(ctx);
  EXPECT_TRUE(mtmd_support_vision(ctx.get()));
  EXPECT_TRUE(mtmd_decode_use_mrope(ctx.get()));
  EXPECT_FALSE(mtmd_decode_use_non_causal(ctx.get(), nullptr));

  const RgbImage image = load_image(dir_ / "image.png");
  std::unique_ptr<mtmd_bitmap, BitmapFree> bitmap(mtmd_bitmap_init(image.width, image.height, image.pixels.data()));
  const std::string prompt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n" +
                             std::string(mtmd_default_marker()) + "What is in the image?<|im_end|>\n<|im_start|>assistant\n";
  mtmd_input_text text{prompt.c_str(), prompt.size(), /*add_special=*/true, /*parse_special=*/true};
  std::unique_ptr<mtmd_input_chunks, ChunksFree> chunks(mtmd_input_chunks_init());
  const mtmd_bitmap* bitmaps[] = {bitmap.get()};
  ASSERT_EQ(mtmd_tokenize(ctx.get(), chunks.get(), &text, bitmaps, 1), 0);
  ASSERT_EQ(mtmd_input_chunks_size(chunks.get()), 3u);
  const mtmd_input_chunk* before = mtmd_input_chunks_get(chunks.get(), 0);
  const mtmd_input_chunk* img = mtmd_input_chunks_get(chunks.get(), 1);
  const mtmd_input_chunk* after = mtmd_input_chunks_get(chunks.get(), 2);
  ASSERT_EQ(mtmd_input_chunk_get_type(before), MTMD_INPUT_CHUNK_TYPE_TEXT);
  ASSERT_EQ(mtmd_input_chunk_get_type(img), MTMD_INPUT_CHUNK_TYPE_IMAGE);
  ASSERT_EQ(mtmd_input_chunk_get_type(after), MTMD_INPUT_CHUNK_TYPE_TEXT);
  const int vision_start = 2048 - 293 + 9, vision_end = 2048 - 293 + 10;
  size_t n = 0;
  const llama_token* t0 = mtmd_input_chunk_get_tokens_text(before, &n);
  ASSERT_GT(n, 2u);
  EXPECT_EQ(t0[0], 2048 - 293 + 1);  // <|im_start|>, no BOS
  EXPECT_EQ(t0[n - 1], vision_start);
  const llama_token* t2 = mtmd_input_chunk_get_tokens_text(after, &n);
  ASSERT_GT(n, 1u);
  EXPECT_EQ(t2[0], vision_end);

  // mtmd-image.cpp dyn_size: sides rounded to multiples of patch 14 x merge 2 = 28 px, 8..4096 tokens.
  const int nx = static_cast<int>(std::lround(image.width / 28.0)), ny = static_cast<int>(std::lround(image.height / 28.0));
  EXPECT_EQ(nx, 9);
  EXPECT_EQ(ny, 7);
  EXPECT_EQ(mtmd_input_chunk_get_n_tokens(img), static_cast<size_t>(nx * ny));
  const mtmd_image_tokens* tokens = mtmd_input_chunk_get_tokens_image(img);
  EXPECT_EQ(mtmd_image_tokens_get_n_pos(tokens), std::max(nx, ny));  // M-RoPE: the image spans max(h, w) positions
  const mtmd_decoder_pos p = mtmd_image_tokens_get_decoder_pos(tokens, 100, 2 * nx + 5);  // row 2, column 5
  EXPECT_EQ(p.t, 100u);
  EXPECT_EQ(p.y, 102u);
  EXPECT_EQ(p.x, 105u);

  ASSERT_EQ(mtmd_encode_chunk(ctx.get(), img), 0);
  const float* embd = mtmd_get_output_embd(ctx.get());
  ASSERT_NE(embd, nullptr);
  double sum = 0.0, sum_sq = 0.0;
  for (int i = 0; i < nx * ny * 64; ++i) {
    ASSERT_TRUE(std::isfinite(embd[i])) << i;
    sum += embd[i];
    sum_sq += static_cast<double>(embd[i]) * embd[i];
  }
  const double mean = sum / (nx * ny * 64);
  EXPECT_GT(sum_sq / (nx * ny * 64) - mean * mean, 1e-4) << "embeddings do not vary";
  // Different merged tokens get different embeddings (the ViT sees different pixels and positions).
  double diff = 0.0;
  for (int c = 0; c < 64; ++c) diff += std::fabs(embd[c] - embd[(nx * ny - 1) * 64 + c]);
  EXPECT_GT(diff, 1e-3);

  // The other weight types load too (Q8_0: F32 patch embedding, Q8_0 matrices) and give close embeddings.
  const std::vector<float> f16(embd, embd + nx * ny * 64);
  for (const WeightType type : {WeightType::F32, WeightType::Q8_0}) {
    Qwen25VlMmprojShape shape = qwen25vl_mmproj_shape("qwen2.5-vl");
    const fs::path path = temp_dir("mmproj-type") / "mmproj.gguf";
    write_test_mmproj_qwen25vl(path, shape, 42, type);
    std::unique_ptr<mtmd_context, MtmdFree> other(mtmd_init_from_file(path.c_str(), model.get(), params));
    ASSERT_TRUE(other) << path;
    ASSERT_EQ(mtmd_encode_chunk(other.get(), img), 0);
    const float* e = mtmd_get_output_embd(other.get());
    double err = 0.0, ref = 0.0;
    for (size_t i = 0; i < f16.size(); ++i) {
      err = std::max(err, static_cast<double>(std::fabs(e[i] - f16[i])));
      ref = std::max(ref, static_cast<double>(std::fabs(f16[i])));
    }
    EXPECT_LT(err, 0.05 * ref) << "weight type " << static_cast<int>(type);
  }
  llama_backend_free();
}
#endif

#ifdef VTPRUNE_MTMD_CLI
struct CliRun {
  int rc = -1;
  std::string out, log;
};
// llama-mtmd-cli on the tiny pair: generated text on stdout, the log (-v, "W " / "E " prefixes) in `log`.
CliRun run_mtmd_cli(const fs::path& dir, const std::string& extra) {
  const fs::path log = dir / "mtmd-cli.log";
  const std::string cmd = "( " + std::string(VTPRUNE_MTMD_CLI) + " -m " + (dir / "llm.gguf").string() + " --mmproj " +
                          (dir / "mmproj.gguf").string() + " --image " + (dir / "image.png").string() +
                          " -p 'What is in the image?' -n 8 --temp 0 -t 1 --log-prefix -v " + extra + " 2> " +
                          log.string() + " )";
  CliRun r;
  r.rc = run_command(cmd, &r.out);
  r.log = slurp(log);
  return r;
}

// llama.cpp's own tool runs the pair end to end (same pinned source) and its log shows no sign of a layout
// mistake: the only warnings are the ones it prints for every Qwen2.5-VL file.
TEST_F(VisionQwen25vl, LlamaMtmdCliRunsThePair) {
  const CliRun r = run_mtmd_cli(dir_, "");
  ASSERT_EQ(r.rc, 0) << "stdout:\n" << r.out << "\nlog:\n" << r.log;
  std::printf("[ llama-mtmd-cli ] generated: %s\n", r.out.c_str());
  EXPECT_NE(r.out.find_first_not_of(" \t\r\n"), std::string::npos) << "no visible token generated";
  for (const char* expected : {
           "general.architecture str              = qwen2vl",
           "rope type             = 8",                      // LLAMA_ROPE_TYPE_MROPE
           "projector:          qwen2.5vl_merger",
           "ffn_op:             silu",
           "n_wa_pattern: 2",
           "image_tokens->nx = 9",                           // 252 x 196 px -> 9 x 7 merged tokens
           "image_tokens->ny = 7",
           "decoding image batch 1/1, n_tokens_batch = 63",
           "add_text: <|vision_start|>",
           "add_text: <|vision_end|>",
       }) {
    EXPECT_NE(r.log.find(expected), std::string::npos) << "log lacks \"" << expected << "\"\n" << r.log;
  }
  // Warnings / errors: only those every Qwen2.5-VL file (and every run of this experimental CLI) gets.
  const std::vector<std::string> known = {
      "Qwen-VL models require at minimum 1024 image tokens",
      "if you encounter problems with accuracy, try adding --image-min-tokens",
      "more info: https://github.com/ggml-org/llama.cpp/issues/16842",
      "This is an experimental CLI for testing multimodal capability",
      "For normal use cases, please use the standard llama-cli",
  };
  std::istringstream lines(r.log);
  std::string line;
  int warnings = 0;
  while (std::getline(lines, line)) {
    // "<timestamp> W message" (the timestamp is digits and dots)
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find_first_not_of("0123456789.") != space || line.size() < space + 3 ||
        (line[space + 1] != 'W' && line[space + 1] != 'E') || line[space + 2] != ' ') {
      continue;
    }
    ++warnings;
    bool ok = false;
    for (const auto& k : known) ok = ok || line.find(k) != std::string::npos;
    EXPECT_TRUE(ok) << "llama-mtmd-cli: " << line;
  }
  EXPECT_GE(warnings, 3) << "the Qwen minimum-token note was not seen: are warnings still prefixed \"W \"?";
}

// With --jinja llama.cpp renders the file's own chat template (Qwen2.5-VL-Instruct's): the default system
// prompt appears, the image goes where the marker is.
TEST_F(VisionQwen25vl, LlamaMtmdCliRendersTheFilesTemplate) {
  const CliRun r = run_mtmd_cli(dir_, "--jinja");
  ASSERT_EQ(r.rc, 0) << r.log;
  EXPECT_NE(r.log.find("formatted_chat.prompt: <|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                       "<|im_start|>user\n<__media__>What is in the image?<|im_end|>\n<|im_start|>assistant\n"),
            std::string::npos)
      << r.log;
}
#endif

}  // namespace
}  // namespace vtprune::vision
