// libFuzzer: image decoding (stb_image behind vision::decode_image, with its limits) and every
// preprocessing recipe on what decodes. Anything but a vtprune::Error is a bug.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "vtprune/vision.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vtprune::vision;
  ImageLimits limits;
  limits.max_pixels = 1 << 20;  // small enough that the fuzzer stays fast (ASan), large enough to matter
  limits.max_file_bytes = 1 << 22;
  RgbImage image;
  try {
    image = decode_image(std::span<const uint8_t>(data, size), "fuzz-input", limits);
  } catch (const vtprune::Error&) {
    return 0;
  }
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
    std::abort();  // a decoded image must be consistent
  }
  // Padding a 4096-px-long image to a square is legitimate but takes seconds under ASan: longer sides only
  // exercise the intermediate-size guard (tests/hardening covers that), not a full resize.
  if (std::max(image.width, image.height) > 4096) {
    try {
      Preprocess llava;
      llava.kind = Preprocess::Kind::LlavaPadSquare;
      if (int64_t{std::max(image.width, image.height)} * std::max(image.width, image.height) > (int64_t{1} << 26)) {
        (void)prepare_pixels(image, llava);
        std::abort();  // must have thrown
      }
    } catch (const vtprune::Error&) {
    }
    return 0;
  }
  for (const auto kind : {Preprocess::Kind::TimmCenterCrop, Preprocess::Kind::LlavaPadSquare, Preprocess::Kind::Stretch}) {
    Preprocess recipe;
    recipe.kind = kind;
    recipe.image_size = 8;  // tiny targets: the resize cost is the input's, not the recipe's
    recipe.resize_shorter = 9;
    try {
      const Image out = preprocess(image, recipe);
      if (out.width != 8 || out.height != 8 || out.data.size() != 3u * 8 * 8) std::abort();
    } catch (const vtprune::Error&) {
    }
  }
  return 0;
}
