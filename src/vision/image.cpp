// Image decoding (stb_image) and the preprocessing recipes of timm and LLaVA-1.5, with Pillow's bicubic
// resampling reproduced exactly (the reference numbers of every model were produced through Pillow).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include "vtprune/vision.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

namespace vtprune::vision {
namespace {

std::string dims(int w, int h) { return std::to_string(w) + "x" + std::to_string(h); }

// stbi frees with free(); the decoded buffer is copied into a vector at once, this only guards the copy.
struct StbiFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};

// A JPEG that ends before its end-of-image marker decodes "successfully" in stb with grey blocks; such a
// file is a transfer error, not an image. The marker must sit near the end (a little trailing padding
// is common, an EXIF thumbnail's own marker sits near the start).
// Index just after the SOI marker when `bytes` is a JPEG to stb, else 0. stb takes any number of 0xFF fill
// bytes before SOI (FF FF FF D8 is a JPEG to it), so every JPEG check starts here.
size_t jpeg_after_soi(std::span<const uint8_t> bytes) {
  size_t i = 0;
  while (i < bytes.size() && bytes[i] == 0xFF) ++i;
  return i == 0 || i >= bytes.size() || bytes[i] != 0xD8 ? 0 : i + 1;
}

bool jpeg_truncated(std::span<const uint8_t> bytes) {
  if (bytes.size() < 4) return true;
  const size_t tail = std::min<size_t>(bytes.size(), 4096);
  for (size_t i = bytes.size() - 1; i + tail >= bytes.size() && i >= 1; --i) {
    if (bytes[i - 1] == 0xFF && bytes[i] == 0xD9) return false;
  }
  return true;
}

// stb_image 2.27 (Debian's libstb) writes past its 257-entry Huffman size table when a DHT segment declares
// more than 256 codes (fixed upstream in 2.28). Every DHT table is checked before stb sees the file: counts
// summing to at most 256 and fitting in their segment. Walks the marker segments, skipping entropy-coded
// data after each SOS (DHT may also come between progressive scans).
bool jpeg_huffman_tables_valid(std::span<const uint8_t> bytes) {
  size_t i = jpeg_after_soi(bytes);
  if (i == 0) return true;  // not a JPEG: nothing to check
  while (i + 1 < bytes.size()) {
    if (bytes[i] != 0xFF) {  // entropy-coded data: advance to the next marker
      ++i;
      continue;
    }
    const uint8_t m = bytes[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {  // stuffed zero, TEM, RSTn: no length
      i += 2;
      continue;
    }
    if (m == 0xD9) return true;  // EOI
    if (i + 3 >= bytes.size()) return true;  // cut short: stb reports that itself
    const size_t length = (size_t{bytes[i + 2]} << 8) | bytes[i + 3];
    if (m == 0xC4) {
      // As stb reads it: tables until the declared length is used up, bytes past the end of the file as 0.
      const auto byte_at = [&](size_t k) -> size_t { return k < bytes.size() ? bytes[k] : 0; };
      for (size_t t = i + 4; t < i + 2 + length && t < bytes.size();) {
        size_t codes = 0;
        for (size_t k = 1; k <= 16; ++k) codes += byte_at(t + k);
        if (codes > 256) return false;
        t += 17 + codes;
      }
    }
    i += 2 + length;
  }
  return true;
}

// ---- Pillow's resampling (libImaging/Resample.c), 8 bits per channel.
constexpr int kPrecisionBits = 32 - 8 - 2;

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Coefficients {
  int ksize = 0;
  std::vector<int> bounds;  // [out x 2]: first input index, count
  std::vector<int> kernel;  // [out x ksize] fixed point
};

Coefficients precompute_coefficients(int in_size, int out_size) {
  constexpr double kSupport = 2.0;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = kSupport * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(static_cast<size_t>(out_size) * 2);
  c.kernel.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) k[x] /= ww;
      const double fixed = k[x] * (1 << kPrecisionBits);
      c.kernel[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int>(k[x] < 0 ? fixed - 0.5 : fixed + 0.5);
    }
    c.bounds[xx * 2] = xmin;
    c.bounds[xx * 2 + 1] = xmax;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
  if (v <= 0) return 0;
  return static_cast<uint8_t>(v >> kPrecisionBits);
}

RgbImage resample_horizontal(const RgbImage& in, int out_width) {
  const Coefficients c = precompute_coefficients(in.width, out_width);
  RgbImage out{out_width, in.height, std::vector<uint8_t>(static_cast<size_t>(out_width) * in.height * 3)};
  for (int y = 0; y < in.height; ++y) {
    const uint8_t* row = &in.pixels[static_cast<size_t>(y) * in.width * 3];
    uint8_t* dst = &out.pixels[static_cast<size_t>(y) * out_width * 3];
    for (int xx = 0; xx < out_width; ++xx) {
      const int xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1];
      const int* k = &c.kernel[static_cast<size_t>(xx) * c.ksize];
      for (int ch = 0; ch < 3; ++ch) {
        int64_t ss = int64_t{1} << (kPrecisionBits - 1);
        for (int x = 0; x < xmax; ++x) ss += int64_t{row[(x + xmin) * 3 + ch]} * k[x];
        dst[xx * 3 + ch] = clip8(ss);
      }
    }
  }
  return out;
}

