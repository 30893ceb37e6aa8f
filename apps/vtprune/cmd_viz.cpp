// `vtprune viz --image IMG (--mmproj F | --model DIR) --methods a,b,... --budget N --out OUT.png`: what each
// method keeps, drawn on the image the encoder actually sees (the model's own preprocessing, before
// normalisation) with its patch grid. One panel per method, side by side: kept tokens bright and outlined
// in the colour of their role (HiPrune anchors / buffers / registers, PruMerge outliers / uniform samples,
// VisionZip dominant / contextual tokens), pruned tokens dimmed, pooling windows outlined, and with
// --neighbourhood K the source tokens merged into kept token K (PruMerge, VisionZip). A legend explains
// the colours. Prompt-conditioned methods (CDPruner) also show the relevance of every patch to --prompt as a
// heat layer (CLIP's text tower from --clip-text: relevance=clip, the method's official form).
//
// Options: `--opt key=value` goes to every chosen method that has the option (an option no chosen method
// has is an error); `--opt method:key=value` to that method only.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <thread>

#include "commands.h"
#include "vtprune/draw.h"
#include "vtprune/family.h"
#include "vtprune/gguf_file.h"
#include "vtprune/pipeline.h"
#include "vtprune/text.h"
#include "vtprune/vision.h"

