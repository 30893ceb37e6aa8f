// The RGB canvas: exact-area anti-aliasing for rectangles, distance-based coverage for lines and circles,
// alpha blending of everything, and text through the shared font.
#include <algorithm>
#include <array>
#include <cmath>
#include <string>

#include "font.h"
#include "vtprune/draw.h"

namespace vtprune::draw {
namespace {

// A cap on canvas size: charts and visualisations are a few megapixels; anything far larger is a bug.
constexpr int64_t kMaxPixels = int64_t{1} << 28;

double clamp01(double v) { return v < 0.0 ? 0.0 : (v > 1.0 ? 1.0 : v); }

// Overlap of [a0, a1) with the pixel [p, p + 1).
double overlap(double a0, double a1, int p) { return std::max(0.0, std::min(a1, p + 1.0) - std::max(a0, double(p))); }

// Blends `c` into pixel (px, py) of an RGB buffer with the given coverage (times c.a); pixels outside
// the canvas are ignored, so shapes clip themselves.
void blend(std::vector<uint8_t>& rgb, int width, int height, int px, int py, Color c, double cover) {
  if (px < 0 || py < 0 || px >= width || py >= height) return;
  const double a = cover * (c.a / 255.0);
  if (a <= 0.0) return;
  uint8_t* p = &rgb[(static_cast<size_t>(py) * width + px) * 3];
  p[0] = static_cast<uint8_t>(std::lround(p[0] + (c.r - p[0]) * a));
  p[1] = static_cast<uint8_t>(std::lround(p[1] + (c.g - p[1]) * a));
  p[2] = static_cast<uint8_t>(std::lround(p[2] + (c.b - p[2]) * a));
}

}  // namespace

Color palette(int i) {
  // Tableau 10 (matplotlib's tab10), in its usual order.
  static constexpr std::array<Color, 10> kTableau10 = {{
      {31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255},
      {140, 86, 75, 255},  {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255},
  }};
  const int n = static_cast<int>(kTableau10.size());
  return kTableau10[static_cast<size_t>(((i % n) + n) % n)];
}

Canvas::Canvas(int width, int height, Color background) : width_(width), height_(height) {
  if (width <= 0 || height <= 0 || int64_t{width} * height > kMaxPixels) {
    throw Error("draw: canvas size " + std::to_string(width) + "x" + std::to_string(height) +
                " is empty or too large");
  }
  rgb_.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < rgb_.size(); i += 3) {
    rgb_[i] = background.r, rgb_[i + 1] = background.g, rgb_[i + 2] = background.b;
  }
}

Canvas Canvas::from_image(const vision::RgbImage& image) {
  if (image.pixels.size() != static_cast<size_t>(std::max(image.width, 0)) * std::max(image.height, 0) * 3) {
    throw Error("draw: image " + std::to_string(image.width) + "x" + std::to_string(image.height) + " has " +
                std::to_string(image.pixels.size()) + " bytes of pixels");
  }
  Canvas canvas(image.width, image.height);
  canvas.rgb_ = image.pixels;
  return canvas;
}


void Canvas::fill_rect(double x, double y, double w, double h, Color c) {
  if (!(w > 0.0) || !(h > 0.0) || !std::isfinite(x) || !std::isfinite(y)) return;
  const double x1 = x + w, y1 = y + h;
  const int px0 = std::max(0, static_cast<int>(std::floor(x)));
  const int py0 = std::max(0, static_cast<int>(std::floor(y)));
  const int px1 = std::min(width_ - 1, static_cast<int>(std::ceil(std::min(x1, double(width_)))) - 1);
  const int py1 = std::min(height_ - 1, static_cast<int>(std::ceil(std::min(y1, double(height_)))) - 1);
  for (int py = py0; py <= py1; ++py) {
    const double cy = overlap(y, y1, py);
    for (int px = px0; px <= px1; ++px) {
      blend(rgb_, width_, height_, px, py, c, cy * overlap(x, x1, px));
    }
  }
}

void Canvas::outline_rect(double x, double y, double w, double h, Color c, double thickness) {
  if (!(w > 0.0) || !(h > 0.0) || !(thickness > 0.0)) return;
  const double t = std::min({thickness, w / 2.0, h / 2.0});
  // Four non-overlapping strips inside the rectangle, so a translucent colour is not blended twice.
  fill_rect(x, y, w, t, c);
  fill_rect(x, y + h - t, w, t, c);
  fill_rect(x, y + t, t, h - 2 * t, c);
  fill_rect(x + w - t, y + t, t, h - 2 * t, c);
}