RgbImage resample_vertical(const RgbImage& in, int out_height) {
  const Coefficients c = precompute_coefficients(in.height, out_height);
  const size_t stride = static_cast<size_t>(in.width) * 3;
  RgbImage out{in.width, out_height, std::vector<uint8_t>(stride * out_height)};
  for (int yy = 0; yy < out_height; ++yy) {
    const int ymin = c.bounds[yy * 2], ymax = c.bounds[yy * 2 + 1];
    const int* k = &c.kernel[static_cast<size_t>(yy) * c.ksize];
    uint8_t* dst = &out.pixels[yy * stride];
    for (size_t i = 0; i < stride; ++i) {
      int64_t ss = int64_t{1} << (kPrecisionBits - 1);
      for (int y = 0; y < ymax; ++y) ss += int64_t{in.pixels[(y + ymin) * stride + i]} * k[y];
      dst[i] = clip8(ss);
    }
  }
  return out;
}

void check_image(const RgbImage& image, const char* what) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    throw Error(std::string(what) + ": invalid image " + dims(image.width, image.height) + " with " +
                std::to_string(image.pixels.size()) + " bytes");
  }
}

}  // namespace

RgbImage decode_image(std::span<const uint8_t> bytes, const std::string& name, const ImageLimits& limits) {
  if (static_cast<int64_t>(bytes.size()) > limits.max_file_bytes) {
    throw InputError("image " + name + ": " + std::to_string(bytes.size()) + " bytes exceeds the limit of " +
                std::to_string(limits.max_file_bytes) + " bytes");
  }
  if (bytes.empty()) throw InputError("image " + name + ": file is empty");
  if (bytes.size() > static_cast<size_t>(INT32_MAX)) throw InputError("image " + name + ": file too large to decode");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  // Before stb reads anything: stbi_info already builds the Huffman tables it meets before the frame header.
  if (!jpeg_huffman_tables_valid(bytes)) {
    throw InputError("image " + name + ": corrupt JPEG (a Huffman table declares more than 256 codes)");
  }
  int w = 0, h = 0, channels = 0;
  // Dimensions first: a small file can declare gigapixels (decompression bomb).
  if (!stbi_info_from_memory(data, len, &w, &h, &channels)) {
    throw InputError("image " + name + ": not a decodable JPEG/PNG/BMP (" + stbi_failure_reason() + ")");
  }
  if (w <= 0 || h <= 0 || int64_t{w} * h > limits.max_pixels) {
    throw InputError("image " + name + ": " + dims(w, h) + " pixels exceeds the limit of " +
                std::to_string(limits.max_pixels) + " pixels");
  }
  if (jpeg_after_soi(bytes) != 0 && jpeg_truncated(bytes)) {
    throw InputError("image " + name + ": truncated JPEG (no end-of-image marker)");
  }
  std::unique_ptr<stbi_uc, StbiFree> decoded(stbi_load_from_memory(data, len, &w, &h, &channels, 3));
  if (!decoded) throw InputError("image " + name + ": decoding failed (" + stbi_failure_reason() + ")");
  RgbImage image{w, h, {}};
  image.pixels.assign(decoded.get(), decoded.get() + static_cast<size_t>(w) * h * 3);
  return image;
}

RgbImage load_image(const std::filesystem::path& file, const ImageLimits& limits) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (ec) throw Error("image " + file.string() + ": cannot read (" + ec.message() + ")");
  if (static_cast<int64_t>(size) > limits.max_file_bytes) {
    throw Error("image " + file.string() + ": " + std::to_string(size) + " bytes exceeds the limit of " +
                std::to_string(limits.max_file_bytes) + " bytes");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("image " + file.string() + ": cannot open");
  std::vector<uint8_t> bytes(size);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size))) {
    throw Error("image " + file.string() + ": read failed");
  }
  return decode_image(bytes, file.string(), limits);
}

