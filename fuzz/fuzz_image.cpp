// libFuzzer: image decoding (stb_image behind vision::decode_image, with its limits) and every
// preprocessing recipe on what decodes. Anything but a vtprune::Error is a bug.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "vtprune/vision.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vtprune::vision;
  ImageLimits limits;
  limits.max_pixels = 4'000'000;  // small enough that the fuzzer stays fast, large enough to matter
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
  for (const auto kind : {Preprocess::Kind::TimmCenterCrop, Preprocess::Kind::LlavaPadSquare, Preprocess::Kind::Stretch}) {
    Preprocess recipe;
    recipe.kind = kind;
    recipe.image_size = 28;
    recipe.resize_shorter = 32;
    try {
      const Image out = preprocess(image, recipe);
      if (out.width != 28 || out.height != 28 || out.data.size() != 3u * 28 * 28) std::abort();
    } catch (const vtprune::Error&) {
    }
  }
  return 0;
}
