// vtprune draw: shapes land where they are asked to (with anti-aliased edges and alpha blending), text
// renders and measures, charts render at the requested size with something in the plot area, PNG round
// trip. Set VTPRUNE_TEST_KEEP_PNG=DIR to keep the rendered charts for looking at.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "draw/font.h"
#include "test_support.h"
#include "vtprune/draw.h"

namespace vtprune::draw {
namespace {

constexpr Color kWhite{255, 255, 255, 255};
constexpr Color kRed{255, 0, 0, 255};

struct Rgb {
  int r, g, b;
  bool operator==(const Rgb&) const = default;
};
Rgb pixel(const Canvas& canvas, int x, int y) {
  const auto img = canvas.image();
  return {img.at(x, y, 0), img.at(x, y, 1), img.at(x, y, 2)};
}
std::ostream& operator<<(std::ostream& os, const Rgb& p) { return os << "(" << p.r << "," << p.g << "," << p.b << ")"; }

// Pixels in [x0, x1) x [y0, y1) that differ from `background`.
int count_not(const Canvas& canvas, Rgb background, int x0, int y0, int x1, int y1) {
  const auto img = canvas.image();
  int n = 0;
  for (int y = y0; y < y1; ++y) {
    for (int x = x0; x < x1; ++x) {
      n += Rgb{img.at(x, y, 0), img.at(x, y, 1), img.at(x, y, 2)} == background ? 0 : 1;
    }
  }
  return n;
}
// Pixels of exactly `color` anywhere.
int count_color(const Canvas& canvas, Color color) {
  const auto img = canvas.image();
  int n = 0;
  for (size_t i = 0; i < img.pixels.size(); i += 3) {
    n += img.pixels[i] == color.r && img.pixels[i + 1] == color.g && img.pixels[i + 2] == color.b;
  }
  return n;
}

void keep_png(const Canvas& canvas, const std::string& name) {
  if (const char* dir = std::getenv("VTPRUNE_TEST_KEEP_PNG"); dir && *dir) {
    std::filesystem::create_directories(dir);
    canvas.save_png(std::filesystem::path(dir) / name);
  }
}

TEST(Canvas, BackgroundAndSize) {
  Canvas canvas(7, 5, {10, 20, 30, 255});
  EXPECT_EQ(canvas.width(), 7);
  EXPECT_EQ(canvas.height(), 5);
  EXPECT_EQ(pixel(canvas, 6, 4), (Rgb{10, 20, 30}));
  EXPECT_THROW(Canvas(0, 5), Error);
  EXPECT_THROW(Canvas(100000, 100000), Error);
}

TEST(Canvas, FillRectCoversExactlyItsPixelsWithAntiAliasedEdges) {
  Canvas canvas(20, 20);
  canvas.fill_rect(2, 3, 5, 4, kRed);  // pixel-aligned: [2,7) x [3,7)
  EXPECT_EQ(pixel(canvas, 2, 3), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 6, 6), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 7, 6), (Rgb{255, 255, 255}));
  EXPECT_EQ(pixel(canvas, 6, 7), (Rgb{255, 255, 255}));
  EXPECT_EQ(count_not(canvas, {255, 255, 255}, 0, 0, 20, 20), 20);
  canvas.fill_rect(10.5, 10, 2, 1, {0, 0, 0, 255});  // half-covered edge pixels are half grey
  EXPECT_EQ(pixel(canvas, 10, 10), (Rgb{128, 128, 128}));
  EXPECT_EQ(pixel(canvas, 11, 10), (Rgb{0, 0, 0}));
  EXPECT_EQ(pixel(canvas, 12, 10), (Rgb{128, 128, 128}));
  canvas.fill_rect(-100, -100, 50, 50, kRed);  // fully outside: clipped, no crash
  canvas.fill_rect(15, 15, 100, 100, kRed);    // partly outside
  EXPECT_EQ(pixel(canvas, 19, 19), (Rgb{255, 0, 0}));
}

TEST(Canvas, AlphaBlends) {
  Canvas canvas(4, 4);
  canvas.fill_rect(0, 0, 4, 4, {255, 0, 0, 128});
  EXPECT_EQ(pixel(canvas, 1, 1), (Rgb{255, 127, 127}));
  canvas.fill_rect(0, 0, 4, 4, {0, 0, 255, 0});  // fully transparent: no change
  EXPECT_EQ(pixel(canvas, 1, 1), (Rgb{255, 127, 127}));
}