RgbImage resize_bicubic(const RgbImage& image, int width, int height) {
  check_image(image, "resize");
  if (width <= 0 || height <= 0) throw Error("resize: target size " + dims(width, height) + " is empty");
  // Pillow: horizontal pass first (only when the width changes), then vertical.
  RgbImage out = image.width != width ? resample_horizontal(image, width) : image;
  if (image.height != height) out = resample_vertical(out, height);
  return out;
}

namespace {

// The width x height rectangle of `image` at (left, top), which must lie inside it (PIL's Image.crop).
RgbImage crop_rect(const RgbImage& image, int left, int top, int width, int height) {
  RgbImage out{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (int y = 0; y < height; ++y) {
    std::memcpy(&out.pixels[static_cast<size_t>(y) * width * 3],
                &image.pixels[(static_cast<size_t>(y + top) * image.width + left) * 3], static_cast<size_t>(width) * 3);
  }
  return out;
}

// `image` pasted on a width x height canvas of `background` at ((width - w) // 2, (height - h) // 2) (PIL's
// Image.new + paste, as LLaVA's expand2square and LLaVA-NeXT's resize_and_pad_image do it).
RgbImage pad_centered(const RgbImage& image, int width, int height, std::array<uint8_t, 3> background) {
  RgbImage out{width, height, std::vector<uint8_t>(static_cast<size_t>(width) * height * 3)};
  for (size_t i = 0; i < out.pixels.size(); i += 3) std::memcpy(&out.pixels[i], background.data(), 3);
  const int left = (width - image.width) / 2, top = (height - image.height) / 2;
  for (int y = 0; y < image.height; ++y) {
    std::memcpy(&out.pixels[(static_cast<size_t>(y + top) * width + left) * 3],
                &image.pixels[static_cast<size_t>(y) * image.width * 3], static_cast<size_t>(image.width) * 3);
  }
  return out;
}

}  // namespace

RgbImage center_crop(const RgbImage& image, int width, int height) {
  check_image(image, "center_crop");
  if (width > image.width || height > image.height || width <= 0 || height <= 0) {
    throw Error("center_crop: crop " + dims(width, height) + " does not fit in " + dims(image.width, image.height));
  }
  // Python round() is half to even; nearbyint in the default rounding mode is too.
  const int top = static_cast<int>(std::nearbyint((image.height - height) / 2.0));
  const int left = static_cast<int>(std::nearbyint((image.width - width) / 2.0));
  return crop_rect(image, left, top, width, height);
}

RgbImage expand_to_square(const RgbImage& image, std::array<uint8_t, 3> background) {
  check_image(image, "expand_to_square");
  if (image.width == image.height) return image;
  const int side = std::max(image.width, image.height);
  return pad_centered(image, side, side, background);
}

RgbImage prepare_pixels(const RgbImage& image, const Preprocess& recipe) {
  check_image(image, "preprocess");
  const int size = recipe.image_size;
  // Extreme aspect ratios blow up the intermediate image (found by fuzzing: a 7 x 459013 BMP resizes to
  // 32 x 2.1M for timm and pads to a 459013^2 square for LLaVA; a 9 x 15108 one to a 228-Mpixel square):
  // an Error, not a huge allocation. 2^26 pixels = an 8192 x 8192 padded square.
  constexpr double kMaxIntermediatePixels = double(int64_t{1} << 26);
  const auto check_intermediate = [&](double w, double h, const char* step) {
    if (w * h > kMaxIntermediatePixels) {
      throw Error(std::string("preprocess: ") + step + " of a " + dims(image.width, image.height) + " image would need " +
                  std::to_string(static_cast<int64_t>(w)) + "x" + std::to_string(static_cast<int64_t>(h)) +
                  " pixels (aspect ratio too extreme)");
    }
  };
  switch (recipe.kind) {
    case Preprocess::Kind::TimmCenterCrop: {
      // torchvision Resize(int): shorter side -> resize_shorter, longer side int(s * long / short).
      const int shorter = recipe.resize_shorter;
      const double long_side = static_cast<double>(shorter) * std::max(image.width, image.height) /
                               std::min(image.width, image.height);
      check_intermediate(shorter, long_side, "resizing the shorter side");
      int w = shorter, h = shorter;
      if (image.width <= image.height) {
        h = static_cast<int>(static_cast<double>(shorter) * image.height / image.width);
      } else {
        w = static_cast<int>(static_cast<double>(shorter) * image.width / image.height);
      }
      return center_crop(resize_bicubic(image, w, h), size, size);
    }
    case Preprocess::Kind::LlavaPadSquare: {
      const double side = std::max(image.width, image.height);
      check_intermediate(side, side, "padding to a square");
      // LLaVA: background = tuple(int(x * 255) for x in image_mean).
      std::array<uint8_t, 3> bg{};
      for (int c = 0; c < 3; ++c) bg[c] = static_cast<uint8_t>(std::clamp(static_cast<int>(recipe.mean[c] * 255), 0, 255));
      return resize_bicubic(expand_to_square(image, bg), size, size);
    }
    case Preprocess::Kind::Stretch:
      return resize_bicubic(image, size, size);
  }
  throw Error("preprocess: unknown recipe");
}

std::array<int, 2> select_best_resolution(int width, int height, std::span<const std::array<int, 2>> candidates) {
  if (width <= 0 || height <= 0) throw Error("select_best_resolution: empty image " + dims(width, height));
  if (candidates.empty()) throw Error("select_best_resolution: no candidate resolutions");
  std::array<int, 2> best{};
  int64_t max_effective = 0, min_wasted = std::numeric_limits<int64_t>::max();
  const int64_t area = int64_t{width} * height;
  for (const auto& [cw, ch] : candidates) {
    if (cw <= 0 || ch <= 0) throw Error("select_best_resolution: candidate " + dims(cw, ch) + " is empty");
    // Python: scale = min(w / ow, h / oh) in double; int() truncates
    const double scale = std::min(static_cast<double>(cw) / width, static_cast<double>(ch) / height);
    const auto dw = static_cast<int64_t>(width * scale), dh = static_cast<int64_t>(height * scale);
    const int64_t effective = std::min(dw * dh, area);
    const int64_t wasted = int64_t{cw} * ch - effective;
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = {cw, ch};
    }
  }
  return best;
}

