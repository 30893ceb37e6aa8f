// The family registry and the geometry helpers every encoder shares.
#include <algorithm>
#include <array>
#include <cmath>

#include "families.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {

std::string_view to_string(Encoder encoder) { return encoder == Encoder::Own ? "own" : "mtmd"; }

Encoder parse_encoder(std::string_view name) {
  if (name == "own") return Encoder::Own;
  if (name == "mtmd") return Encoder::Mtmd;
  throw InputError("unknown encoder '" + std::string(name) + "' (known: own, mtmd)");
}

std::string_view to_string(Support support) {
  switch (support) {
    case Support::Official: return "official";
    case Support::Adapted: return "adapted";
    case Support::Refused: return "refused";
  }
  return "?";
}

std::span<const Family* const> all() {
  static const std::array<const Family*, 5> families = {&llava15(), &llava_next(), &qwen25vl(), &gemma3(), &idefics3()};
  return families;
}

const Family& by_name(std::string_view name) {
  std::string known;
  for (const Family* f : all()) {
    if (f->name == name) return *f;
    known += (known.empty() ? "" : ", ") + f->name;
  }
  throw Error("unknown model family '" + std::string(name) + "' (known: " + known + ")");
}

const Family& detect(const io::GgufFile& mmproj) {
  if (!mmproj.boolean("clip.has_vision_encoder", false)) {
    throw InputError(mmproj.where() + ": has no vision encoder (clip.has_vision_encoder is not true)");
  }
  std::string type = mmproj.find_str("clip.projector_type").value_or("");
  if (type.empty()) type = mmproj.find_str("clip.vision.projector_type").value_or("");
  if (type.empty()) throw InputError(mmproj.where() + ": no clip.projector_type: not a llama.cpp mmproj file");
  // LLaVA-1.5 and LLaVA-NeXT share the `mlp` projector; NeXT's files state its AnyRes resolutions.
  const bool anyres = mmproj.has("clip.vision.image_grid_pinpoints");
  for (const Family* f : all()) {
    if (std::find(f->projector_types.begin(), f->projector_types.end(), type) != f->projector_types.end() &&
        (f->tiling == Tiling::AnyRes) == anyres) {
      return *f;
    }
  }
  std::string known;
  for (const Family* f : all()) {
    for (const auto& t : f->projector_types) known += (known.empty() ? "" : ", ") + t;
  }
  throw InputError(mmproj.where() + ": projector type '" + type + "' has no entry in vtprune's family table "
                   "(libmtmd may run it, but vtprune does not know its geometry and cannot prune it yet; "
                   "supported: " + known + ")");
}

const MethodRule& rule(const Family& family, std::string_view method) {
  method_info(method);  // an unknown method is its own error
  for (const MethodRule& r : family.methods) {
    if (r.method != method) continue;
    if (r.support == Support::Refused) {
      throw InputError("method " + std::string(method) + " cannot run on " + family.name + ": " + r.note);
    }
    return r;
  }
  throw InputError("method " + std::string(method) + " is not described for the " + family.name +
                   " family yet, so it does not run there");
}

int scale_layer(int layer, int depth, int reference) {
  if (layer < 0 || depth <= 0 || reference <= 0 || depth == reference) return layer;
  const auto scaled = static_cast<int>(std::nearbyint(static_cast<double>(layer) * depth / reference));  // half to even
  return std::clamp(scaled, 0, depth - 1);
}