TEST(Canvas, OutlineRectLeavesTheInsideAlone) {
  Canvas canvas(20, 20);
  canvas.outline_rect(2, 2, 10, 10, kRed, 2);
  EXPECT_EQ(pixel(canvas, 2, 2), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 3, 7), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 11, 11), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 7, 7), (Rgb{255, 255, 255}));
  EXPECT_EQ(pixel(canvas, 4, 4), (Rgb{255, 255, 255}));
  // Translucent outlines blend once everywhere (the strips do not overlap at the corners).
  Canvas translucent(20, 20);
  translucent.outline_rect(2, 2, 10, 10, {0, 0, 0, 128}, 2);
  EXPECT_EQ(pixel(translucent, 2, 2), pixel(translucent, 7, 2));
}

TEST(Canvas, LinesAreAntiAliased) {
  Canvas canvas(40, 40);
  canvas.line(5, 20.5, 35, 20.5, {0, 0, 0, 255}, 3);
  EXPECT_EQ(pixel(canvas, 20, 20), (Rgb{0, 0, 0}));
  EXPECT_EQ(pixel(canvas, 20, 5), (Rgb{255, 255, 255}));
  canvas.line(5, 5, 35, 35, {0, 0, 255, 255}, 1.0);
  const Rgb on = pixel(canvas, 10, 10), near = pixel(canvas, 11, 10);
  EXPECT_LT(on.r, 100);            // the diagonal passes through pixel centres
  EXPECT_GT(near.r, on.r);         // the neighbour is partly covered
  EXPECT_EQ(pixel(canvas, 30, 5), (Rgb{255, 255, 255}));
  canvas.line(-1e9, 0, 1e9, 0, kRed, 1.0);  // huge coordinates: clipped to the canvas
  canvas.line(0, 0, std::nan(""), 3, kRed, 1.0);
}

TEST(Canvas, Circles) {
  Canvas canvas(40, 40);
  canvas.circle(20, 20, 8.3, kRed, true);
  EXPECT_EQ(pixel(canvas, 20, 20), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(canvas, 20, 2), (Rgb{255, 255, 255}));
  const Rgb edge = pixel(canvas, 28, 20);  // pixel centre 28.5 is 8.5 from the centre: 30% covered
  EXPECT_GT(edge.g, 0);
  EXPECT_LT(edge.g, 255);
  Canvas ring(40, 40);
  ring.circle(20, 20, 8, kRed, false);
  EXPECT_EQ(pixel(ring, 20, 20), (Rgb{255, 255, 255}));
  EXPECT_GT(count_not(ring, {255, 255, 255}, 0, 0, 40, 40), 40);
}

TEST(Canvas, TextDrawsNearItsBaselineAndMeasures) {
  Canvas canvas(200, 60);
  canvas.text(10, 40, "Hello, world", 20, {0, 0, 0, 255});
  // Ink above the baseline, inside the measured width, nothing far away.
  const double w = canvas.text_width("Hello, world", 20);
  EXPECT_GT(count_not(canvas, {255, 255, 255}, 10, 22, 10 + static_cast<int>(w), 41), 50);
  EXPECT_EQ(count_not(canvas, {255, 255, 255}, static_cast<int>(w) + 20, 0, 200, 60), 0);
  EXPECT_EQ(count_not(canvas, {255, 255, 255}, 0, 0, 200, 15), 0);
  // Width grows with length and with size; empty text is zero wide and draws nothing.
  EXPECT_GT(canvas.text_width("Hello", 20), canvas.text_width("Hell", 20));
  EXPECT_GT(canvas.text_width("Hello", 40), 1.9 * canvas.text_width("Hello", 20));
  EXPECT_DOUBLE_EQ(canvas.text_width("", 20), 0.0);
  // Right-aligned text ends at x; centred text straddles it.
  Canvas right(200, 60);
  right.text(150, 40, "ABC", 20, {0, 0, 0, 255}, Align::Right);
  EXPECT_EQ(count_not(right, {255, 255, 255}, 152, 0, 200, 60), 0);
  EXPECT_GT(count_not(right, {255, 255, 255}, 100, 0, 150, 60), 20);
  Canvas centre(200, 60);
  centre.text(100, 40, "ABCDEF", 20, {0, 0, 0, 255}, Align::Center);
  EXPECT_GT(count_not(centre, {255, 255, 255}, 60, 0, 100, 60), 20);
  EXPECT_GT(count_not(centre, {255, 255, 255}, 100, 0, 140, 60), 20);
  // Non-ASCII and malformed UTF-8 render without trouble.
  canvas.text(10, 55, "\xC3\xA9t\xC3\xA9 \xE2\x80\xA6 \xFF\xC3", 12, {0, 0, 0, 255});
}

