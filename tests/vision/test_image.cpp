// Image decoding, limits, and preprocessing. The bicubic resize is checked byte for byte against Pillow
// 9.4 (tests/vision/data/pil_bicubic_*.png were written by Image.resize(size, Image.BICUBIC) from
// resize_src.png; see tests/vision/data/README.md).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "test_support.h"
#include "vtprune/vision.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

namespace vtprune::vision {
namespace {

std::filesystem::path data_dir() { return test::source_dir() / "tests" / "vision" / "data"; }

RgbImage gradient(int w, int h) {
  RgbImage img{w, h, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3)};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>((x * 7 + y * 13) % 256);
    }
  }
  return img;
}

std::vector<uint8_t> encode_jpeg(const RgbImage& img, int quality = 90) {
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(
      [](void* ctx, void* data, int size) {
        auto* v = static_cast<std::vector<uint8_t>*>(ctx);
        v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &out, img.width, img.height, 3, img.pixels.data(), quality);
  return out;
}

std::vector<uint8_t> encode_png(const RgbImage& img) {
  std::vector<uint8_t> out;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) {
        auto* v = static_cast<std::vector<uint8_t>*>(ctx);
        v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      },
      &out, img.width, img.height, 3, img.pixels.data(), img.width * 3);
  return out;
}

void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(VisionImage, ResizeMatchesPillowBicubicExactly) {
  const RgbImage src = load_image(data_dir() / "resize_src.png");
  ASSERT_EQ(src.width, 61);
  ASSERT_EQ(src.height, 45);
  for (const char* name : {"down", "up", "mixed", "vertical"}) {
    const RgbImage expected = load_image(data_dir() / (std::string("pil_bicubic_") + name + ".png"));
    const RgbImage got = resize_bicubic(src, expected.width, expected.height);
    ASSERT_EQ(got.pixels.size(), expected.pixels.size()) << name;
    int mismatches = 0;
    for (size_t i = 0; i < got.pixels.size(); ++i) mismatches += got.pixels[i] != expected.pixels[i];
    EXPECT_EQ(mismatches, 0) << name << ": " << mismatches << " of " << got.pixels.size() << " bytes differ from Pillow";
  }
}

TEST(VisionImage, RecipesMatchPillowPipelines) {
  const RgbImage src = load_image(data_dir() / "resize_src.png");
  Preprocess llava;
  llava.kind = Preprocess::Kind::LlavaPadSquare;
  llava.image_size = 56;
  llava.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  EXPECT_EQ(prepare_pixels(src, llava).pixels, load_image(data_dir() / "pil_llava_pad_56.png").pixels);
  Preprocess timm;
  timm.image_size = 56;
  timm.resize_shorter = 64;
  EXPECT_EQ(prepare_pixels(src, timm).pixels, load_image(data_dir() / "pil_timm_64_crop_56.png").pixels);
}

TEST(VisionImage, ResizeToSameSizeIsIdentity) {
  const RgbImage img = gradient(33, 21);
  EXPECT_EQ(resize_bicubic(img, 33, 21).pixels, img.pixels);
}

TEST(VisionImage, CenterCropRoundsHalfToEven) {
  const RgbImage img = gradient(11, 8);
  // (11 - 4) / 2 = 3.5 -> 4 (half to even), (8 - 3) / 2 = 2.5 -> 2.
  const RgbImage crop = center_crop(img, 4, 3);
  EXPECT_EQ(crop.at(0, 0, 0), img.at(4, 2, 0));
  EXPECT_EQ(crop.at(0, 0, 1), img.at(4, 2, 1));
  EXPECT_EQ(crop.at(3, 2, 2), img.at(7, 4, 2));
  EXPECT_THROW(center_crop(img, 12, 3), Error);
}

TEST(VisionImage, ExpandToSquarePadsWithBackgroundCentred) {
  const RgbImage img = gradient(5, 2);
  const RgbImage sq = expand_to_square(img, {122, 116, 104});
  ASSERT_EQ(sq.width, 5);
  ASSERT_EQ(sq.height, 5);
  // (5 - 2) // 2 = 1 row of padding on top.
  EXPECT_EQ(sq.at(0, 0, 0), 122);
  EXPECT_EQ(sq.at(4, 4, 2), 104);
  EXPECT_EQ(sq.at(2, 1, 0), img.at(2, 0, 0));
  EXPECT_EQ(sq.at(2, 2, 1), img.at(2, 1, 1));
}

