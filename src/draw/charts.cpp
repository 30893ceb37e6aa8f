// Line charts and stacked bar charts on the canvas: nice axis ticks, grid, labels, title and legend, laid
// out from the measured text so nothing overlaps at any reasonable size.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "vtprune/draw.h"

namespace vtprune::draw {
namespace {

constexpr Color kBackground{255, 255, 255, 255};
constexpr Color kInk{33, 33, 33, 255};
constexpr Color kMutedInk{90, 90, 90, 255};
constexpr Color kGrid{225, 225, 225, 255};
constexpr Color kAxis{120, 120, 120, 255};

// Smallest sizes a chart can lay out in (axes, labels and a legend need some room).
constexpr int kMinWidth = 240, kMinHeight = 160;

// Font sizes and spacing scale with the canvas (the defaults are tuned for 960x600).
struct Metrics {
  double scale, title, label, tick, legend, pad;
  Metrics(int width, int height)
      : scale(std::clamp(std::min(width / 960.0, height / 600.0), 0.6, 3.0)),
        title(21 * scale),
        label(15 * scale),
        tick(13 * scale),
        legend(14 * scale),
        pad(10 * scale) {}
};

// Ticks at 1, 2, 2.5 or 5 times a power of ten, about `target` of them across [lo, hi].
struct Axis {
  double lo = 0.0, hi = 1.0, step = 0.25;
  std::vector<double> ticks;
  int decimals = 0;
};

Axis nice_axis(double lo, double hi, int target, bool snap_to_ticks) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = 0.0, hi = 1.0;
  if (hi < lo) std::swap(lo, hi);
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {  // a single value: give it some room
    const double pad = lo == 0.0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / magnitude;
  const double mantissa = f < 1.5 ? 1.0 : f < 2.25 ? 2.0 : f < 3.5 ? 2.5 : f < 7.5 ? 5.0 : 10.0;
  Axis axis;
  axis.step = mantissa * magnitude;
  if (snap_to_ticks) {
    lo = std::floor(lo / axis.step + 1e-9) * axis.step;
    hi = std::ceil(hi / axis.step - 1e-9) * axis.step;
  }
  axis.lo = lo, axis.hi = hi;
  for (double t = std::ceil(lo / axis.step - 1e-9) * axis.step; t <= hi + axis.step * 1e-9; t += axis.step) {
    axis.ticks.push_back(std::abs(t) < axis.step * 1e-9 ? 0.0 : t);
    if (axis.ticks.size() > 100) break;  // defensive: never loop on degenerate floating point
  }
  const double exponent = std::floor(std::log10(axis.step) + 1e-9);
  axis.decimals = std::max(0, static_cast<int>(-exponent) + (mantissa == 2.5 ? 1 : 0));
  return axis;
}

std::string format_tick(double v, int decimals) {
  char buffer[64];
  if (std::abs(v) >= 1e7) {
    std::snprintf(buffer, sizeof buffer, "%.3g", v);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.*f", std::min(decimals, 6), v);
  }
  std::string s = buffer;
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);  // "-0.0" -> "0.0"
  return s;
}

// A value printed with about three significant digits (bar totals).
std::string format_value(double v) {
  char buffer[64];
  const double a = std::abs(v);
  std::snprintf(buffer, sizeof buffer, a >= 1e6 ? "%.3g" : a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : "%.2f", v);
  return buffer;
}

// Text reading bottom to top, centred on (cx, cy): drawn upright on a scratch canvas of the chart's
// background, then rotated a quarter turn counter-clockwise and copied in.
void vertical_text(Canvas& canvas, double cx, double cy, const std::string& text, double size, Color color) {
  if (text.empty()) return;
  const int w = static_cast<int>(std::ceil(canvas.text_width(text, size))) + 4;
  const int h = static_cast<int>(std::ceil(size * 1.3)) + 2;
  Canvas upright(w, h, kBackground);
  upright.text(2, std::round(size * 1.0), text, size, color);
  const vision::RgbImage src = upright.image();
  vision::RgbImage rotated{h, w, std::vector<uint8_t>(src.pixels.size())};
  for (int ry = 0; ry < w; ++ry) {
    for (int rx = 0; rx < h; ++rx) {
      for (int c = 0; c < 3; ++c) {
        rotated.pixels[(static_cast<size_t>(ry) * h + rx) * 3 + c] = src.at(w - 1 - ry, rx, c);
      }
    }
  }
  canvas.blit(Canvas::from_image(rotated), static_cast<int>(std::lround(cx - h / 2.0)),
              static_cast<int>(std::lround(cy - w / 2.0)));
}

// Shortens `text` with an ellipsis until it fits `max_width` at `size`.
std::string fit_text(const Canvas& canvas, std::string text, double size, double max_width) {
  if (canvas.text_width(text, size) <= max_width) return text;
  const std::string ellipsis = "\xE2\x80\xA6";
  while (!text.empty()) {
    text.pop_back();
    while (!text.empty() && (static_cast<uint8_t>(text.back()) & 0xC0) == 0x80) text.pop_back();  // whole code points
    if (!text.empty() && (static_cast<uint8_t>(text.back()) & 0xC0) == 0xC0) text.pop_back();
    if (canvas.text_width(text + ellipsis, size) <= max_width) return text + ellipsis;
  }
  return ellipsis;
}

struct PlotArea {
  double x0, y0, x1, y1;  // left, top, right, bottom in pixels
  double width() const { return x1 - x0; }
  double height() const { return y1 - y0; }
};

void check_size(const char* what, int width, int height) {
  if (width < kMinWidth || height < kMinHeight || int64_t{width} * height > (int64_t{1} << 26)) {
    throw Error(std::string("draw: ") + what + " size " + std::to_string(width) + "x" + std::to_string(height) +
                " is outside " + std::to_string(kMinWidth) + "x" + std::to_string(kMinHeight) + " .. 64 Mpixel");
  }
}

// Horizontal value axis on the left: grid lines, tick labels and the rotated axis label.
void draw_value_axis(Canvas& canvas, const PlotArea& area, const Axis& axis, const std::string& label,
                     const Metrics& m, double label_x) {
  for (double t : axis.ticks) {
    const double y = area.y1 - (t - axis.lo) / (axis.hi - axis.lo) * area.height();
    canvas.line(area.x0, y, area.x1, y, kGrid, 1.0);
    canvas.line(area.x0 - 4 * m.scale, y, area.x0, y, kAxis, 1.0);
    canvas.text(area.x0 - 7 * m.scale, y + m.tick * 0.36, format_tick(t, axis.decimals), m.tick, kMutedInk,
                Align::Right);
  }
  vertical_text(canvas, label_x, (area.y0 + area.y1) / 2.0, label, m.label, kInk);
}

double widest_tick_label(const Canvas& canvas, const Axis& axis, double size) {
  double widest = 0.0;
  for (double t : axis.ticks) widest = std::max(widest, canvas.text_width(format_tick(t, axis.decimals), size));
  return widest;
}

// A legend box at (x, y) listing names with a swatch drawn by `swatch(canvas, x, y_mid, index)`.
template <typename Swatch>
void draw_legend(Canvas& canvas, double x, double y, const std::vector<std::string>& names, const Metrics& m,
                 double swatch_width, Swatch swatch) {
  if (names.empty()) return;
  const double row = m.legend * 1.6;
  double widest = 0.0;
  for (const auto& n : names) widest = std::max(widest, canvas.text_width(n, m.legend));
  const double box_w = m.pad * 2.5 + swatch_width + widest;
  const double box_h = row * static_cast<double>(names.size()) + m.pad;
  canvas.fill_rect(x, y, box_w, box_h, {255, 255, 255, 230});
  canvas.outline_rect(x, y, box_w, box_h, {200, 200, 200, 255});
  for (size_t i = 0; i < names.size(); ++i) {
    const double mid = y + m.pad / 2 + row * (static_cast<double>(i) + 0.5);
    swatch(canvas, x + m.pad, mid, static_cast<int>(i));
    canvas.text(x + m.pad * 1.5 + swatch_width, mid + m.legend * 0.36, names[i], m.legend, kInk);
  }
}

double legend_width(const Canvas& canvas, const std::vector<std::string>& names, const Metrics& m,
                    double swatch_width) {
  if (names.empty()) return 0.0;
  double widest = 0.0;
  for (const auto& n : names) widest = std::max(widest, canvas.text_width(n, m.legend));
  return m.pad * 2.5 + swatch_width + widest;
}

}  // namespace