TEST(Font, Utf8Decoding) {
  EXPECT_EQ(detail::decode_utf8("ab"), (std::vector<char32_t>{'a', 'b'}));
  EXPECT_EQ(detail::decode_utf8("\xC3\xA9"), (std::vector<char32_t>{0xE9}));
  EXPECT_EQ(detail::decode_utf8("\xE2\x80\xA6"), (std::vector<char32_t>{0x2026}));
  EXPECT_EQ(detail::decode_utf8("\xF0\x9F\x98\x80"), (std::vector<char32_t>{0x1F600}));
  EXPECT_EQ(detail::decode_utf8("\xFF" "a"), (std::vector<char32_t>{0xFFFD, 'a'}));
  EXPECT_EQ(detail::decode_utf8("a\xE2\x80"), (std::vector<char32_t>{'a', 0xFFFD}));
  EXPECT_EQ(detail::decode_utf8("\xC3" "a"), (std::vector<char32_t>{0xFFFD, 'a'}));
}

TEST(Font, MissingOrBrokenFontIsAClearError) {
  const auto dir = test::temp_dir("font");
  EXPECT_THROW(detail::FontFace(dir / "missing.ttf"), Error);
  const auto junk = dir / "junk.ttf";
  { std::ofstream(junk) << "this is not a font"; }
  EXPECT_THROW(detail::FontFace{junk}, Error);
  const char* old = std::getenv("VTPRUNE_FONT");
  const std::string saved = old ? old : "";
  setenv("VTPRUNE_FONT", (dir / "missing.ttf").c_str(), 1);
  try {
    detail::font_path();
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("VTPRUNE_FONT"), std::string::npos) << e.what();
  }
  if (old) setenv("VTPRUNE_FONT", saved.c_str(), 1); else unsetenv("VTPRUNE_FONT");
  EXPECT_NO_THROW(detail::font_path());
}

TEST(Canvas, BlitClipsAndCopies) {
  Canvas target(10, 10);
  Canvas source(4, 4, kRed);
  target.blit(source, 8, -2);  // only a 2x2 corner lands
  EXPECT_EQ(pixel(target, 8, 0), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(target, 9, 1), (Rgb{255, 0, 0}));
  EXPECT_EQ(pixel(target, 9, 2), (Rgb{255, 255, 255}));
  EXPECT_EQ(count_not(target, {255, 255, 255}, 0, 0, 10, 10), 4);
  target.blit(source, 100, 100);
  target.blit(source, -100, 3);
}

TEST(Canvas, PngRoundTrip) {
  Canvas canvas(31, 17, {1, 2, 3, 255});
  canvas.fill_rect(3, 3, 10, 5, {200, 100, 50, 255});
  canvas.text(2, 15, "png", 10, kWhite);
  const auto file = test::temp_dir("png") / "canvas.png";
  canvas.save_png(file);
  const vision::RgbImage back = vision::load_image(file);
  EXPECT_EQ(back.width, 31);
  EXPECT_EQ(back.height, 17);
  EXPECT_EQ(back.pixels, canvas.image().pixels);
  const Canvas copy = Canvas::from_image(back);
  EXPECT_EQ(copy.image().pixels, back.pixels);
  EXPECT_THROW(canvas.save_png(test::temp_dir("png") / "no-such-dir" / "x.png"), Error);
  EXPECT_THROW(Canvas::from_image(vision::RgbImage{2, 2, std::vector<uint8_t>(5)}), Error);
}

TEST(Palette, DistinctAndWraps) {
  for (int i = 0; i < 10; ++i) {
    for (int j = i + 1; j < 10; ++j) {
      const Color a = palette(i), b = palette(j);
      EXPECT_FALSE(a.r == b.r && a.g == b.g && a.b == b.b) << i << " " << j;
    }
  }
  EXPECT_EQ(palette(10).r, palette(0).r);
  EXPECT_EQ(palette(-1).r, palette(9).r);
}