TEST(VisionImage, TimmRecipeResizesShorterSideThenCrops) {
  Preprocess recipe;  // DeiT defaults: 256 -> 224
  const RgbImage img = gradient(400, 300);
  const RgbImage pixels = prepare_pixels(img, recipe);
  EXPECT_EQ(pixels.width, 224);
  EXPECT_EQ(pixels.height, 224);
  const Image input = normalize(pixels, recipe);
  ASSERT_EQ(input.data.size(), 3u * 224 * 224);
  // Channel-planar: the first value is pixel (0,0) red, normalised.
  EXPECT_FLOAT_EQ(input.data[0], (pixels.at(0, 0, 0) / 255.0f - 0.485f) / 0.229f);
  EXPECT_FLOAT_EQ(input.data[224 * 224], (pixels.at(0, 0, 1) / 255.0f - 0.456f) / 0.224f);
}

TEST(VisionImage, LlavaRecipePadsToSquareThenResizes) {
  Preprocess recipe;
  recipe.kind = Preprocess::Kind::LlavaPadSquare;
  recipe.image_size = 56;
  recipe.mean = {0.48145466f, 0.4578275f, 0.40821073f};
  const RgbImage img = gradient(40, 20);
  const RgbImage pixels = prepare_pixels(img, recipe);
  EXPECT_EQ(pixels.width, 56);
  EXPECT_EQ(pixels.height, 56);
  // The top rows are padding: the mean colour (122, 116, 104) survives the resize of a flat area.
  EXPECT_EQ(pixels.at(28, 0, 0), 122);
  EXPECT_EQ(pixels.at(28, 0, 1), 116);
  EXPECT_EQ(pixels.at(28, 0, 2), 104);
}

TEST(VisionImage, DecodesJpegAndPng) {
  const RgbImage img = gradient(32, 24);
  const RgbImage png = decode_image(encode_png(img), "gradient.png");
  EXPECT_EQ(png.pixels, img.pixels);
  const RgbImage jpg = decode_image(encode_jpeg(img, 95), "gradient.jpg");
  ASSERT_EQ(jpg.width, 32);
  ASSERT_EQ(jpg.height, 24);
  double err = 0;
  for (size_t i = 0; i < img.pixels.size(); ++i) err += std::abs(int(jpg.pixels[i]) - int(img.pixels[i]));
  EXPECT_LT(err / img.pixels.size(), 6.0);
}

TEST(VisionImage, TruncatedOrBrokenImagesNameTheFile) {
  const auto jpeg = encode_jpeg(gradient(64, 64));
  const std::vector<uint8_t> half(jpeg.begin(), jpeg.begin() + static_cast<long>(jpeg.size() / 2));
  expect_error_containing([&] { decode_image(half, "cut.jpg"); }, "cut.jpg");
  const auto png = encode_png(gradient(64, 64));
  const std::vector<uint8_t> png_half(png.begin(), png.begin() + static_cast<long>(png.size() / 2));
  expect_error_containing([&] { decode_image(png_half, "cut.png"); }, "cut.png");
  const std::vector<uint8_t> junk = {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'};
  expect_error_containing([&] { decode_image(junk, "notes.txt"); }, "notes.txt");
  expect_error_containing([&] { decode_image({}, "empty.png"); }, "empty");
  expect_error_containing([&] { load_image("/nonexistent/dir/x.jpg"); }, "/nonexistent/dir/x.jpg");
  // Bad bytes are the caller's fault: InputError (a server's 4xx).
  EXPECT_THROW(decode_image(half, "cut.jpg"), InputError);
  EXPECT_THROW(decode_image(junk, "notes.txt"), InputError);
}

// stb accepts 0xFF fill bytes before SOI; the truncation check must see such a file as a JPEG too
// (otherwise stb decodes the missing half as grey and the image is silently wrong).
TEST(VisionImage, FillBytesBeforeSoiDoNotHideTruncation) {
  const auto jpeg = encode_jpeg(gradient(64, 64));
  std::vector<uint8_t> filled = {0xFF, 0xFF, 0xFF};
  filled.insert(filled.end(), jpeg.begin(), jpeg.end());
  EXPECT_EQ(decode_image(filled, "filled.jpg").pixels, decode_image(jpeg, "plain.jpg").pixels);
  const std::vector<uint8_t> half(filled.begin(), filled.begin() + static_cast<long>(filled.size() / 2));
  expect_error_containing([&] { decode_image(half, "filled-cut.jpg"); }, "truncated JPEG");
}

TEST(VisionImage, DecompressionBombIsRejectedBeforeDecoding) {
  // A PNG header declaring 18000 x 18000 pixels (324 Mpx, under stb's own 1 GiB cap), and no image data.
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  const uint32_t side = 18000;
  for (int rep = 0; rep < 2; ++rep) {
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<uint8_t>(side >> shift));
  }
  png.insert(png.end(), {8, 2, 0, 0, 0, 0, 0, 0, 0});  // depth 8, RGB, CRC (unchecked)
  expect_error_containing([&] { decode_image(png, "bomb.png"); }, "exceeds the limit");
}

