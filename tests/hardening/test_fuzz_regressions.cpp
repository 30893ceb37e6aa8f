// Every input the fuzzers (scripts/fuzz.sh) found crashing, replayed through the harness's code path:
// tests/hardening/fuzz_regressions/<harness>/<file>. Each must now end in a vtprune::Error (or succeed),
// and the known ones in the error they were fixed with.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <vector>

#include "test_support.h"
#include "vtprune/vision.h"

namespace vtprune {
namespace {

namespace fs = std::filesystem;

fs::path regressions(const std::string& harness) {
  return test::source_dir() / "tests" / "hardening" / "fuzz_regressions" / harness;
}

std::vector<uint8_t> read(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// fuzz_image: decode (with the harness's limits), then every preprocessing recipe.
void replay_image(const std::vector<uint8_t>& bytes) {
  vision::ImageLimits limits;
  limits.max_pixels = 1 << 20;
  limits.max_file_bytes = 1 << 22;
  const vision::RgbImage image = vision::decode_image(bytes, "fuzz-input", limits);
  for (const auto kind : {vision::Preprocess::Kind::TimmCenterCrop, vision::Preprocess::Kind::LlavaPadSquare,
                          vision::Preprocess::Kind::Stretch}) {
    vision::Preprocess recipe;
    recipe.kind = kind;
    recipe.image_size = 8;
    recipe.resize_shorter = 9;
    (void)vision::preprocess(image, recipe);
  }
}

TEST(FuzzRegressions, ImageInputsEndInAnError) {
  const fs::path dir = regressions("fuzz_image");
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int replayed = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const auto bytes = read(entry.path());
    try {
      replay_image(bytes);
    } catch (const Error&) {
    }
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

// stb_image 2.27 wrote past its Huffman size table for a DHT segment declaring more than 256 codes
// (found by fuzz_image; UBSan: index 257 out of bounds for 'stbi_uc[257]'). decode_image now rejects it.
// Three variants: the table after the frame header (hit by stbi_load), before it (hit by stbi_info), and
// after 0xFF fill bytes ahead of SOI (which stb accepts as a JPEG).
TEST(FuzzRegressions, JpegHuffmanTableOver256CodesIsRejected) {
  for (const char* file : {"stb_dht_over_256_codes.jpg", "stb_dht_before_frame_header.jpg", "stb_dht_after_fill_bytes.jpg"}) {
    const auto bytes = read(regressions("fuzz_image") / file);
    ASSERT_FALSE(bytes.empty()) << file;
    try {
      replay_image(bytes);
      ADD_FAILURE() << file << ": expected an Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("Huffman"), std::string::npos) << file << ": " << e.what();
    }
  }
}

// A 7 x 459013 BMP (fuzz_image, timeout): timm's resize made it 32 x 2.1M and LLaVA's pad-to-square a
// 459013^2 canvas (2e11 pixels). prepare_pixels now refuses such intermediates with an Error.
TEST(FuzzRegressions, ExtremeAspectRatioIsRejectedBeforeResizing) {
  const auto bytes = read(regressions("fuzz_image") / "bmp_7x459013_extreme_aspect.bmp");
  const vision::RgbImage image = vision::decode_image(bytes, "tall.bmp");
  EXPECT_EQ(image.width, 7);
  vision::Preprocess llava;
  llava.kind = vision::Preprocess::Kind::LlavaPadSquare;
  llava.image_size = 336;
  try {
    (void)vision::prepare_pixels(image, llava);
    FAIL() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("aspect ratio"), std::string::npos) << e.what();
  }
  vision::Preprocess timm;  // shorter side 256: 256 x 16.8M
  EXPECT_THROW((void)vision::prepare_pixels(image, timm), Error);
  // 9 x 15108 (fuzz_image, timeout): a 136-kpixel file that LLaVA's padding turns into 228 Mpixels.
  const vision::RgbImage bomb = vision::decode_image(read(regressions("fuzz_image") / "bmp_9x15108_pad_bomb.bmp"), "bomb.bmp");
  EXPECT_THROW((void)vision::prepare_pixels(bomb, llava), Error);
  // Ordinary shapes are untouched by the guard.
  vision::RgbImage wide{4000, 1000, std::vector<uint8_t>(size_t{4000} * 1000 * 3, 128)};
  EXPECT_EQ(vision::prepare_pixels(wide, llava).width, 336);
  EXPECT_EQ(vision::prepare_pixels(wide, timm).width, 224);
}

// A safetensors header whose data_offsets held 2e88 (fuzz_safetensors, UBSan: float outside the range of
// uint64 inside nlohmann's conversion). Non-integer shapes and offsets are now a malformed-entry Error.
TEST(FuzzRegressions, SafetensorsInputsEndInAnError) {
  const fs::path dir = regressions("fuzz_safetensors");
  ASSERT_TRUE(fs::is_directory(dir)) << dir;
  int replayed = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const fs::path model = test::temp_dir("fuzz-regression");
    std::ofstream(model / "config.json") << R"({"model_args": {"num_heads": 2}, "vision_config": {"num_attention_heads": 2}})";
    fs::copy_file(entry.path(), model / "model.safetensors");
    EXPECT_THROW(vision::VisionModel::from_safetensors_timm(model), Error) << entry.path();
    EXPECT_THROW(vision::VisionModel::from_safetensors_clip(model), Error) << entry.path();
    ++replayed;
  }
  EXPECT_GT(replayed, 0);
}

}  // namespace
}  // namespace vtprune
