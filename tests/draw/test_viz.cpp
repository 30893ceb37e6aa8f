// `vtprune viz` end to end on a generated tiny LLaVA-shaped model: the PNG is written at the size the
// layout implies, kept cells keep the image's brightness while pruned cells are dimmed, and a method that
// cannot run on the model is one clear error naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <array>
#include <regex>
#include <sstream>

#include "test_support.h"
#include "vtprune/reduce.h"
#include "vtprune/vision.h"

namespace vtprune {
namespace {

namespace fs = std::filesystem;

struct PanelInfo {
  std::string method;
  int x = 0, y = 0, grid_w = 0, grid_h = 0, cell = 0;
  std::vector<int> kept;
};

// Parses viz's per-method lines: "NAME: ... panel at X,Y, WxH cells of C px" then "  kept patches: ...".
std::vector<PanelInfo> parse_panels(const std::string& output) {
  std::vector<PanelInfo> panels;
  std::istringstream lines(output);
  std::string line;
  const std::regex panel_line(R"(^(\w+): .*panel at (\d+),(\d+), (\d+)x(\d+) cells of (\d+) px$)");
  while (std::getline(lines, line)) {
    std::smatch m;
    if (std::regex_match(line, m, panel_line)) {
      panels.push_back({m[1], std::stoi(m[2]), std::stoi(m[3]), std::stoi(m[4]), std::stoi(m[5]), std::stoi(m[6]), {}});
    } else if (line.rfind("  kept patches:", 0) == 0 && !panels.empty()) {
      std::istringstream ids(line.substr(15));
      for (int p; ids >> p;) panels.back().kept.push_back(p);
    }
  }
  return panels;
}

class Viz : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_dir_ = new fs::path(test::temp_dir("viz-model"));
    std::string out;
    ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape tiny --out " +
                                    model_dir_->string(), &out), 0) << out;
  }
  static void TearDownTestSuite() {
    delete model_dir_;
    model_dir_ = nullptr;
  }
  static std::string viz(const std::string& args, int* rc) {
    std::string out;
    *rc = test::run_command(test::vtprune_binary().string() + " viz --mmproj " + (*model_dir_ / "mmproj.gguf").string() +
                                " --image " + (*model_dir_ / "image.png").string() + " --threads 1 " + args,
                            &out);
    return out;
  }
  static fs::path* model_dir_;
};
fs::path* Viz::model_dir_ = nullptr;