TEST(VisionImage, FileSizeLimit) {
  const auto png = encode_png(gradient(16, 16));
  ImageLimits limits;
  limits.max_file_bytes = 100;
  expect_error_containing([&] { decode_image(png, "big.png", limits); }, "big.png");
  const auto dir = test::temp_dir("vision_image");
  const auto file = dir / "big.png";
  std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(png.data()), static_cast<long>(png.size()));
  expect_error_containing([&] { load_image(file, limits); }, "exceeds the limit");
  EXPECT_EQ(load_image(file).width, 16);
}

// LLaVA-NeXT's select_best_resolution over llava-v1.6's pinpoints, cases worked by hand from llava/mm_utils.py.
TEST(VisionImage, AnyResPicksTheResolutionThatKeepsTheMostPixels) {
  const auto pins = llava_next_pinpoints();  // 336x672, 672x336, 672x672, 1008x336, 336x1008
  using R = std::array<int, 2>;
  EXPECT_EQ(select_best_resolution(640, 320, pins), (R{672, 336}));    // fits exactly at 1.05x
  EXPECT_EQ(select_best_resolution(1024, 768, pins), (R{672, 672}));   // 672x504 effective beats 448x336
  EXPECT_EQ(select_best_resolution(320, 640, pins), (R{336, 672}));
  EXPECT_EQ(select_best_resolution(1000, 300, pins), (R{1008, 336}));  // 1008x302 keeps all 300000 pixels
  // a small image keeps all its pixels everywhere: the least wasted canvas, the first candidate on a tie
  EXPECT_EQ(select_best_resolution(100, 100, pins), (R{336, 672}));
  EXPECT_THROW(select_best_resolution(0, 10, pins), Error);
  EXPECT_THROW(select_best_resolution(10, 10, {}), Error);
}

// The overview is the whole image stretched to one tile; the crops cut the image resized to fit the best
// resolution (aspect kept, the limiting side filled) and centred on black.
TEST(VisionImage, AnyResTilesAreTheOverviewThenTheCropsOfThePaddedResize) {
  const auto pins = llava_next_pinpoints();
  const RgbImage wide = gradient(640, 320);  // 672x336 at 1.05x: no padding
  const AnyResTiles t = anyres_tiles(wide, pins, 336);
  ASSERT_EQ(t.tiles.size(), 3u);
  EXPECT_EQ(t.columns, 2);
  EXPECT_EQ(t.rows, 1);
  EXPECT_EQ(t.tiles[0].pixels, resize_bicubic(wide, 336, 336).pixels);
  const RgbImage resized = resize_bicubic(wide, 672, 336);
  for (int y : {0, 100, 335}) {
    for (int x : {0, 200, 335}) {
      for (int c = 0; c < 3; ++c) {
        EXPECT_EQ(t.tiles[1].pixels[(static_cast<size_t>(y) * 336 + x) * 3 + c], resized.pixels[(static_cast<size_t>(y) * 672 + x) * 3 + c]);
        EXPECT_EQ(t.tiles[2].pixels[(static_cast<size_t>(y) * 336 + x) * 3 + c],
                  resized.pixels[(static_cast<size_t>(y) * 672 + 336 + x) * 3 + c]);
      }
    }
  }
  // 640x300 -> 672x336: width limits (1.05x), height min(ceil(315), 336) = 315, pasted at (336 - 315) // 2 = 10
  const RgbImage low = gradient(640, 300);
  const AnyResTiles p = anyres_tiles(low, pins, 336);
  ASSERT_EQ(p.tiles.size(), 3u);
  const RgbImage fitted = resize_bicubic(low, 672, 315);
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(p.tiles[1].pixels[(9 * 336 + 50) * 3 + c], 0) << "padding above";
    EXPECT_EQ(p.tiles[2].pixels[(325 * 336 + 50) * 3 + c], 0) << "padding below";
    EXPECT_EQ(p.tiles[1].pixels[(10 * 336 + 50) * 3 + c], fitted.pixels[50 * 3 + c]);
    EXPECT_EQ(p.tiles[2].pixels[(324 * 336 + 50) * 3 + c], fitted.pixels[(314 * 672 + 336 + 50) * 3 + c]);
  }
  // 1024x768 -> 672x672: 2 x 2 crops, row by row
  const AnyResTiles square = anyres_tiles(gradient(1024, 768), pins, 336);
  EXPECT_EQ(square.tiles.size(), 5u);
  EXPECT_EQ(square.columns, 2);
  EXPECT_EQ(square.rows, 2);
  const std::vector<std::array<int, 2>> odd{{500, 336}};
  expect_error_containing([&] { anyres_tiles(wide, odd, 336); }, "not a multiple");
}

}  // namespace
}  // namespace vtprune::vision