namespace vtprune::cli {
namespace {

struct VizArgs {
  std::string image, mmproj, model, llm, out;
  std::vector<std::string> methods;
  std::string budget = "25%";
  std::vector<std::string> options;
  std::string prompt, clip_text;  // CDPruner's relevance: the question and CLIP's text tower
  int neighbourhood = -1;
  int threads = 0;
  int panel = 448;
};

struct MethodRun {
  std::string name;
  std::unique_ptr<Reducer> reducer;
  Needs needs;
  std::vector<Reduction> tiles;  // one per encoder input: the image, or LLaVA-NeXT's overview then its crops
  std::vector<std::array<int, 2>> panel_at;  // where each tile's panel landed in the output
};

// ---- colours: one per role, distinct on a photo and on the dimmed areas around it
draw::Color role_color(TokenRole role) {
  switch (role) {
    case TokenRole::Kept: return {70, 220, 70, 255};
    case TokenRole::Anchor: return {240, 40, 40, 255};
    case TokenRole::Buffer: return {255, 200, 0, 255};
    case TokenRole::Register: return {0, 190, 255, 255};
    case TokenRole::Cls: return {255, 255, 255, 255};
    case TokenRole::Dominant: return {255, 110, 0, 255};
    case TokenRole::Contextual: return {175, 120, 255, 255};
    case TokenRole::Outlier: return {255, 60, 170, 255};
    case TokenRole::Uniform: return {110, 255, 200, 255};
    case TokenRole::Pooled: return {255, 255, 255, 255};
    case TokenRole::Summary: return {200, 200, 200, 255};
  }
  return {255, 255, 255, 255};
}

constexpr draw::Color kInk{33, 33, 33, 255};
constexpr draw::Color kMuted{95, 95, 95, 255};
constexpr draw::Color kDim{12, 14, 22, 165};  // over pruned cells
constexpr draw::Color kHeat{255, 40, 200, 255};  // prompt relevance (alpha scaled per patch)

// "a:b=c" -> method a, "b=c"; "b=c" -> every method that has option b.
std::map<std::string, std::vector<std::string>> route_options(const std::vector<std::string>& methods,
                                                               const std::vector<std::string>& options) {
  std::map<std::string, std::vector<std::string>> routed;
  for (const auto& m : methods) routed[m];
  for (const std::string& opt : options) {
    if (const std::optional<MethodSpec> to = parse_routed_option(opt)) {
      if (!routed.count(to->name)) throw Error("viz: --opt " + opt + " names method '" + to->name + "', which is not in --methods");
      routed[to->name].push_back(to->options.front());
      continue;
    }
    const std::string key = opt.substr(0, opt.find('='));
    bool used = false;
    for (const auto& m : methods) {
      const MethodInfo& info = method_info(m);
      if (std::any_of(info.options.begin(), info.options.end(), [&](const OptionSpec& s) { return s.name == key; })) {
        routed[m].push_back(opt);
        used = true;
      }
    }
    if (!used) throw Error("viz: no chosen method has option '" + key + "' (--opt " + opt + ")");
  }
  return routed;
}

// Patch index of a kept entry (VisionZip reports sequence positions, 0 = CLS), or nullopt for CLS.
std::optional<int> patch_of(const Reduction& r, const EncoderInfo& info, int32_t index) {
  const int p = r.sequence_indices ? index - (info.has_cls ? 1 : 0) : index;
  if (p < 0 || p >= info.grid.size()) return std::nullopt;
  return p;
}

struct PanelLayout {
  int cell = 32;   // pixels per patch
  int size_w = 0;  // image panel width / height
  int size_h = 0;
};

// The image panel of one method: the preprocessed image, its grid, kept / pruned / roles / windows.
draw::Canvas draw_panel(const vision::RgbImage& pixels, const EncoderInfo& info, const Reduction& r,
                        const PanelLayout& layout, int neighbourhood) {
  const Grid grid = info.grid;
  const int cell = layout.cell;
  draw::Canvas panel = draw::Canvas::from_image(vision::resize_bicubic(pixels, layout.size_w, layout.size_h));
  const auto cell_x = [&](int p) { return static_cast<double>((p % grid.w) * cell); };
  const auto cell_y = [&](int p) { return static_cast<double>((p / grid.w) * cell); };

  const bool pooled = std::any_of(r.roles.begin(), r.roles.end(), [](TokenRole t) { return t == TokenRole::Pooled; });
  const size_t single = r.kept.size();  // rows with one source come first, in `kept` order
  std::vector<int> role_of(static_cast<size_t>(grid.size()), -1);
  for (size_t i = 0; i < single && i < r.roles.size(); ++i) {
    if (auto p = patch_of(r, info, r.kept[i])) role_of[static_cast<size_t>(*p)] = static_cast<int>(r.roles[i]);
  }

  // Prompt relevance (CDPruner) as heat under everything else: min-max scaled per panel, transparent at the least
  // relevant patch, strongest at the most relevant one.
  if (r.relevance.size() == static_cast<size_t>(grid.size())) {
    const auto [lo, hi] = std::minmax_element(r.relevance.begin(), r.relevance.end());
    const double span = *hi - *lo;
    for (int p = 0; p < grid.size(); ++p) {
      const double t = span > 0 ? (r.relevance[static_cast<size_t>(p)] - *lo) / span : 1.0;
      panel.fill_rect(cell_x(p), cell_y(p), cell, cell, {kHeat.r, kHeat.g, kHeat.b, static_cast<uint8_t>(std::lround(170 * t))});
    }
  }
  if (!pooled) {
    for (int p = 0; p < grid.size(); ++p) {
      if (role_of[static_cast<size_t>(p)] < 0) panel.fill_rect(cell_x(p), cell_y(p), cell, cell, kDim);
    }
  }
  // The patch grid, faint enough not to compete with the outlines.
  for (int c = 1; c < grid.w; ++c) panel.fill_rect(c * cell - 0.5, 0, 1, layout.size_h, {255, 255, 255, 55});
  for (int c = 1; c < grid.h; ++c) panel.fill_rect(0, c * cell - 0.5, layout.size_w, 1, {255, 255, 255, 55});

  // The merge neighbourhood of kept[neighbourhood]: its members tinted in the token's colour.
  std::optional<int> focus;
  if (!pooled && neighbourhood >= 0 && static_cast<size_t>(neighbourhood) < single &&
      static_cast<size_t>(neighbourhood) < r.groups.size()) {
    const draw::Color c = role_color(r.roles[static_cast<size_t>(neighbourhood)]);
    focus = patch_of(r, info, r.kept[static_cast<size_t>(neighbourhood)]);
    for (int32_t member : r.groups[static_cast<size_t>(neighbourhood)]) {
      const auto p = patch_of(r, info, member);
      if (!p || p == focus) continue;
      panel.fill_rect(cell_x(*p), cell_y(*p), cell, cell, {c.r, c.g, c.b, 95});
      panel.outline_rect(cell_x(*p) + 1, cell_y(*p) + 1, cell - 2, cell - 2, {c.r, c.g, c.b, 210}, 1.0);
    }
  }

  const double stroke = std::max(1.5, cell / 11.0);
  if (pooled) {
    // Each window outlined; windows tile the grid, so nothing is dimmed.
    for (size_t i = 0; i < r.groups.size() && i < r.roles.size(); ++i) {
      int r0 = grid.h, c0 = grid.w, r1 = -1, c1 = -1;
      for (int32_t member : r.groups[i]) {
        const auto p = patch_of(r, info, member);
        if (!p) continue;
        r0 = std::min(r0, *p / grid.w), r1 = std::max(r1, *p / grid.w);
        c0 = std::min(c0, *p % grid.w), c1 = std::max(c1, *p % grid.w);
      }
      if (r1 < 0) continue;
      panel.outline_rect(c0 * cell + 1.0, r0 * cell + 1.0, (c1 - c0 + 1) * cell - 2.0, (r1 - r0 + 1) * cell - 2.0,
                         {0, 0, 0, 120}, stroke + 1.0);
      panel.outline_rect(c0 * cell + 1.0, r0 * cell + 1.0, (c1 - c0 + 1) * cell - 2.0, (r1 - r0 + 1) * cell - 2.0,
                         role_color(TokenRole::Pooled), stroke * 0.6);
    }
  } else {
    for (int p = 0; p < grid.size(); ++p) {
      const int role = role_of[static_cast<size_t>(p)];
      if (role < 0) continue;
      // A dark rim under the coloured outline keeps it visible on bright and dark image content alike.
      panel.outline_rect(cell_x(p) + 0.5, cell_y(p) + 0.5, cell - 1.0, cell - 1.0, {0, 0, 0, 140}, stroke + 1.0);
      panel.outline_rect(cell_x(p) + 1.0, cell_y(p) + 1.0, cell - 2.0, cell - 2.0,
                         role_color(static_cast<TokenRole>(role)), stroke);
    }
    if (focus) {
      const double x = cell_x(*focus), y = cell_y(*focus);
      panel.outline_rect(x - 2, y - 2, cell + 4.0, cell + 4.0, {255, 255, 255, 255}, 2.0);
      panel.outline_rect(x - 4, y - 4, cell + 8.0, cell + 8.0, {0, 0, 0, 200}, 2.0);
    }
  }
  return panel;
}

std::string role_counts(const Reduction& r) {
  std::map<TokenRole, int> counts;
  for (TokenRole t : r.roles) ++counts[t];
  std::string out;
  for (const auto& [role, n] : counts) {
    out += (out.empty() ? "" : "  \xC2\xB7  ") + std::to_string(n) + " " + std::string(to_string(role));
  }
  return out;
}

// What viz draws: the inputs the encoder saw (one image, or LLaVA-NeXT's overview and crops) and each method's
// reduction of each.
struct VizScene {
  std::string model_name;
  EncoderInfo info;  // the token grid every tile is pruned on
  std::vector<vision::RgbImage> tiles;
  int crop_columns = 0, crop_rows = 0;
  std::vector<MethodRun> runs;
};

// vtprune's own encoder: timm ViT/DeiT, LLaVA-1.5, LLaVA-NeXT (its AnyRes tiles).
VizScene own_scene(const VizArgs& args, int threads, const Budget& budget) {
  VizScene scene;
  auto model = args.mmproj.empty() ? vision::VisionModel::from_safetensors_timm(args.model)
                                   : vision::VisionModel::from_mmproj(args.mmproj);
  const EncoderInfo info = model.info();
  scene.info = info;
  const std::string model_name = std::filesystem::path(args.mmproj.empty() ? args.model : args.mmproj).filename().string();
  scene.model_name = model_name;

  // Every method is checked against the model before anything is computed, so the error names it.
  const auto routed = route_options(args.methods, args.options);
  std::vector<MethodRun>& runs = scene.runs;
  Needs merged;
  for (const std::string& name : args.methods) {
    MethodRun run;
    run.name = name;
    run.reducer = make_reducer(name, routed.at(name));
    try {
      run.needs = run.reducer->needs(info);
    } catch (const Error& e) {
      throw Error("viz: method " + name + " cannot run on " + model_name + ": " + e.what());
    }
    for (const TapRequest& tap : run.needs.taps) {
      if (tap.layer < 0 || tap.layer >= model.stored_layers()) {
        throw Error("viz: method " + name + " needs layer " + std::to_string(tap.layer) + ", but " + model_name +
                    " stores layers 0.." + std::to_string(model.stored_layers() - 1) +
                    " (choose another layer with --opt " + name + ":<layer option>=...)");
      }
    }
    if (run.needs.projected && model.projector_dim() == 0) {
      throw Error("viz: method " + name + " needs projected embeddings, but " + model_name +
                  " has no projector" + (name == "divprune" ? " (use --opt divprune:space=features)" : ""));
    }
    merged.merge(run.needs);
    runs.push_back(std::move(run));
  }

  // What the encoder sees: the model's preprocessing of the image, or (LLaVA-NeXT) the AnyRes overview and crops,
  // each pruned on its own grid with the image's budget split over them (as the pipeline does).
  const vision::RgbImage source = vision::load_image(args.image);
  const vision::Preprocess& recipe = model.preprocess_recipe();
  std::vector<vision::RgbImage>& tiles = scene.tiles;
  if (recipe.anyres_pinpoints.empty()) {
    tiles.push_back(vision::prepare_pixels(source, recipe));
  } else {
    vision::AnyResTiles split = vision::anyres_tiles(source, recipe.anyres_pinpoints, recipe.image_size);
    tiles = std::move(split.tiles);
    scene.crop_columns = split.columns, scene.crop_rows = split.rows;
  }
  const auto n = static_cast<int64_t>(info.grid.size());  // tokens per tile
  const auto n_all = n * static_cast<int64_t>(tiles.size());
  std::vector<Budget> budgets(tiles.size(), budget);
  if (tiles.size() > 1 && budget.kind != Budget::Kind::All) {
    const std::vector<int64_t> shares = pipeline::split_budget(budget.resolve(n_all), std::vector<int64_t>(tiles.size(), n));
    for (size_t k = 0; k < tiles.size(); ++k) budgets[k] = Budget::tokens(shares[k]);
  }
  std::optional<text::ClipTextModel> clip;
  text::Embeddings text_rows;
  if (merged.prompt_embeddings) {
    throw Error("viz: relevance=llm needs the LLM's token embeddings, which viz does not load: use relevance=clip with "
                "--clip-text DIR --prompt TEXT, or relevance=none");
  }
  if (merged.text_embeds || merged.image_embeds) {
    if (args.clip_text.empty() || args.prompt.empty()) {
      throw Error("viz: cdpruner's relevance=clip needs --clip-text DIR (a Hugging Face CLIP folder) and --prompt TEXT; "
                  "or choose --opt cdpruner:relevance=none");
    }
    clip.emplace(text::ClipTextModel::load(args.clip_text));
    text_rows = clip->text_embeds(args.prompt, threads);
  }
  for (size_t k = 0; k < tiles.size(); ++k) {
    const vision::EncoderResult encoded = model.encode(vision::normalize(tiles[k], recipe), merged, {.threads = threads});
    EncoderOutput view = encoded.view();
    // CDPruner's official relevance: CLIP text_embeds of the prompt against visual_projection(post_layernorm(the
    // patch features)), as the pipeline computes them.
    text::Embeddings image_rows;
    if (clip) {
      image_rows = clip->image_embeds(view.features, threads);
      view.text_embeds = text_rows.view();
      view.image_embeds = image_rows.view();
    }
    for (MethodRun& run : runs) {
      try {
        run.tiles.push_back(run.reducer->reduce(view, budgets[k]));
      } catch (const Error& e) {
        throw Error("viz: method " + run.name + " failed on " + model_name + (tiles.size() > 1 ? ", tile " + std::to_string(k) : "") +
                    ": " + e.what());
      }
    }
  }
  return scene;
}

// The libmtmd families (Gemma 3's pooled 16 x 16 grid, Qwen2.5-VL's merged grid): libmtmd's encoder needs the
// language model, so the scene comes from the pipeline itself (the family's method options, its taps, a prefill of
// the prompt); each panel is the image stretched to the token grid's shape, as libmtmd's resize sees it.
VizScene mtmd_scene(const VizArgs& args, const family::Family& fam, int threads, const Budget& budget) {
  if (args.llm.empty()) {
    throw InputError("viz: " + args.mmproj + " is a " + fam.name + " file, encoded by libmtmd, which needs the language "
                     "model too: give --llm FILE (its LLM GGUF)");
  }
  VizScene scene;
  scene.model_name = std::filesystem::path(args.mmproj).filename().string();
  pipeline::Vlm vlm(pipeline::VlmParams{.llm_path = args.llm, .mmproj_path = args.mmproj, .threads = threads});
  const auto routed = route_options(args.methods, args.options);
  const std::vector<uint8_t> bytes = read_image_file(args.image, vision::ImageLimits{}.max_file_bytes);
  scene.tiles.push_back(vision::decode_image(bytes, args.image));
  for (const std::string& name : args.methods) {
    pipeline::Request request;
    request.images = {bytes};
    request.image_names = {args.image};
    request.prompt = args.prompt.empty() ? "Describe the image." : args.prompt;
    request.method = name;
    request.options = routed.at(name);
    request.budget = budget;
    request.sampling.max_tokens = 0;  // the reduction is what is drawn: prefill only
    pipeline::Result result = vlm.run(request);
    if (result.images.size() != 1) {
      throw InputError("viz: " + fam.name + " splits this image into " + std::to_string(result.images.size()) +
                       " tiles; viz draws one token grid per image for the libmtmd families (use `vtprune run --json` for "
                       "each tile's kept indices)");
    }
    MethodRun run;
    run.name = name;
    run.tiles.push_back(std::move(result.images.front().reduction));
    scene.info.grid = result.images.front().grid;
    scene.runs.push_back(std::move(run));
  }
  scene.info.has_cls = false;
  return scene;
}

int run_viz(const VizArgs& args) {
  if (args.mmproj.empty() == args.model.empty()) throw Error("viz: give exactly one of --mmproj FILE or --model DIR");
  if (args.methods.empty()) throw Error("viz: --methods is empty");
  const int threads = args.threads > 0 ? args.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const Budget budget = Budget::parse(args.budget);
  const family::Family* fam = args.mmproj.empty() ? nullptr : &family::detect(io::GgufFile(args.mmproj, "mmproj"));
  VizScene scene = fam != nullptr && fam->encoder == family::Encoder::Mtmd ? mtmd_scene(args, *fam, threads, budget)
                                                                            : own_scene(args, threads, budget);
  const EncoderInfo& info = scene.info;
  const std::vector<vision::RgbImage>& tiles = scene.tiles;
  std::vector<MethodRun>& runs = scene.runs;
  const int crop_columns = scene.crop_columns, crop_rows = scene.crop_rows;
  const std::string& model_name = scene.model_name;
  const auto n = static_cast<int64_t>(info.grid.size());  // tokens per tile
  const auto n_all = n * static_cast<int64_t>(tiles.size());

  // ---- layout: panels of whole-pixel cells in up to four columns, titles above, role counts below
  const Grid grid = info.grid;
  PanelLayout layout;
  layout.cell = std::max(4, static_cast<int>(std::lround(static_cast<double>(args.panel) / std::max(grid.w, grid.h))));
  layout.size_w = layout.cell * grid.w;
  layout.size_h = layout.cell * grid.h;
  // A method's picture: its one panel, or the overview's panel and, beside it, the crops' panels in their grid.
  const int tile_gap = 12;
  const int method_w = tiles.size() > 1 ? layout.size_w + tile_gap + crop_columns * layout.size_w : layout.size_w;
  const int method_h = tiles.size() > 1 ? std::max(1, crop_rows) * layout.size_h : layout.size_h;
  const int columns = tiles.size() > 1 ? 1 : std::min<int>(4, static_cast<int>(runs.size()));
  const int rows = (static_cast<int>(runs.size()) + columns - 1) / columns;
  const int gap = 24, margin = 24, header = 62, title_h = 54, footer_h = 30;
  const std::string tiles_text = tiles.size() > 1 ? " on each of " + std::to_string(tiles.size()) + " AnyRes tiles (the overview + " +
                                                        std::to_string(crop_columns) + "\xC3\x97" + std::to_string(crop_rows) + " crops)"
                                                  : "";
  const std::string subtitle = model_name + ": " + std::to_string(grid.w) + "\xC3\x97" + std::to_string(grid.h) + " = " +
                               std::to_string(n) + " patch tokens" + tiles_text + ", budget " + budget.to_string();
  const int width = std::max({margin * 2 + columns * method_w + (columns - 1) * gap, 640,
                              margin * 2 + static_cast<int>(std::ceil(draw::Canvas(1, 1).text_width(subtitle, 14)))});
  const auto all_roles = [](const MethodRun& run) {
    Reduction r;
    for (const Reduction& t : run.tiles) r.roles.insert(r.roles.end(), t.roles.begin(), t.roles.end());
    return r;
  };

  // ---- legend entries: the roles drawn, pruned, pooling windows, merge neighbourhood
  std::map<TokenRole, bool> roles_shown;
  bool any_pruned = false, any_pooled = false, neighbourhood_shown = false;
  for (const MethodRun& run : runs) {
    for (const Reduction& r : run.tiles) {
      const bool pooled = std::any_of(r.roles.begin(), r.roles.end(), [](TokenRole t) { return t == TokenRole::Pooled; });
      for (TokenRole t : r.roles) roles_shown[t] = true;
      any_pooled |= pooled;
      any_pruned |= !pooled && r.kept.size() < static_cast<size_t>(n);
      neighbourhood_shown |= !pooled && args.neighbourhood >= 0 && static_cast<size_t>(args.neighbourhood) < r.kept.size() &&
                             static_cast<size_t>(args.neighbourhood) < r.groups.size() &&
                             r.groups[static_cast<size_t>(args.neighbourhood)].size() > 1;
    }
  }
  struct LegendEntry {
    std::string label;
    std::function<void(draw::Canvas&, double x, double y)> swatch;  // a 16 px square at (x, y)
  };
  std::vector<LegendEntry> legend;
  for (const auto& [role, shown] : roles_shown) {
    if (role == TokenRole::Cls || role == TokenRole::Summary || role == TokenRole::Pooled) continue;
    legend.push_back({std::string(to_string(role)), [c = role_color(role)](draw::Canvas& cv, double x, double y) {
                        cv.fill_rect(x, y, 16, 16, {120, 120, 120, 255});
                        cv.outline_rect(x, y, 16, 16, c, 3);
                      }});
  }
  if (any_pooled) {
    legend.push_back({"pooling window", [](draw::Canvas& cv, double x, double y) {
                        cv.fill_rect(x, y, 16, 16, {120, 120, 120, 255});
                        cv.outline_rect(x, y, 16, 16, role_color(TokenRole::Pooled), 2);
                      }});
  }
  if (any_pruned) {
    legend.push_back({"pruned (dimmed)", [](draw::Canvas& cv, double x, double y) {
                        cv.fill_rect(x, y, 16, 16, {150, 150, 150, 255});
                        cv.fill_rect(x, y, 16, 16, kDim);
                      }});
  }
  if (std::any_of(runs.begin(), runs.end(), [](const MethodRun& run) { return !run.tiles.front().relevance.empty(); })) {
    legend.push_back({"relevance to the prompt (heat)", [](draw::Canvas& cv, double x, double y) {
                        cv.fill_rect(x, y, 16, 16, {120, 120, 120, 255});
                        cv.fill_rect(x, y, 16, 16, {kHeat.r, kHeat.g, kHeat.b, 170});
                      }});
  }
  if (neighbourhood_shown) {
    legend.push_back({"merged into kept token #" + std::to_string(args.neighbourhood) + " (tinted in its colour)",
                      [](draw::Canvas& cv, double x, double y) {
                        cv.fill_rect(x, y, 16, 16, {60, 60, 60, 255});
                        cv.fill_rect(x, y, 16, 16, {255, 255, 255, 95});
                        cv.outline_rect(x + 1, y + 1, 14, 14, {255, 255, 255, 210}, 1);
                      }});
  }
  // Entries flow left to right and wrap at the canvas width.
  constexpr double kLegendText = 14, kLegendRow = 26;
  std::vector<std::pair<double, int>> legend_at;  // x and row of each entry
  {
    const draw::Canvas measure(1, 1);
    double lx = margin;
    int row = 0;
    for (const LegendEntry& e : legend) {
      const double w = 22 + measure.text_width(e.label, kLegendText);
      if (lx > margin && lx + w > width - margin) lx = margin, ++row;
      legend_at.emplace_back(lx, row);
      lx += w + 22;
    }
  }
  const int legend_rows = legend_at.empty() ? 0 : legend_at.back().second + 1;
  const int legend_h = static_cast<int>(legend_rows * kLegendRow) + 8;
  const int height = header + rows * (title_h + method_h + footer_h) + (rows - 1) * gap / 2 + legend_h + margin;
  draw::Canvas canvas(width, height);

  canvas.text(margin, 34, "vtprune viz \xE2\x80\x94 " + std::filesystem::path(args.image).filename().string(), 22, kInk);
  canvas.text(margin, 54, subtitle, 14, kMuted);
  const int x_start = (width - (columns * method_w + (columns - 1) * gap)) / 2;
  for (size_t i = 0; i < runs.size(); ++i) {
    const int col = static_cast<int>(i) % columns, row = static_cast<int>(i) / columns;
    const int x = x_start + col * (method_w + gap);
    const int y = header + row * (title_h + method_h + footer_h + gap / 2);
    const Reduction counted = all_roles(runs[i]);
    const auto rows_out = static_cast<int64_t>(counted.roles.size());
    canvas.text(x, y + 24, runs[i].name, 20, kInk);
    canvas.text(x, y + 45,
                std::to_string(rows_out) + " of " + std::to_string(n_all) + " tokens (" +
                    std::to_string(static_cast<int>(std::lround(100.0 * rows_out / std::max<int64_t>(1, n_all)))) + "%)",
                14, kMuted);
    for (size_t k = 0; k < tiles.size(); ++k) {
      // the overview at the left; crop c at (c % columns, c / columns) of the crop grid beside it
      int px = x, py = y + title_h;
      if (k > 0) {
        const int c = static_cast<int>(k) - 1;
        px += layout.size_w + tile_gap + (c % crop_columns) * layout.size_w;
        py += (c / crop_columns) * layout.size_h;
      }
      canvas.blit(draw_panel(tiles[k], info, runs[i].tiles[k], layout, args.neighbourhood), px, py);
      runs[i].panel_at.push_back({px, py});
    }
    canvas.text(x, y + title_h + method_h + 20, role_counts(counted), 13, kMuted);
  }
  const double legend_top = height - margin - legend_h + 8;
  for (size_t i = 0; i < legend.size(); ++i) {
    const auto [lx, row] = legend_at[i];
    const double y = legend_top + row * kLegendRow;
    legend[i].swatch(canvas, lx, y);
    canvas.text(lx + 22, y + 13, legend[i].label, kLegendText, kInk);
  }

  canvas.save_png(args.out);
  std::printf("wrote %s (%dx%d)\n", args.out.c_str(), canvas.width(), canvas.height());
  // Per method (and tile): counts, where its panel is (cells of `cell` pixels), and the kept patches, so scripts
  // and tests can relate the picture to the reduction.
  for (const MethodRun& run : runs) {
    for (size_t k = 0; k < run.tiles.size(); ++k) {
      const Reduction& r = run.tiles[k];
      const std::string who = run.tiles.size() > 1 ? run.name + " tile " + std::to_string(k) : run.name;
      std::printf("%s: %zu of %lld tokens (%s); panel at %d,%d, %dx%d cells of %d px\n", who.c_str(), r.roles.size(),
                  static_cast<long long>(n), role_counts(r).c_str(), run.panel_at[k][0], run.panel_at[k][1], grid.w, grid.h,
                  layout.cell);
      std::string kept;
      for (int32_t index : r.kept) {
        if (const auto p = patch_of(r, info, index)) kept += " " + std::to_string(*p);
      }
      std::printf("  kept patches:%s\n", kept.c_str());
    }
  }
  return 0;
}

}  // namespace

void add_viz(CLI::App& app, Action& action) {
  auto args = std::make_shared<VizArgs>();
  CLI::App* cmd = app.add_subcommand("viz", "Draw what each method keeps on the preprocessed image (PNG)");
  cmd->add_option("--image", args->image, "input image (JPEG / PNG / BMP)")->required();
  cmd->add_option("--mmproj", args->mmproj, "llama.cpp mmproj GGUF (LLaVA-1.5 or LLaVA-NeXT vision tower)");
  cmd->add_option("--model", args->model, "timm ViT/DeiT: folder with model.safetensors (+ config.json)");
  cmd->add_option("--llm", args->llm, "the LLM GGUF of a libmtmd family's mmproj (Gemma 3, Qwen2.5-VL): libmtmd needs it");
  cmd->add_option("--methods", args->methods, "methods, comma-separated (see `vtprune methods`)")
      ->required()
      ->delimiter(',');
  cmd->add_option("--budget", args->budget, "token budget: 64 | 0.25 | 25% | all")->capture_default_str();
  cmd->add_option("--opt", args->options, "method option key=value (to every method that has it) or method:key=value");
  cmd->add_option("-p,--prompt", args->prompt, "the question, for prompt-conditioned methods (cdpruner)");
  cmd->add_option("--clip-text", args->clip_text,
                  "Hugging Face CLIP folder (text tower, visual_projection, vocab.json, merges.txt) for cdpruner's relevance");
  cmd->add_option("--neighbourhood", args->neighbourhood,
                  "show the merge neighbourhood of this kept token (index into the kept list; PruMerge, VisionZip)");
  cmd->add_option("--threads,-t", args->threads, "CPU threads (default: all cores)");
  cmd->add_option("--panel", args->panel, "approximate size of each image panel in pixels")
      ->check(CLI::Range(64, 2048))
      ->capture_default_str();
  cmd->add_option("--out", args->out, "output PNG")->required();
  cmd->callback([args, &action] { action = [args] { return run_viz(*args); }; });
}

}  // namespace vtprune::cli