Canvas render_line_chart(const LineChart& chart, int width, int height) {
  check_size("line chart", width, height);
  double x_min = std::numeric_limits<double>::infinity(), x_max = -x_min, y_min = x_min, y_max = -x_min;
  std::vector<std::string> names;
  for (const Series& s : chart.series) {
    if (s.x.size() != s.y.size()) {
      throw Error("draw: line chart series '" + s.name + "' has " + std::to_string(s.x.size()) + " x values but " +
                  std::to_string(s.y.size()) + " y values");
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;  // gaps are allowed, drawn as breaks
      x_min = std::min(x_min, s.x[i]), x_max = std::max(x_max, s.x[i]);
      y_min = std::min(y_min, s.y[i]), y_max = std::max(y_max, s.y[i]);
    }
    names.push_back(s.name);
  }
  const bool has_data = std::isfinite(x_min);
  if (!has_data) x_min = 0, x_max = 1, y_min = 0, y_max = 1;

  Canvas canvas(width, height, kBackground);
  const Metrics m(width, height);
  // A little room above and below the data so markers do not sit on the frame.
  const double y_pad = (y_max - y_min) * 0.03;
  const Axis y_axis = nice_axis(y_min - y_pad, y_max + y_pad, 6, true);
  // The x axis keeps the data's own range padded a little, so the first and last points are not on the frame.
  const double x_pad = (x_max - x_min) * 0.04;
  const Axis x_axis = nice_axis(x_min - x_pad, x_max + x_pad, 7, false);

  const double marker = 3.6 * m.scale;
  const double swatch_w = 28 * m.scale;
  const double legend_w = legend_width(canvas, names, m, swatch_w);
  const double top = m.pad * 2 + (chart.title.empty() ? 0.0 : m.title * 1.4);
  const double bottom = m.pad * 2 + m.tick * 1.6 + (chart.x_label.empty() ? 0.0 : m.label * 1.6);
  const double y_label_w = chart.y_label.empty() ? 0.0 : m.label * 1.6;
  const double left = m.pad * 2 + y_label_w + widest_tick_label(canvas, y_axis, m.tick) + 7 * m.scale;
  const double right = m.pad * 2 + (legend_w > 0 ? legend_w + m.pad : 0.0);
  PlotArea area{left, top, width - right, height - bottom};
  if (area.width() < 40 || area.height() < 40) {
    throw Error("draw: line chart " + std::to_string(width) + "x" + std::to_string(height) +
                " leaves no room for the plot (legend names too long?)");
  }

  if (!chart.title.empty()) canvas.text(width / 2.0, m.pad + m.title, chart.title, m.title, kInk, Align::Center);
  draw_value_axis(canvas, area, y_axis, chart.y_label, m, m.pad + y_label_w / 2.0);
  const auto to_x = [&](double v) { return area.x0 + (v - x_axis.lo) / (x_axis.hi - x_axis.lo) * area.width(); };
  const auto to_y = [&](double v) { return area.y1 - (v - y_axis.lo) / (y_axis.hi - y_axis.lo) * area.height(); };
  for (double t : x_axis.ticks) {
    const double x = to_x(t);
    canvas.line(x, area.y0, x, area.y1, kGrid, 1.0);
    canvas.line(x, area.y1, x, area.y1 + 4 * m.scale, kAxis, 1.0);
    canvas.text(x, area.y1 + m.pad * 0.6 + m.tick, format_tick(t, x_axis.decimals), m.tick, kMutedInk, Align::Center);
  }
  if (!chart.x_label.empty()) {
    canvas.text((area.x0 + area.x1) / 2.0, height - m.pad * 1.2, chart.x_label, m.label, kInk, Align::Center);
  }
  canvas.line(area.x0, area.y1, area.x1, area.y1, kAxis, 1.0);  // axes over the grid
  canvas.line(area.x0, area.y0, area.x0, area.y1, kAxis, 1.0);
  if (!has_data) {
    canvas.text((area.x0 + area.x1) / 2, (area.y0 + area.y1) / 2, "no data", m.label, kMutedInk, Align::Center);
  }

  for (size_t si = 0; si < chart.series.size(); ++si) {
    const Series& s = chart.series[si];
    const Color color = palette(static_cast<int>(si));
    // Points in x order (callers pass budgets in any order); non-finite points break the line.
    std::vector<size_t> order(s.x.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::isfinite(s.x[a]) && (!std::isfinite(s.x[b]) || s.x[a] < s.x[b]);
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const size_t a = order[k - 1], b = order[k];
      if (!std::isfinite(s.x[a]) || !std::isfinite(s.y[a]) || !std::isfinite(s.x[b]) || !std::isfinite(s.y[b])) {
        continue;
      }
      canvas.line(to_x(s.x[a]), to_y(s.y[a]), to_x(s.x[b]), to_y(s.y[b]), color, 2.2 * m.scale);
    }
    for (size_t i : order) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      canvas.circle(to_x(s.x[i]), to_y(s.y[i]), marker + 1.2 * m.scale, kBackground);
      canvas.circle(to_x(s.x[i]), to_y(s.y[i]), marker, color);
    }
  }

  draw_legend(canvas, area.x1 + m.pad, area.y0, names, m, swatch_w, [&](Canvas& c, double x, double y, int i) {
    c.line(x, y, x + swatch_w, y, palette(i), 2.2 * m.scale);
    c.circle(x + swatch_w / 2, y, marker + 1.2 * m.scale, kBackground);
    c.circle(x + swatch_w / 2, y, marker, palette(i));
  });
  return canvas;
}