std::vector<std::string> method_options(const Family& family, std::string_view method,
                                        const std::vector<std::string>& user_options, int depth) {
  const MethodRule& r = rule(family, method);
  const MethodInfo& info = method_info(method);
  const auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  std::vector<std::string> out;
  for (const std::string& kv : r.options) {
    const std::string key = key_of(kv);
    const bool overridden = std::any_of(user_options.begin(), user_options.end(),
                                        [&](const std::string& u) { return key_of(u) == key; });
    if (overridden) continue;
    const auto spec = std::find_if(info.options.begin(), info.options.end(), [&](const OptionSpec& o) { return o.name == key; });
    const std::string value = kv.substr(kv.find('=') + 1);
    if (spec != info.options.end() && spec->type == OptionType::Layer && !value.empty() &&
        std::all_of(value.begin(), value.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      out.push_back(key + "=" + std::to_string(scale_layer(std::stoi(value), depth, family.reference_depth)));
    } else {
      out.push_back(kv);
    }
  }
  out.insert(out.end(), user_options.begin(), user_options.end());
  return out;
}

std::string families_markdown() {
  std::string md = "| family | projector types | encoder | LLM tokens from ViT patches | CLS | positions | prompt |\n"
                   "|---|---|---|---|---|---|---|\n";
  for (const Family* f : all()) {
    std::string types;
    for (const auto& t : f->projector_types) types += (types.empty() ? "`" : ", `") + t + "`";
    const Geometry& g = f->geometry;
    std::string tokens = g.merge == 1 ? "one per patch"
                         : std::to_string(g.merge) + "x" + std::to_string(g.merge) +
                               (g.units == UnitLayout::Consecutive ? " patches each (consecutive in the ViT)"
                                                                   : " block of the raster patch grid each");
    if (g.window_order) tokens += " (ViT in window order, " + std::to_string(g.window_tokens) + "x" + std::to_string(g.window_tokens) + " tokens per window)";
    if (f->tiling == Tiling::AnyRes) tokens += ", on each AnyRes tile (the overview, then the crops)";
    md += "| " + f->name + " | " + types + " | " + (f->encoder == Encoder::Own ? "vtprune's graph" : "libmtmd") + " | " +
          tokens + " | " + (g.has_cls ? "first" : "none") + " | " +
          (f->positions == Positions::Contiguous ? "1-D, kept tokens renumbered" : "M-RoPE, kept tokens keep (t, y, x)") +
          (f->bidirectional_image ? "; an image's rows attend to each other without the causal mask" : "") + " | " +
          (f->prompt == Prompt::Llava15 ? "LLaVA's conv_vicuna_v1" : "the file's Jinja template") + " |\n";
  }
  return md;
}

std::string methods_markdown() {
  std::string md = "| method |";
  std::string rule_line = "|---|";
  for (const Family* f : all()) {
    md += " " + f->name + " |";
    rule_line += "---|";
  }
  md += "\n" + rule_line + "\n";
  for (const MethodInfo& m : methods()) {
    md += "| `" + m.name + "` |";
    for (const Family* f : all()) {
      const auto r = std::find_if(f->methods.begin(), f->methods.end(), [&](const MethodRule& x) { return x.method == m.name; });
      if (r == f->methods.end()) {
        md += " refused: not described for this family |";
        continue;
      }
      std::string cell = "**" + std::string(to_string(r->support)) + "**";
      if (!r->options.empty()) {
        cell += " (";
        for (size_t i = 0; i < r->options.size(); ++i) cell += (i ? ", `" : "`") + r->options[i] + "`";
        cell += ")";
      }
      md += " " + cell + ": " + r->note + " |";
    }
    md += "\n";
  }
  return md;
}

VisionFacts read_vision_sizes(const io::GgufFile& f, int* feed_forward) {
  VisionFacts v;
  v.layers = f.size("clip.vision.block_count", 256);
  v.width = f.size("clip.vision.embedding_length", 1 << 16);
  v.heads = f.size("clip.vision.attention.head_count", 1024);
  *feed_forward = f.size("clip.vision.feed_forward_length", 1 << 18);
  v.patch_size = f.size("clip.vision.patch_size", 1024);
  v.projector_dim = f.size("clip.vision.projection_dim", 1 << 18);
  return v;
}

std::vector<float> merge_unit_mean(std::span<const float> per_patch, int unit) {
  if (unit < 1 || per_patch.size() % static_cast<size_t>(unit) != 0) {
    throw Error("merge_unit_mean: " + std::to_string(per_patch.size()) + " patch scores do not form units of " +
                std::to_string(unit));
  }
  std::vector<float> out(per_patch.size() / static_cast<size_t>(unit));
  for (size_t t = 0; t < out.size(); ++t) {
    // float32 sum then divide, as torch's .view(T // 4, 4).mean(-1) in the official Qwen code
    float sum = 0.0f;
    for (int i = 0; i < unit; ++i) sum += per_patch[t * static_cast<size_t>(unit) + static_cast<size_t>(i)];
    out[t] = sum / static_cast<float>(unit);
  }
  return out;
}

std::vector<float> block_mean(std::span<const float> per_patch, int grid_h, int grid_w, int merge) {
  const int64_t cols = int64_t{grid_w} * merge;
  if (grid_h < 1 || grid_w < 1 || merge < 1 ||
      static_cast<int64_t>(per_patch.size()) != int64_t{grid_h} * merge * cols) {
    throw Error("block_mean: " + std::to_string(per_patch.size()) + " patch scores do not form a " +
                std::to_string(grid_h) + "x" + std::to_string(grid_w) + " grid of " + std::to_string(merge) + "x" +
                std::to_string(merge) + " blocks");
  }
  std::vector<float> out(static_cast<size_t>(grid_h) * static_cast<size_t>(grid_w));
  for (int y = 0; y < grid_h; ++y) {
    for (int x = 0; x < grid_w; ++x) {
      float sum = 0.0f;  // float32, row by row inside the block (as a 2-D average pool)
      for (int dy = 0; dy < merge; ++dy)
        for (int dx = 0; dx < merge; ++dx) sum += per_patch[static_cast<size_t>((int64_t{y} * merge + dy) * cols + int64_t{x} * merge + dx)];
      out[static_cast<size_t>(y) * static_cast<size_t>(grid_w) + static_cast<size_t>(x)] = sum / static_cast<float>(merge * merge);
    }
  }
  return out;
}

std::vector<int32_t> window_positions(int grid_h, int grid_w, int window) {
  std::vector<int32_t> pos(static_cast<size_t>(grid_h) * static_cast<size_t>(grid_w));
  if (window <= 0) {
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
    return pos;
  }
  // clip.cpp (PROJECTOR_TYPE_QWEN25VL set_input): windows row-major, tokens row-major inside each window.
  int32_t dst = 0;
  for (int y = 0; y < grid_h; y += window) {
    for (int x = 0; x < grid_w; x += window) {
      const int win_h = std::min(window, grid_h - y), win_w = std::min(window, grid_w - x);
      for (int dy = 0; dy < win_h; ++dy) {
        for (int dx = 0; dx < win_w; ++dx) pos[static_cast<size_t>((y + dy) * grid_w + (x + dx))] = dst++;
      }
    }
  }
  return pos;
}

namespace {

// The crops' rows with a single source patch, as (place in the whole image's patch raster, row), and the others.
struct PlacedRows {
  std::vector<std::pair<int64_t, int64_t>> sourced;  // sorted by place
  std::vector<int64_t> merged;
  int64_t height = 0, width = 0;  // the crop grid in patches
};

PlacedRows place_crop_rows(const std::vector<std::vector<int32_t>>& kept, const std::vector<int64_t>& rows, int columns, int side) {
  if (kept.size() != rows.size() || kept.empty() || columns < 1 || side < 1 || rows.size() % static_cast<size_t>(columns) != 0) {
    throw Error("AnyRes layout: " + std::to_string(kept.size()) + " crops' sources, " + std::to_string(rows.size()) +
                " crops' row counts, " + std::to_string(columns) + " columns of " + std::to_string(side) + " x " +
                std::to_string(side) + " patches");
  }
  PlacedRows out;
  out.width = int64_t{columns} * side;
  out.height = static_cast<int64_t>(rows.size()) / columns * side;
  const int64_t patches = int64_t{side} * side;
  int64_t first_row = 0;
  for (size_t c = 0; c < kept.size(); ++c) {
    if (static_cast<int64_t>(kept[c].size()) > rows[c]) {
      throw Error("AnyRes layout: crop " + std::to_string(c) + " names " + std::to_string(kept[c].size()) +
                  " sources for " + std::to_string(rows[c]) + " rows");
    }
    const int64_t crop_y = static_cast<int64_t>(c) / columns, crop_x = static_cast<int64_t>(c) % columns;
    for (int64_t j = 0; j < rows[c]; ++j) {
      const int64_t p = j < static_cast<int64_t>(kept[c].size()) ? kept[c][static_cast<size_t>(j)] : -1;
      if (p >= patches) throw Error("AnyRes layout: source " + std::to_string(p) + " outside the crop");
      if (p < 0) {
        out.merged.push_back(first_row + j);
      } else {
        out.sourced.emplace_back((crop_y * side + p / side) * out.width + crop_x * side + p % side, first_row + j);
      }
    }
    first_row += rows[c];
  }
  std::stable_sort(out.sourced.begin(), out.sourced.end());
  return out;
}

}  // namespace

std::vector<int64_t> anyres_spatial_order(const std::vector<std::vector<int32_t>>& kept, const std::vector<int64_t>& rows,
                                          int columns, int side) {
  const PlacedRows placed = place_crop_rows(kept, rows, columns, side);
  std::vector<int64_t> order;
  for (const auto& [place, row] : placed.sourced) order.push_back(row);
  order.insert(order.end(), placed.merged.begin(), placed.merged.end());
  return order;
}

std::vector<int64_t> anyres_unpad_order(const std::vector<std::vector<int32_t>>& kept, const std::vector<int64_t>& rows,
                                        int columns, int side, int image_width, int image_height) {
  if (image_width <= 0 || image_height <= 0) {
    throw Error("AnyRes unpad: image size " + std::to_string(image_width) + "x" + std::to_string(image_height));
  }
  const PlacedRows placed = place_crop_rows(kept, rows, columns, side);
  // unpad_image, on the crop grid (height x width patches) of an image_width x image_height picture
  int64_t y0 = 0, y1 = placed.height, x0 = 0, x1 = placed.width;
  const double original_aspect = static_cast<double>(image_width) / image_height;
  const double current_aspect = static_cast<double>(placed.width) / static_cast<double>(placed.height);
  if (original_aspect > current_aspect) {
    const double scale = static_cast<double>(placed.width) / image_width;
    const auto new_height = static_cast<int64_t>(image_height * scale);
    const int64_t padding = (placed.height - new_height) / 2;
    y0 = padding, y1 = placed.height - padding;
  } else {
    const double scale = static_cast<double>(placed.height) / image_height;
    const auto new_width = static_cast<int64_t>(image_width * scale);
    const int64_t padding = (placed.width - new_width) / 2;
    x0 = padding, x1 = placed.width - padding;
  }
  std::vector<int64_t> order;
  size_t next = 0;
  for (int64_t y = y0; y < y1; ++y) {
    for (; next < placed.sourced.size() && placed.sourced[next].first < (y + 1) * placed.width; ++next) {
      const int64_t place = placed.sourced[next].first;
      if (place / placed.width < y0) continue;  // in the padding above
      const int64_t x = place % placed.width;
      if (x >= x0 && x < x1) order.push_back(placed.sourced[next].second);
    }
    order.push_back(kAnyResNewline);  // kept whatever the row keeps (HiPrune: the newline column's mask is all ones)
  }
  order.insert(order.end(), placed.merged.begin(), placed.merged.end());
  return order;
}

std::vector<float> window_to_raster(std::span<const float> window_ordered, int grid_h, int grid_w, int window) {
  const std::vector<int32_t> pos = window_positions(grid_h, grid_w, window);
  if (window_ordered.size() != pos.size()) {
    throw Error("window_to_raster: " + std::to_string(window_ordered.size()) + " values for a " +
                std::to_string(grid_h) + "x" + std::to_string(grid_w) + " grid");
  }
  std::vector<float> raster(pos.size());
  for (size_t r = 0; r < pos.size(); ++r) raster[r] = window_ordered[static_cast<size_t>(pos[r])];
  return raster;
}

}  // namespace vtprune::family