TEST_F(Viz, DrawsKeptUntouchedAndPrunedDimmed) {
  const fs::path png = test::temp_dir("viz") / "viz.png";
  int rc = 0;
  const std::string out = viz("--methods hiprune,prumerge_plus,pool,visionzip --budget 64 --opt layer=-2 "
                              "--panel 240 --out " + png.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const vision::RgbImage img = vision::load_image(png);
  const auto panels = parse_panels(out);
  ASSERT_EQ(panels.size(), 4u) << out;
  // Four panels of 24 x 10-px cells side by side: the canvas holds them all.
  for (const auto& p : panels) {
    EXPECT_EQ(p.grid_w, 24);
    EXPECT_EQ(p.cell, 10);
    EXPECT_LE(p.x + p.grid_w * p.cell, img.width) << p.method;
    EXPECT_LE(p.y + p.grid_h * p.cell, img.height) << p.method;
  }
  EXPECT_GE(img.width, 4 * 240);
  EXPECT_LT(img.height, 600);

  // What each panel shows before any marking: the model's preprocessing (a square 336 px image is left as
  // it is by LLaVA's pad-to-square), resized to the panel.
  vision::Preprocess llava;
  llava.kind = vision::Preprocess::Kind::LlavaPadSquare;
  llava.image_size = 336;
  const vision::RgbImage reference =
      vision::resize_bicubic(vision::prepare_pixels(vision::load_image(*model_dir_ / "image.png"), llava), 240, 240);
  const auto luminance = [](const vision::RgbImage& im, int x, int y) {
    return 0.299 * im.at(x, y, 0) + 0.587 * im.at(x, y, 1) + 0.114 * im.at(x, y, 2);
  };
  for (const auto& p : panels) {
    if (p.method == "pool") continue;  // pooling keeps every patch in some window: nothing is dimmed
    ASSERT_FALSE(p.kept.empty()) << p.method;
    std::vector<bool> kept(static_cast<size_t>(p.grid_w * p.grid_h), false);
    for (int k : p.kept) kept[static_cast<size_t>(k)] = true;
    int kept_ok = 0, pruned_ok = 0, kept_n = 0, pruned_n = 0;
    for (int c = 0; c < p.grid_w * p.grid_h; ++c) {
      // The cell's centre pixel lies inside any outline: untouched when kept, dimmed when pruned.
      const int rx = (c % p.grid_w) * p.cell + p.cell / 2, ry = (c / p.grid_w) * p.cell + p.cell / 2;
      const double shown = luminance(img, p.x + rx, p.y + ry), original = luminance(reference, rx, ry);
      if (kept[static_cast<size_t>(c)]) {
        ++kept_n;
        kept_ok += std::abs(shown - original) <= 3.0;
      } else {
        ++pruned_n;
        pruned_ok += shown <= 0.5 * original + 3.0;
      }
    }
    EXPECT_EQ(kept_ok, kept_n) << p.method << ": kept cells should show the image unchanged";
    EXPECT_EQ(pruned_ok, pruned_n) << p.method << ": pruned cells should be dimmed";
    EXPECT_GT(pruned_n, kept_n) << p.method;
  }
}

// LLaVA-NeXT: the overview and the AnyRes crops, each pruned on its own grid with the image's budget split over
// them, drawn side by side (overview, then the crop grid); kept cells show the tile's pixels, pruned ones are dimmed.
TEST(VizAnyRes, DrawsTheOverviewAndTheCropsEachWithItsShareOfTheBudget) {
  const fs::path dir = test::temp_dir("viz-next");
  std::string out;
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --mmproj-only --shape llava-next --out " +
                                  dir.string(), &out), 0) << out;
  const fs::path png = dir / "viz.png";
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " viz --mmproj " + (dir / "mmproj.gguf").string() + " --image " +
                                  (dir / "image.png").string() + " --threads 1 --methods hiprune --budget 0.112 --panel 240 --out " +
                                  png.string(), &out), 0) << out;
  std::vector<std::array<int, 3>> tiles;  // x, y, kept count
  std::vector<std::vector<int>> kept;
  std::istringstream lines(out);
  const std::regex tile_line(R"(^hiprune tile (\d): (\d+) of 576 tokens .*panel at (\d+),(\d+), 24x24 cells of 10 px$)");
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_match(line, m, tile_line)) {
      EXPECT_EQ(std::stoi(m[1]), static_cast<int>(tiles.size()));
      tiles.push_back({std::stoi(m[3]), std::stoi(m[4]), std::stoi(m[2])});
    } else if (line.rfind("  kept patches:", 0) == 0) {
      std::istringstream ids(line.substr(15));
      kept.emplace_back();
      for (int p; ids >> p;) kept.back().push_back(p);
    }
  }
  ASSERT_EQ(tiles.size(), 3u) << out;  // 640 x 320 -> 672 x 336: the overview + 2 x 1 crops
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(tiles[0][2] + tiles[1][2] + tiles[2][2], Budget::fraction(0.112).resolve(3 * 576));
  EXPECT_EQ(tiles[1][0], tiles[0][0] + 240 + 12) << "the crops sit beside the overview";
  EXPECT_EQ(tiles[2][0], tiles[1][0] + 240);
  EXPECT_EQ(tiles[2][1], tiles[1][1]);
  const vision::RgbImage img = vision::load_image(png);
  const vision::AnyResTiles reference = vision::anyres_tiles(vision::load_image(dir / "image.png"), vision::llava_next_pinpoints(), 336);
  const auto luminance = [](const vision::RgbImage& im, int x, int y) {
    return 0.299 * im.at(x, y, 0) + 0.587 * im.at(x, y, 1) + 0.114 * im.at(x, y, 2);
  };
  for (size_t k = 0; k < 3; ++k) {
    const vision::RgbImage shown_tile = vision::resize_bicubic(reference.tiles[k], 240, 240);
    std::vector<bool> is_kept(576, false);
    for (int p : kept[k]) is_kept[static_cast<size_t>(p)] = true;
    int kept_ok = 0, pruned_ok = 0, kept_n = 0, pruned_n = 0;
    for (int c = 0; c < 576; ++c) {
      const int rx = (c % 24) * 10 + 5, ry = (c / 24) * 10 + 5;
      const double shown = luminance(img, tiles[k][0] + rx, tiles[k][1] + ry), original = luminance(shown_tile, rx, ry);
      if (is_kept[static_cast<size_t>(c)]) {
        ++kept_n, kept_ok += std::abs(shown - original) <= 3.0;
      } else {
        ++pruned_n, pruned_ok += shown <= 0.5 * original + 3.0;
      }
    }
    EXPECT_EQ(kept_ok, kept_n) << "tile " << k;
    EXPECT_EQ(pruned_ok, pruned_n) << "tile " << k;
  }
}