Canvas render_stacked_bars(const StackedBarChart& chart, int width, int height) {
  check_size("stacked bar chart", width, height);
  double max_total = 0.0;
  for (const Bar& bar : chart.bars) {
    if (bar.segments.size() > chart.segment_names.size()) {
      throw Error("draw: bar '" + bar.label + "' has " + std::to_string(bar.segments.size()) +
                  " segments but the chart names " + std::to_string(chart.segment_names.size()));
    }
    double total = 0.0;
    for (double v : bar.segments) {
      if (!std::isfinite(v) || v < 0.0) {
        throw Error("draw: bar '" + bar.label + "' has a segment value " + std::to_string(v) +
                    " (stacked bars need finite values >= 0)");
      }
      total += v;
    }
    max_total = std::max(max_total, total);
  }

  Canvas canvas(width, height, kBackground);
  const Metrics m(width, height);
  // Headroom above the tallest bar for its total label.
  const Axis y_axis = nice_axis(0.0, max_total > 0.0 ? max_total * 1.08 : 1.0, 6, true);
  const double swatch_w = m.legend;
  const double legend_w = legend_width(canvas, chart.segment_names, m, swatch_w);
  const double top = m.pad * 2 + (chart.title.empty() ? 0.0 : m.title * 1.4);
  const double bottom = m.pad * 2 + m.tick * 1.8;
  const double y_label_w = chart.y_label.empty() ? 0.0 : m.label * 1.6;
  const double left = m.pad * 2 + y_label_w + widest_tick_label(canvas, y_axis, m.tick) + 7 * m.scale;
  const double right = m.pad * 2 + (legend_w > 0 ? legend_w + m.pad : 0.0);
  PlotArea area{left, top, width - right, height - bottom};
  if (area.width() < 40 || area.height() < 40) {
    throw Error("draw: stacked bar chart " + std::to_string(width) + "x" + std::to_string(height) +
                " leaves no room for the bars (segment names too long?)");
  }

  if (!chart.title.empty()) canvas.text(width / 2.0, m.pad + m.title, chart.title, m.title, kInk, Align::Center);
  draw_value_axis(canvas, area, y_axis, chart.y_label, m, m.pad + y_label_w / 2.0);
  const auto to_y = [&](double v) { return area.y1 - (v - y_axis.lo) / (y_axis.hi - y_axis.lo) * area.height(); };

  const double slot = area.width() / std::max<size_t>(1, chart.bars.size());
  const double bar_w = std::min(slot * 0.62, 140.0 * m.scale);
  for (size_t bi = 0; bi < chart.bars.size(); ++bi) {
    const Bar& bar = chart.bars[bi];
    const double cx = area.x0 + slot * (static_cast<double>(bi) + 0.5);
    double base = 0.0;
    for (size_t si = 0; si < bar.segments.size(); ++si) {
      const double y_top = to_y(base + bar.segments[si]), y_bottom = to_y(base);
      canvas.fill_rect(cx - bar_w / 2, y_top, bar_w, y_bottom - y_top, palette(static_cast<int>(si)));
      if (si > 0 && bar.segments[si] > 0.0) {  // a hairline between segments keeps equal colours apart
        canvas.fill_rect(cx - bar_w / 2, y_bottom - 0.5, bar_w, 1.0, {255, 255, 255, 200});
      }
      base += bar.segments[si];
    }
    if (!bar.segments.empty()) {
      canvas.text(cx, to_y(base) - m.pad * 0.5, format_value(base), m.tick, kInk, Align::Center);
    }
    // Labels shrink (to 85%) and then shorten with an ellipsis to stay inside their slot.
    double size = m.tick;
    while (size > m.tick * 0.85 && canvas.text_width(bar.label, size) > slot * 0.96) size *= 0.92;
    canvas.text(cx, area.y1 + m.pad * 0.6 + m.tick, fit_text(canvas, bar.label, size, slot * 0.96), size, kInk,
                Align::Center);
  }
  canvas.line(area.x0, area.y1, area.x1, area.y1, kAxis, 1.0);
  canvas.line(area.x0, area.y0, area.x0, area.y1, kAxis, 1.0);

  // Legend top-down in the order the segments stack (last segment on top).
  const std::vector<std::string> legend_names(chart.segment_names.rbegin(), chart.segment_names.rend());
  const int segments = static_cast<int>(legend_names.size());
  draw_legend(canvas, area.x1 + m.pad, area.y0, legend_names, m, swatch_w, [&](Canvas& c, double x, double y, int i) {
    c.fill_rect(x, y - swatch_w / 2, swatch_w, swatch_w, palette(segments - 1 - i));
  });
  return canvas;
}

}  // namespace vtprune::draw