LineChart accuracy_chart() {
  LineChart chart;
  chart.title = "Accuracy vs. visual tokens kept";
  chart.x_label = "visual tokens kept";
  chart.y_label = "top-1 accuracy (%)";
  chart.series = {
      {"hiprune", {16, 32, 64, 128, 196}, {61.2, 68.0, 71.9, 72.1, 72.2}},
      {"prumerge_plus", {16, 32, 64, 128, 196}, {55.0, 63.1, 69.5, 71.0, 72.2}},
      {"random", {16, 32, 64, 128, 196}, {40.3, 52.0, 62.8, 69.4, 72.2}},
      {"pool", {16, 64, 196}, {48.0, 66.2, 72.2}},
  };
  return chart;
}

TEST(Charts, LineChartRendersAtTheRequestedSize) {
  const Canvas canvas = render_line_chart(accuracy_chart());
  EXPECT_EQ(canvas.width(), 960);
  EXPECT_EQ(canvas.height(), 600);
  keep_png(canvas, "line_chart.png");
  // The plot area (the middle of the canvas) has ink; each series colour appears (lines and markers).
  EXPECT_GT(count_not(canvas, {255, 255, 255}, 200, 150, 700, 450), 1000);
  for (int i = 0; i < 4; ++i) EXPECT_GT(count_color(canvas, palette(i)), 50) << "series " << i;

  const Canvas small = render_line_chart(accuracy_chart(), 480, 300);
  EXPECT_EQ(small.width(), 480);
  EXPECT_EQ(small.height(), 300);
  keep_png(small, "line_chart_small.png");
}

TEST(Charts, LineChartEdgeCases) {
  LineChart empty;
  empty.title = "nothing yet";
  EXPECT_NO_THROW(render_line_chart(empty));
  LineChart flat;
  flat.series = {{"one point", {5}, {3}}, {"gaps", {1, 2, 3, 4}, {1, std::nan(""), 2, 2}}};
  const Canvas canvas = render_line_chart(flat, 400, 300);
  keep_png(canvas, "line_chart_flat.png");
  EXPECT_GT(count_color(canvas, palette(0)), 10);
  LineChart bad;
  bad.series = {{"mismatch", {1, 2}, {1}}};
  EXPECT_THROW(render_line_chart(bad), Error);
  EXPECT_THROW(render_line_chart(accuracy_chart(), 20, 20), Error);
}

StackedBarChart ttft_chart() {
  StackedBarChart chart;
  chart.title = "Time to first token (LLaVA-1.5-7B, 2 threads)";
  chart.y_label = "milliseconds";
  chart.segment_names = {"encode", "reduce", "project", "prefill"};
  chart.bars = {
      {"none (576)", {820, 0.01, 95, 2400}},
      {"hiprune 64", {860, 0.05, 11, 410}},
      {"prumerge_plus", {860, 8.0, 20, 600}},
      {"visionzip 64", {860, 0.7, 11, 410}},
      {"a rather long label that must be shortened", {820, 2, 11, 400}},
  };
  return chart;
}

TEST(Charts, StackedBarsRenderAtTheRequestedSize) {
  const Canvas canvas = render_stacked_bars(ttft_chart());
  EXPECT_EQ(canvas.width(), 1200);
  EXPECT_EQ(canvas.height(), 600);
  keep_png(canvas, "stacked_bars.png");
  EXPECT_GT(count_not(canvas, {255, 255, 255}, 200, 150, 900, 450), 5000);
  EXPECT_GT(count_color(canvas, palette(0)), 1000);  // encode
  EXPECT_GT(count_color(canvas, palette(3)), 1000);  // prefill
  const Canvas small = render_stacked_bars(ttft_chart(), 600, 300);
  EXPECT_EQ(small.width(), 600);
  keep_png(small, "stacked_bars_small.png");
}

TEST(Charts, StackedBarsRejectBadValues) {
  StackedBarChart chart = ttft_chart();
  chart.bars[0].segments[1] = -1;
  EXPECT_THROW(render_stacked_bars(chart), Error);
  chart = ttft_chart();
  chart.bars[0].segments.push_back(1);
  EXPECT_THROW(render_stacked_bars(chart), Error);
  chart = ttft_chart();
  chart.bars[0].segments[0] = std::nan("");
  EXPECT_THROW(render_stacked_bars(chart), Error);
  EXPECT_NO_THROW(render_stacked_bars(StackedBarChart{}));
}

}  // namespace
}  // namespace vtprune::draw