// Gemma 3 (libmtmd): viz needs the LLM too and draws the pooled token grid (the tiny pair: 448 px / 14 px = 32 x 32
// patches, pooled 4 x 4 -> 8 x 8 tokens) on the image squashed to that square, as libmtmd's resize sees it.
TEST(VizMtmd, DrawsGemmasPooledGridWithTheLlm) {
  const fs::path dir = test::temp_dir("viz-gemma3");
  std::string out;
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape gemma3 --out " + dir.string(), &out), 0) << out;
  const std::string base = test::vtprune_binary().string() + " viz --mmproj " + (dir / "mmproj.gguf").string() + " --image " +
                           (dir / "image.png").string() + " --threads 1 --methods hiprune,random --budget 0.334 --panel 240 --out " +
                           (dir / "viz.png").string();
  EXPECT_NE(test::run_command(base, &out), 0);
  EXPECT_NE(out.find("--llm"), std::string::npos) << out;
  ASSERT_EQ(test::run_command(base + " --llm " + (dir / "llm.gguf").string(), &out), 0) << out;
  const auto panels = parse_panels(out);
  ASSERT_EQ(panels.size(), 2u) << out;
  const vision::RgbImage img = vision::load_image(dir / "viz.png");
  const vision::RgbImage reference = vision::resize_bicubic(vision::load_image(dir / "image.png"), 240, 240);
  const auto luminance = [](const vision::RgbImage& im, int x, int y) {
    return 0.299 * im.at(x, y, 0) + 0.587 * im.at(x, y, 1) + 0.114 * im.at(x, y, 2);
  };
  for (const auto& p : panels) {
    EXPECT_EQ(p.grid_w, 8);
    EXPECT_EQ(p.grid_h, 8);
    EXPECT_EQ(p.cell, 30);
    EXPECT_EQ(p.kept.size(), static_cast<size_t>(Budget::fraction(0.334).resolve(64))) << p.method;
    std::vector<bool> kept(64, false);
    for (int k : p.kept) kept[static_cast<size_t>(k)] = true;
    for (int c = 0; c < 64; ++c) {
      const int rx = (c % 8) * 30 + 15, ry = (c / 8) * 30 + 15;
      const double shown = luminance(img, p.x + rx, p.y + ry), original = luminance(reference, rx, ry);
      if (kept[static_cast<size_t>(c)]) {
        EXPECT_LE(std::abs(shown - original), 3.0) << p.method << " cell " << c;
      } else {
        EXPECT_LE(shown, 0.5 * original + 3.0) << p.method << " cell " << c;
      }
    }
  }
}