void Canvas::line(double x0, double y0, double x1, double y1, Color c, double thickness) {
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(x1) || !std::isfinite(y1) || !(thickness > 0.0)) {
    return;
  }
  // Coverage of a pixel centre at distance d from the segment: a one-pixel ramp around the stroke's edge
  // (a capsule: round caps). Thin strokes keep their weight as lighter coverage.
  const double half = thickness / 2.0;
  const double reach = half + 1.0;
  const int px0 = std::max(0, static_cast<int>(std::floor(std::min(x0, x1) - reach)));
  const int py0 = std::max(0, static_cast<int>(std::floor(std::min(y0, y1) - reach)));
  const int px1 = std::min(width_ - 1, static_cast<int>(std::ceil(std::max(x0, x1) + reach)));
  const int py1 = std::min(height_ - 1, static_cast<int>(std::ceil(std::max(y0, y1) + reach)));
  const double dx = x1 - x0, dy = y1 - y0;
  const double length2 = dx * dx + dy * dy;
  const double weight = std::min(1.0, thickness);  // sub-pixel strokes: fainter, not thicker
  const double radius = std::max(half, 0.5);
  for (int py = py0; py <= py1; ++py) {
    for (int px = px0; px <= px1; ++px) {
      const double cx = px + 0.5, cy = py + 0.5;
      double t = length2 > 0.0 ? ((cx - x0) * dx + (cy - y0) * dy) / length2 : 0.0;
      t = std::clamp(t, 0.0, 1.0);
      const double ex = cx - (x0 + t * dx), ey = cy - (y0 + t * dy);
      const double d = std::sqrt(ex * ex + ey * ey);
      const double cover = clamp01(radius + 0.5 - d) * weight;
      blend(rgb_, width_, height_, px, py, c, cover);
    }
  }
}

void Canvas::circle(double cx, double cy, double radius, Color c, bool filled) {
  if (!std::isfinite(cx) || !std::isfinite(cy) || !(radius > 0.0)) return;
  const double reach = radius + 1.0;
  const int px0 = std::max(0, static_cast<int>(std::floor(cx - reach)));
  const int py0 = std::max(0, static_cast<int>(std::floor(cy - reach)));
  const int px1 = std::min(width_ - 1, static_cast<int>(std::ceil(cx + reach)));
  const int py1 = std::min(height_ - 1, static_cast<int>(std::ceil(cy + reach)));
  for (int py = py0; py <= py1; ++py) {
    for (int px = px0; px <= px1; ++px) {
      const double d = std::hypot(px + 0.5 - cx, py + 0.5 - cy);
      // Filled: a disc with a one-pixel edge ramp. Outline: a one-pixel ring centred on the radius.
      const double cover = filled ? clamp01(radius + 0.5 - d) : clamp01(1.0 - std::abs(d - radius));
      blend(rgb_, width_, height_, px, py, c, cover);
    }
  }
}

void Canvas::text(double x, double y, std::string_view utf8, double size, Color c, Align align) {
  if (utf8.empty() || !(size > 0.0) || !std::isfinite(x) || !std::isfinite(y)) return;
  const detail::TextMask mask = detail::FontFace::shared().rasterize(utf8, size);
  double start = x;
  if (align == Align::Center) start -= mask.advance / 2.0;
  if (align == Align::Right) start -= mask.advance;
  const int left = static_cast<int>(std::lround(start)) - mask.origin_x;
  const int top = static_cast<int>(std::lround(y)) - mask.baseline_y;
  for (int my = 0; my < mask.height; ++my) {
    for (int mx = 0; mx < mask.width; ++mx) {
      const float cover = mask.coverage[static_cast<size_t>(my) * mask.width + mx];
      if (cover > 0.0f) blend(rgb_, width_, height_, left + mx, top + my, c, double(cover));
    }
  }
}

double Canvas::text_width(std::string_view utf8, double size) const {
  if (utf8.empty() || !(size > 0.0)) return 0.0;
  return detail::FontFace::shared().advance(utf8, size);
}

void Canvas::blit(const Canvas& source, int x, int y) {
  const int x0 = std::max(0, x), y0 = std::max(0, y);
  const int x1 = std::min(width_, x + source.width_), y1 = std::min(height_, y + source.height_);
  if (x0 >= x1) return;
  for (int py = y0; py < y1; ++py) {
    const uint8_t* from = &source.rgb_[(static_cast<size_t>(py - y) * source.width_ + (x0 - x)) * 3];
    std::copy(from, from + static_cast<size_t>(x1 - x0) * 3, &rgb_[(static_cast<size_t>(py) * width_ + x0) * 3]);
  }
}

vision::RgbImage Canvas::image() const { return {width_, height_, rgb_}; }

void Canvas::save_png(const std::filesystem::path& file) const { vision::save_png(file, image()); }

}  // namespace vtprune::draw