AnyResTiles anyres_tiles(const RgbImage& image, std::span<const std::array<int, 2>> pinpoints, int tile) {
  check_image(image, "anyres_tiles");
  if (tile <= 0) throw Error("anyres_tiles: tile size " + std::to_string(tile));
  const auto [target_w, target_h] = select_best_resolution(image.width, image.height, pinpoints);
  if (target_w % tile != 0 || target_h % tile != 0) {
    throw Error("anyres_tiles: resolution " + dims(target_w, target_h) + " is not a multiple of the " +
                std::to_string(tile) + " px tile");
  }
  // resize_and_pad_image
  const double scale_w = static_cast<double>(target_w) / image.width, scale_h = static_cast<double>(target_h) / image.height;
  int new_w = target_w, new_h = target_h;
  if (scale_w < scale_h) {
    new_h = std::min(static_cast<int>(std::ceil(image.height * scale_w)), target_h);
  } else {
    new_w = std::min(static_cast<int>(std::ceil(image.width * scale_h)), target_w);
  }
  const RgbImage canvas =
      pad_centered(resize_bicubic(image, std::max(new_w, 1), std::max(new_h, 1)), target_w, target_h, {0, 0, 0});
  AnyResTiles out;
  out.image_width = image.width;
  out.image_height = image.height;
  out.columns = target_w / tile;
  out.rows = target_h / tile;
  out.tiles.push_back(resize_bicubic(image, tile, tile));  // image.resize((336, 336))
  for (int ty = 0; ty < out.rows; ++ty) {  // divide_to_patches: rows of crops, left to right
    for (int tx = 0; tx < out.columns; ++tx) out.tiles.push_back(crop_rect(canvas, tx * tile, ty * tile, tile, tile));
  }
  return out;
}

Image normalize(const RgbImage& image, const Preprocess& recipe) {
  check_image(image, "normalize");
  Image out{image.width, image.height, std::vector<float>(static_cast<size_t>(image.width) * image.height * 3)};
  const size_t plane = static_cast<size_t>(image.width) * image.height;
  for (int c = 0; c < 3; ++c) {
    const float mean = recipe.mean[c], std_dev = recipe.std[c];
    for (size_t i = 0; i < plane; ++i) {
      // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides.
      const float x = static_cast<float>(image.pixels[i * 3 + c]) / 255.0f;
      out.data[c * plane + i] = (x - mean) / std_dev;
    }
  }
  return out;
}

}  // namespace vtprune::vision
