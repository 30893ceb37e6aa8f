// stb_truetype rasterisation of DejaVu Sans: glyphs rendered with sub-pixel horizontal placement and
// kerning into one coverage mask per string.
#include "font.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

#include "vtprune/reduce.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_TRUETYPE_IMPLEMENTATION
#define STBTT_STATIC
#include <stb/stb_truetype.h>
#pragma GCC diagnostic pop

namespace vtprune::draw::detail {
namespace {

constexpr std::array<const char*, 3> kDefaultFonts = {
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  // Debian / Ubuntu fonts-dejavu-core
    "/usr/share/fonts/TTF/DejaVuSans.ttf",              // Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",           // Fedora
};

}  // namespace

std::filesystem::path font_path() {
  if (const char* env = std::getenv("VTPRUNE_FONT"); env != nullptr && *env != '\0') {
    if (!std::filesystem::is_regular_file(env)) {
      throw Error(std::string("font: VTPRUNE_FONT=") + env + " is not a readable file");
    }
    return env;
  }
  for (const char* candidate : kDefaultFonts) {
    if (std::filesystem::is_regular_file(candidate)) return candidate;
  }
  throw Error(std::string("font: DejaVu Sans not found (looked at ") + kDefaultFonts[0] +
              " and the Arch/Fedora locations); install Debian's fonts-dejavu-core or set VTPRUNE_FONT to a .ttf");
}

std::vector<char32_t> decode_utf8(std::string_view utf8) {
  std::vector<char32_t> out;
  out.reserve(utf8.size());
  constexpr char32_t kReplacement = 0xFFFD;
  for (size_t i = 0; i < utf8.size();) {
    const auto lead = static_cast<uint8_t>(utf8[i]);
    int extra = 0;
    char32_t cp = 0;
    if (lead < 0x80) {
      cp = lead;
    } else if ((lead & 0xE0) == 0xC0) {
      extra = 1, cp = lead & 0x1F;
    } else if ((lead & 0xF0) == 0xE0) {
      extra = 2, cp = lead & 0x0F;
    } else if ((lead & 0xF8) == 0xF0) {
      extra = 3, cp = lead & 0x07;
    } else {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    if (i + static_cast<size_t>(extra) >= utf8.size()) {  // sequence cut off by the end of the string
      out.push_back(kReplacement);
      break;
    }
    bool valid = true;
    for (int k = 1; k <= extra; ++k) {
      const auto cont = static_cast<uint8_t>(utf8[i + k]);
      if ((cont & 0xC0) != 0x80) {
        valid = false;
        break;
      }
      cp = (cp << 6) | (cont & 0x3F);
    }
    if (!valid) {
      out.push_back(kReplacement);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(extra) + 1;
  }
  return out;
}

struct FontFace::Impl {
  std::vector<unsigned char> bytes;  // stbtt_fontinfo points into these
  stbtt_fontinfo info{};
  int ascent = 0, descent = 0, line_gap = 0;  // font units
};

FontFace::FontFace(const std::filesystem::path& file) : impl_(std::make_unique<Impl>()) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error("font " + file.string() + ": cannot open");
  impl_->bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  const int offset = stbtt_GetFontOffsetForIndex(impl_->bytes.data(), 0);
  if (impl_->bytes.size() < 12 || offset < 0 || !stbtt_InitFont(&impl_->info, impl_->bytes.data(), offset)) {
    throw Error("font " + file.string() + ": not a TrueType font");
  }
  stbtt_GetFontVMetrics(&impl_->info, &impl_->ascent, &impl_->descent, &impl_->line_gap);
}

FontFace::~FontFace() = default;

const FontFace& FontFace::shared() {
  // Initialised on first use (thread-safe), then read-only; a failed load throws and is retried next call.
  static const FontFace face(font_path());
  return face;
}

double FontFace::ascent(double size) const {
  return impl_->ascent * stbtt_ScaleForMappingEmToPixels(&impl_->info, static_cast<float>(size));
}
double FontFace::descent(double size) const {
  return -impl_->descent * stbtt_ScaleForMappingEmToPixels(&impl_->info, static_cast<float>(size));
}

double FontFace::advance(std::string_view utf8, double size) const {
  const float scale = stbtt_ScaleForMappingEmToPixels(&impl_->info, static_cast<float>(size));
  double pen = 0.0;
  int previous = 0;
  for (char32_t cp : decode_utf8(utf8)) {
    const int glyph = stbtt_FindGlyphIndex(&impl_->info, static_cast<int>(cp));
    if (previous != 0) pen += scale * stbtt_GetGlyphKernAdvance(&impl_->info, previous, glyph);
    int advance = 0, bearing = 0;
    stbtt_GetGlyphHMetrics(&impl_->info, glyph, &advance, &bearing);
    pen += scale * advance;
    previous = glyph;
  }
  return pen;
}

TextMask FontFace::rasterize(std::string_view utf8, double size) const {
  const float scale = stbtt_ScaleForMappingEmToPixels(&impl_->info, static_cast<float>(size));
  struct Placed {
    int glyph;
    double pen;
  };
  std::vector<Placed> placed;
  double pen = 0.0;
  int previous = 0;
  for (char32_t cp : decode_utf8(utf8)) {
    const int glyph = stbtt_FindGlyphIndex(&impl_->info, static_cast<int>(cp));
    if (previous != 0) pen += scale * stbtt_GetGlyphKernAdvance(&impl_->info, previous, glyph);
    placed.push_back({glyph, pen});
    int advance = 0, bearing = 0;
    stbtt_GetGlyphHMetrics(&impl_->info, glyph, &advance, &bearing);
    pen += scale * advance;
    previous = glyph;
  }

  TextMask mask;
  mask.advance = pen;
  // A box from the font's ascent/descent (plus a pixel of slack for anti-aliasing and overhangs).
  const int ascent_px = static_cast<int>(std::ceil(ascent(size))) + 1;
  const int descent_px = static_cast<int>(std::ceil(descent(size))) + 1;
  const int slack = static_cast<int>(std::ceil(size * 0.5)) + 1;  // italic-like overhangs, negative bearings
  mask.origin_x = slack;
  mask.baseline_y = ascent_px;
  mask.width = static_cast<int>(std::ceil(pen)) + 2 * slack;
  mask.height = ascent_px + descent_px;
  mask.coverage.assign(static_cast<size_t>(mask.width) * mask.height, 0.0f);

  std::vector<unsigned char> bitmap;
  for (const Placed& p : placed) {
    const double x = mask.origin_x + p.pen;
    const float shift_x = static_cast<float>(x - std::floor(x));
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    stbtt_GetGlyphBitmapBoxSubpixel(&impl_->info, p.glyph, scale, scale, shift_x, 0.0f, &x0, &y0, &x1, &y1);
    const int gw = x1 - x0, gh = y1 - y0;
    if (gw <= 0 || gh <= 0) continue;  // blank glyph (space)
    bitmap.assign(static_cast<size_t>(gw) * gh, 0);
    stbtt_MakeGlyphBitmapSubpixel(&impl_->info, bitmap.data(), gw, gh, gw, scale, scale, shift_x, 0.0f, p.glyph);
    const int left = static_cast<int>(std::floor(x)) + x0;
    const int top = mask.baseline_y + y0;
    for (int gy = 0; gy < gh; ++gy) {
      const int my = top + gy;
      if (my < 0 || my >= mask.height) continue;
      for (int gx = 0; gx < gw; ++gx) {
        const int mx = left + gx;
        if (mx < 0 || mx >= mask.width) continue;
        float& c = mask.coverage[static_cast<size_t>(my) * mask.width + mx];
        // Overlapping glyphs (tight kerning) combine as coverage union, never above 1.
        const float g = bitmap[static_cast<size_t>(gy) * gw + gx] / 255.0f;
        c = c + g - c * g;
      }
    }
  }
  return mask;
}

}  // namespace vtprune::draw::detail
