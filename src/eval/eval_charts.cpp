#include "eval_charts.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "vtprune/draw.h"

namespace vtprune::eval {

void write_accuracy_chart(const std::filesystem::path& path, const std::vector<ImagenetRow>& rows,
                          const std::string& model_name, size_t n_images, int prune_after, int depth, int64_t n_patches) {
  draw::LineChart chart;
  chart.title = model_name + ", " + std::to_string(n_images) + " ImageNet images: tokens reduced after block " +
                std::to_string(prune_after) + " of " + std::to_string(depth);
  chart.x_label = "patch tokens kept (mean per image, of " + std::to_string(n_patches) + ")";
  chart.y_label = "top-1 accuracy (%)";
  std::vector<std::string> order;  // methods in the order of the table
  std::map<std::string, draw::Series> by_method;
  for (const auto& r : rows) {
    if (!std::isfinite(r.top1) || r.n_images == 0) continue;
    const std::string name = r.method == "none" ? "none (unpruned)" : r.method;
    if (!by_method.count(name)) order.push_back(name);
    auto& s = by_method[name];
    s.name = name;
    s.x.push_back(r.mean_tokens_kept);
    s.y.push_back(100.0 * r.top1);
  }
  // The unpruned model as a flat reference line across the measured range (one point would be easy to miss).
  double x_min = static_cast<double>(n_patches);
  for (const auto& r : rows) x_min = std::min(x_min, r.mean_tokens_kept);
  if (const auto it = by_method.find("none (unpruned)"); it != by_method.end() && x_min < static_cast<double>(n_patches)) {
    it->second.name = "unpruned (all " + std::to_string(n_patches) + " tokens)";
    it->second.x = {x_min, static_cast<double>(n_patches)};
    it->second.y = {it->second.y.front(), it->second.y.front()};
  }
  for (const auto& name : order) {
    auto s = by_method[name];
    // Lines run left to right: sort the points by tokens kept.
    std::vector<size_t> idx(s.x.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
    draw::Series sorted{s.name, {}, {}};
    for (size_t i : idx) {
      sorted.x.push_back(s.x[i]);
      sorted.y.push_back(s.y[i]);
    }
    chart.series.push_back(std::move(sorted));
  }
  draw::render_line_chart(chart, 1100, 680).save_png(path);
}

}  // namespace vtprune::eval
