// vtprune draw: a small RGB canvas with anti-aliased shapes and TrueType text (stb_truetype + DejaVu Sans from
// Debian's fonts-dejavu-core), and the two charts the tools need: lines (accuracy vs tokens kept) and stacked
// bars (time-to-first-token breakdown). Used by `viz`, `eval` and `bench`; PNG output via vision::save_png.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/vision.h"

namespace vtprune::draw {

struct Color {
  uint8_t r = 0, g = 0, b = 0, a = 255;  // a: opacity when drawing (the canvas itself is opaque RGB)
};
// A qualitative palette (Tableau 10): palette(i) for series / segment i.
Color palette(int i);

enum class Align { Left, Center, Right };

class Canvas {
 public:
  Canvas(int width, int height, Color background = {255, 255, 255, 255});
  static Canvas from_image(const vision::RgbImage& image);

  int width() const { return width_; }
  int height() const { return height_; }

  // All shapes alpha-blend with Color::a. Coordinates in pixels, y down.
  void fill_rect(double x, double y, double w, double h, Color c);
  void outline_rect(double x, double y, double w, double h, Color c, double thickness = 1.0);
  void line(double x0, double y0, double x1, double y1, Color c, double thickness = 1.0);
  void circle(double cx, double cy, double radius, Color c, bool filled = true);
  // Text with its baseline at y; size in pixels (em height). Throws Error if no font can be found.
  void text(double x, double y, std::string_view utf8, double size, Color c, Align align = Align::Left);
  double text_width(std::string_view utf8, double size) const;
  void blit(const Canvas& source, int x, int y);

  vision::RgbImage image() const;
  void save_png(const std::filesystem::path& file) const;

 private:
  int width_, height_;
  std::vector<uint8_t> rgb_;
};

struct Series {
  std::string name;
  std::vector<double> x, y;
};
struct LineChart {
  std::string title, x_label, y_label;
  std::vector<Series> series;  // one line (with point markers) per series, legend entry each
};
Canvas render_line_chart(const LineChart& chart, int width = 960, int height = 600);

struct Bar {
  std::string label;             // under the bar
  std::vector<double> segments;  // stacked bottom-up, one per segment name
};
struct StackedBarChart {
  std::string title, y_label;
  std::vector<std::string> segment_names;  // legend
  std::vector<Bar> bars;
};
Canvas render_stacked_bars(const StackedBarChart& chart, int width = 1200, int height = 600);

}  // namespace vtprune::draw
