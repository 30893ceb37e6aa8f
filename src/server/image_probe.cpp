#include "image_probe.h"

#include <algorithm>
#include <cstdlib>

namespace vtprune::server {
namespace {

uint32_t be16(std::span<const uint8_t> b, size_t at) { return (uint32_t{b[at]} << 8) | b[at + 1]; }
uint32_t be32(std::span<const uint8_t> b, size_t at) { return (be16(b, at) << 16) | be16(b, at + 2); }
uint32_t le16(std::span<const uint8_t> b, size_t at) { return uint32_t{b[at]} | (uint32_t{b[at + 1]} << 8); }
uint32_t le32(std::span<const uint8_t> b, size_t at) { return le16(b, at) | (le16(b, at + 2) << 16); }

constexpr uint8_t kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};

std::optional<ImageHeader> png_header(std::span<const uint8_t> b) {
  // signature (8), IHDR length (4), "IHDR" (4), width (4, BE), height (4, BE)
  if (b.size() < 24 || b[12] != 'I' || b[13] != 'H' || b[14] != 'D' || b[15] != 'R') return std::nullopt;
  return ImageHeader{ImageFormat::png, be32(b, 16), be32(b, 20)};
}

std::optional<ImageHeader> bmp_header(std::span<const uint8_t> b) {
  if (b.size() < 26) return std::nullopt;
  const uint32_t info_size = le32(b, 14);
  if (info_size == 12) {  // BITMAPCOREHEADER: 16-bit unsigned dimensions
    return ImageHeader{ImageFormat::bmp, le16(b, 18), le16(b, 20)};
  }
  // BITMAPINFOHEADER and later: signed 32-bit, negative height = top-down rows
  const auto width = static_cast<int32_t>(le32(b, 18));
  const auto height = static_cast<int32_t>(le32(b, 22));
  return ImageHeader{ImageFormat::bmp, std::llabs(int64_t{width}), std::llabs(int64_t{height})};
}

std::optional<ImageHeader> jpeg_header(std::span<const uint8_t> b) {
  size_t at = 2;  // after SOI
  while (at + 1 < b.size()) {
    if (b[at] != 0xFF) return std::nullopt;  // segments are back to back; anything else is corrupt
    while (at < b.size() && b[at] == 0xFF) ++at;  // fill bytes
    if (at >= b.size()) return std::nullopt;
    const uint8_t marker = b[at++];
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // standalone markers
    if (marker == 0xD9 || marker == 0xDA) return std::nullopt;            // end / scan before any frame
    if (at + 2 > b.size()) return std::nullopt;
    const uint32_t length = be16(b, at);
    if (length < 2) return std::nullopt;
    const bool start_of_frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
    if (start_of_frame) {
      // length (2), precision (1), height (2), width (2)
      if (at + 7 > b.size()) return std::nullopt;
      return ImageHeader{ImageFormat::jpeg, be16(b, at + 5), be16(b, at + 3)};
    }
    at += length;
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(ImageFormat format) {
  switch (format) {
    case ImageFormat::png: return "png";
    case ImageFormat::jpeg: return "jpeg";
    case ImageFormat::bmp: return "bmp";
  }
  return "unknown";
}

std::optional<ImageFormat> sniff_image_format(std::span<const uint8_t> b) {
  if (b.size() >= 8 && std::equal(std::begin(kPngSignature), std::end(kPngSignature), b.begin())) return ImageFormat::png;
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return ImageFormat::jpeg;
  if (b.size() >= 2 && b[0] == 'B' && b[1] == 'M') return ImageFormat::bmp;
  return std::nullopt;
}

std::optional<ImageHeader> read_image_header(std::span<const uint8_t> bytes) {
  const auto format = sniff_image_format(bytes);
  if (!format) return std::nullopt;
  switch (*format) {
    case ImageFormat::png: return png_header(bytes);
    case ImageFormat::jpeg: return jpeg_header(bytes);
    case ImageFormat::bmp: return bmp_header(bytes);
  }
  return std::nullopt;
}

}  // namespace vtprune::server
