// Reads an image file's format and dimensions from its header without decoding any pixel, so that a request
// declaring gigapixels (a decompression bomb) is refused before it is queued.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace vtprune::server {

enum class ImageFormat { png, jpeg, bmp };
std::string_view to_string(ImageFormat format);

// By magic bytes; nullopt for anything the decoder does not read (GIF, WebP, ...).
std::optional<ImageFormat> sniff_image_format(std::span<const uint8_t> bytes);

struct ImageHeader {
  ImageFormat format = ImageFormat::png;
  int64_t width = 0;
  int64_t height = 0;
};

// Format and dimensions from the header (PNG IHDR, BMP info header, JPEG start-of-frame). nullopt when the
// format is unknown or the header is truncated or has no dimensions.
std::optional<ImageHeader> read_image_header(std::span<const uint8_t> bytes);

}  // namespace vtprune::server