TEST_F(Viz, NeighbourhoodIsTinted) {
  const fs::path plain = test::temp_dir("viz") / "plain.png", tinted = test::temp_dir("viz") / "tinted.png";
  int rc = 0;
  const std::string args = "--methods prumerge_plus --budget 64 --opt layer=-2 --panel 240 ";
  const std::string first = viz(args + "--out " + plain.string(), &rc);
  ASSERT_EQ(rc, 0) << first;
  const std::string out = viz(args + "--neighbourhood 0 --out " + tinted.string(), &rc);
  ASSERT_EQ(rc, 0) << out;
  const auto a = vision::load_image(plain), b = vision::load_image(tinted);
  const auto panels = parse_panels(out);
  ASSERT_EQ(panels.size(), 1u) << out;
  const PanelInfo& p = panels[0];
  // Same panel place in both (only the legend grows); the neighbourhood changes pixels inside it.
  ASSERT_EQ(parse_panels(first).at(0).y, p.y);
  size_t differ = 0;
  for (int y = p.y; y < p.y + p.grid_h * p.cell; ++y) {
    for (int x = p.x; x < p.x + p.grid_w * p.cell; ++x) {
      for (int c = 0; c < 3; ++c) differ += a.at(x, y, c) != b.at(x, y, c);
    }
  }
  EXPECT_GT(differ, 500u) << "the merge neighbourhood of kept token 0 should be tinted";
  EXPECT_NE(out.find("prumerge_plus"), std::string::npos);
}

// CDPruner's relevance to the prompt is drawn as a heat layer: another prompt gives other relevance, so other
// pixels inside the panel; the official relevance needs CLIP's text tower and says so without it.
TEST_F(Viz, CdprunerRelevanceIsAHeatLayer) {
  const fs::path dir = test::temp_dir("viz-cdp");
  int rc = 0;
  const std::string base = "--methods cdpruner --budget 64 --panel 240 ";
  const std::string refused = viz(base + "--prompt 'the dog' --out " + (dir / "x.png").string(), &rc);
  EXPECT_EQ(rc, 1) << refused;
  EXPECT_NE(refused.find("--clip-text"), std::string::npos) << refused;
  const std::string clip = " --clip-text " + (*model_dir_ / "clip").string() + " ";
  const std::string a_out = viz(base + clip + "--prompt 'the dog is at the door' --out " + (dir / "a.png").string(), &rc);
  ASSERT_EQ(rc, 0) << a_out;
  const std::string b_out = viz(base + clip + "--prompt 'a cat' --out " + (dir / "b.png").string(), &rc);
  ASSERT_EQ(rc, 0) << b_out;
  const std::string n_out = viz(base + "--opt relevance=none --out " + (dir / "none.png").string(), &rc);
  ASSERT_EQ(rc, 0) << n_out;
  const auto a = vision::load_image(dir / "a.png"), b = vision::load_image(dir / "b.png");
  const PanelInfo p = parse_panels(a_out).at(0);
  size_t differ = 0;
  for (int y = p.y; y < p.y + p.grid_h * p.cell; ++y) {
    for (int x = p.x; x < p.x + p.grid_w * p.cell; ++x) differ += a.at(x, y, 0) != b.at(x, y, 0);
  }
  EXPECT_GT(differ, 1000u) << "another prompt should change the relevance heat";
}

TEST_F(Viz, MethodThatCannotRunIsNamed) {
  const fs::path png = test::temp_dir("viz") / "viz.png";
  int rc = 0;
  // PruMerge's default layer is the last (23), which a LLaVA mmproj does not store.
  const std::string out = viz("--methods hiprune,prumerge --budget 64 --out " + png.string(), &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("prumerge"), std::string::npos) << out;
  EXPECT_NE(out.find("layer"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(png));

  const std::string unknown = viz("--methods hiprune --budget 64 --opt nonesuch=1 --out " + png.string(), &rc);
  EXPECT_EQ(rc, 1) << unknown;
  EXPECT_NE(unknown.find("nonesuch"), std::string::npos) << unknown;
}

}  // namespace
}  // namespace vtprune
