// PNG output (stb_image_write): test images, visualisations.
#include <cstdio>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO_OVERRIDE
#include <stb/stb_image_write.h>

#include "vtprune/vision.h"

namespace vtprune::vision {

void save_png(const std::filesystem::path& file, const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
    throw Error(file.string() + ": cannot write a " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                " image with " + std::to_string(image.pixels.size()) + " bytes of pixels");
  }
  if (!stbi_write_png(file.c_str(), image.width, image.height, 3, image.pixels.data(), image.width * 3)) {
    throw Error(file.string() + ": cannot write PNG");
  }
}

}  // namespace vtprune::vision
