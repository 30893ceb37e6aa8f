// The family table: every method described on every family, the geometry helpers against hand-worked cases
// and against files, option defaults, refusals, and the README's tables equal to what the table generates.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/gguf_file.h"

namespace vtprune::family {
namespace {

namespace fs = std::filesystem;

TEST(Family, EveryMethodIsDescribedOnEveryFamily) {
  for (const Family* f : all()) {
    SCOPED_TRACE(f->name);
    for (const MethodInfo& m : methods()) {
      const auto r = std::find_if(f->methods.begin(), f->methods.end(), [&](const MethodRule& x) { return x.method == m.name; });
      ASSERT_NE(r, f->methods.end()) << m.name;
      EXPECT_FALSE(r->note.empty()) << m.name;
      if (r->support == Support::Refused) {
        EXPECT_THROW(rule(*f, m.name), InputError);
      } else {
        // the family's defaults are valid options of the method
        EXPECT_NO_THROW(make_reducer(m.name, method_options(*f, m.name, {}))) << m.name;
      }
    }
    EXPECT_GT(f->reference_depth, 0);
  }
  EXPECT_THROW(by_name("gemma-3"), Error);
}

TEST(Family, WindowOrderAsClipCppBuildsIt) {
  // 3 x 5 merged tokens, windows of 2 x 2: windows row-major, tokens row-major inside each (worked by hand)
  EXPECT_EQ(window_positions(3, 5, 2), (std::vector<int32_t>{0, 1, 4, 5, 8, 2, 3, 6, 7, 9, 10, 11, 12, 13, 14}));
  EXPECT_EQ(window_positions(2, 3, 0), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  // a value stored at each token's window position comes back to raster order
  const auto pos = window_positions(3, 5, 2);
  std::vector<float> in_window_order(15), expected(15);
  for (int r = 0; r < 15; ++r) {
    in_window_order[static_cast<size_t>(pos[static_cast<size_t>(r)])] = static_cast<float>(r);
    expected[static_cast<size_t>(r)] = static_cast<float>(r);
  }
  EXPECT_EQ(window_to_raster(in_window_order, 3, 5, 2), expected);
  EXPECT_THROW(window_to_raster(expected, 3, 4, 2), Error);
}

TEST(Family, MergeUnitMean) {
  EXPECT_EQ(merge_unit_mean(std::vector<float>{1, 2, 3, 6, 0, 0, 0, 4}, 4), (std::vector<float>{3, 1}));
  EXPECT_THROW(merge_unit_mean(std::vector<float>{1, 2, 3}, 4), Error);
}

TEST(Family, LayerDefaultsScaleToTheFilesDepth) {
  EXPECT_EQ(scale_layer(15, 32, 32), 15);
  EXPECT_EQ(scale_layer(15, 4, 32), 2);   // round_half_even(1.875)
  EXPECT_EQ(scale_layer(8, 12, 24), 4);   // HiPrune's CLIP layer 8 on DeiT's 12 blocks (eval imagenet's rule)
  EXPECT_EQ(scale_layer(-1, 4, 32), -1);  // Python-style indices are depth-relative already
  const Family& qwen = by_name("qwen2.5-vl");
  const auto deep = method_options(qwen, "hiprune", {}, 32);
  EXPECT_NE(std::find(deep.begin(), deep.end(), "object_layer=15"), deep.end());
  const auto shallow = method_options(qwen, "hiprune", {}, 4);
  EXPECT_NE(std::find(shallow.begin(), shallow.end(), "object_layer=2"), shallow.end());
  // a user's key replaces the family's default, the others stay
  const auto user = method_options(qwen, "hiprune", {"object_layer=3", "alpha=0.5"}, 32);
  EXPECT_EQ(std::count_if(user.begin(), user.end(), [](const std::string& s) { return s.starts_with("object_layer="); }), 1);
  EXPECT_NE(std::find(user.begin(), user.end(), "object_layer=3"), user.end());
  EXPECT_NE(std::find(user.begin(), user.end(), "scores=sum"), user.end());
  EXPECT_THROW(method_options(qwen, "prumerge", {}), InputError);
}

TEST(Family, DetectedFromTheMmproj) {
  const fs::path dir = test::temp_dir("families");
  for (const auto& [shape, name] : std::vector<std::pair<std::string, std::string>>{{"tiny", "llava-1.5"}, {"llava-next", "llava-next"}, {"qwen2.5-vl", "qwen2.5-vl"}}) {
    std::string log;
    ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --mmproj-only --shape " + shape +
                                    " --out " + (dir / shape).string(), &log), 0) << log;
    const io::GgufFile file(dir / shape / "mmproj.gguf", "mmproj");
    EXPECT_EQ(detect(file).name, name);
    if (detect(file).check_file) {
      const VisionFacts v = detect(file).check_file(file);
      EXPECT_GT(v.layers, 0);
      EXPECT_EQ(v.width, v.heads * v.head_dim);
    }
  }
}

// HiPrune's 'spatial' layout, worked by hand: two crops side by side, 2 x 2 patches each, so the image's patch
// raster is 4 wide. Crop 0 keeps all four patches; crop 1 keeps patches 0 and 3 and has one merged row.
TEST(Family, AnyResSpatialOrderFollowsTheImagesRaster) {
  const std::vector<std::vector<int32_t>> kept{{0, 1, 2, 3}, {0, 3}};
  // places: crop 0 -> 0, 1, 4, 5; crop 1 -> 2, 7; rows 0-3, 4-5, merged row 6 last
  EXPECT_EQ(anyres_spatial_order(kept, {4, 3}, 2, 2), (std::vector<int64_t>{0, 1, 4, 2, 3, 5, 6}));
  // one column: the crops follow each other; rows out of raster order are sorted; -1 = no source
  EXPECT_EQ(anyres_spatial_order({{3, 0}, {-1, 1}}, {2, 2}, 1, 2), (std::vector<int64_t>{1, 0, 3, 2}));
  EXPECT_THROW(anyres_spatial_order(kept, {4, 3}, 3, 2), Error);     // 2 crops do not fill rows of 3
  EXPECT_THROW(anyres_spatial_order({{0, 9}}, {2}, 1, 2), Error);    // patch 9 of a 2 x 2 crop
  EXPECT_THROW(anyres_spatial_order({{0, 1, 2}}, {2}, 1, 2), Error); // more sources than rows
}

// LLaVA-NeXT's unpad, worked by hand: two 4 x 4 crops side by side (a 4 x 8 patch grid) for a 100 x 25 picture
// (aspect 4 > 2): new height int(25 * 8 / 100) = 2, padding (4 - 2) // 2 = 1 row at the top and the bottom, so
// patch rows 1 and 2 remain, each followed by a newline; kept rows in rows 0 and 3 are dropped.
TEST(Family, AnyResUnpadDropsThePaddingAndAddsANewlinePerRow) {
  const int64_t nl = kAnyResNewline;
  // crop 0 keeps its diagonal (places 0, 9, 18, 27), crop 1 keeps patch 4 (place 12) and has a merged row
  EXPECT_EQ(anyres_unpad_order({{0, 5, 10, 15}, {4}}, {4, 2}, 2, 4, 100, 25), (std::vector<int64_t>{1, 4, nl, 2, nl, 5}));
  // a picture of the grid's aspect keeps every row
  EXPECT_EQ(anyres_unpad_order({{0, 5, 10, 15}, {4}}, {4, 1}, 2, 4, 200, 100), (std::vector<int64_t>{0, nl, 1, 4, nl, 2, nl, 3, nl}));
  // a very tall picture on a 4 x 2 grid (one column of 2 x 2 crops): int(5 * 0.1) = 0 columns remain
  EXPECT_EQ(anyres_unpad_order({{0, 3}, {1}}, {2, 1}, 1, 2, 5, 40), (std::vector<int64_t>{nl, nl, nl, nl}));
  EXPECT_THROW(anyres_unpad_order({{0}}, {1}, 1, 2, 0, 10), Error);
}

// The README shows the tables `vtprune families` prints; they must not drift from the data.
TEST(Family, ReadmeTablesEqualTheFamilyTable) {
  std::ifstream in(test::source_dir() / "README.md");
  ASSERT_TRUE(in) << "README.md";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find(families_markdown()), std::string::npos) << "README lacks:\n" << families_markdown();
  EXPECT_NE(text.str().find(methods_markdown()), std::string::npos) << "README lacks:\n" << methods_markdown();
}

}  // namespace
}  // namespace vtprune::family
