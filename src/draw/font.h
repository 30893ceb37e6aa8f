// TrueType text for vtprune draw: DejaVu Sans (or $VTPRUNE_FONT) rasterised with stb_truetype into coverage
// masks that the canvas blends. Internal to src/draw.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

namespace vtprune::draw::detail {

// A string rasterised to anti-aliased coverage in [0, 1]. The pen starts at pixel column `origin_x` of the
// mask and the baseline is row `baseline_y`, so the text lands at (x - origin_x, y - baseline_y).
struct TextMask {
  int width = 0;
  int height = 0;
  int origin_x = 0;
  int baseline_y = 0;
  double advance = 0.0;         // pen advance of the whole string (its layout width)
  std::vector<float> coverage;  // [height x width]
};

// The font file vtprune draws with: $VTPRUNE_FONT when set, else Debian's DejaVu Sans. Throws Error naming
// the places looked at when none exists.
std::filesystem::path font_path();

// One loaded TrueType font. Immutable after construction, so a const FontFace is safe to share.
class FontFace {
 public:
  explicit FontFace(const std::filesystem::path& file);  // throws Error naming the file
  ~FontFace();
  FontFace(const FontFace&) = delete;
  FontFace& operator=(const FontFace&) = delete;

  // The font at font_path(), loaded once per process and never modified afterwards (shared read-only).
  static const FontFace& shared();

  double advance(std::string_view utf8, double size) const;
  TextMask rasterize(std::string_view utf8, double size) const;
  double ascent(double size) const;   // above the baseline, pixels (positive)
  double descent(double size) const;  // below the baseline, pixels (positive)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// UTF-8 to code points; malformed bytes become U+FFFD.
std::vector<char32_t> decode_utf8(std::string_view utf8);

}  // namespace vtprune::draw::detail
