// `vtprune eval imagenet` on real DeiT-Tiny weights: the split forward (encode up to block E-1, then
// classify_tokens) against the full forward, `--methods none` against `vtprune classify`, and resuming
// from per_image.tsv after an interruption. Uses 10 images of ../shared/data/imagenet-sample/dev.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "eval_common.h"
#include "test_support.h"
#include "vtprune/vision.h"

namespace vtprune::eval {
namespace {

namespace fs = std::filesystem;

constexpr const char* kModel = "models/deit-tiny/model.safetensors";
constexpr int kImages = 10;

fs::path model_dir() { return test::shared_dir() / "models" / "deit-tiny"; }
fs::path dev_dir() { return test::shared_dir() / "data" / "imagenet-sample" / "dev"; }
fs::path synsets() { return test::shared_dir() / "data" / "imagenet-sample" / "synset_words.txt"; }

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string eval_command(const fs::path& out, const std::string& methods, const std::string& budgets, int limit) {
  return test::vtprune_binary().string() + " eval imagenet --model " + model_dir().string() + " --images " +
         dev_dir().string() + " --synsets " + synsets().string() + " --methods " + methods + " --budgets " + budgets +
         " --limit " + std::to_string(limit) + " --threads 1 --out " + out.string();
}

class EvalImagenet : public ::testing::Test {
 protected:
  void SetUp() override {
    VTPRUNE_REQUIRE_SHARED(kModel);
    VTPRUNE_REQUIRE_SHARED("data/imagenet-sample/dev");
    if (!model_) model_ = std::make_unique<vision::VisionModel>(vision::VisionModel::from_safetensors_timm(model_dir()));
  }
  static void TearDownTestSuite() { model_.reset(); }
  static std::unique_ptr<vision::VisionModel> model_;
};
std::unique_ptr<vision::VisionModel> EvalImagenet::model_;

// classify_tokens on every token after a partial forward = the full forward, for any split point.
TEST_F(EvalImagenet, SplitForwardWithAllTokensMatchesFullForward) {
  const auto files = list_images(dev_dir());
  for (size_t index : {size_t{0}, size_t{7}}) {
    const auto image = vision::preprocess(vision::load_image(files[index]), model_->preprocess_recipe());
    const auto full = model_->encode(image, Needs{}, {.threads = 1, .logits = true});
    for (int split : {1, 4, 8, 11}) {
      Needs needs;
      needs.cls_features = true;
      const auto partial = model_->encode(image, needs, {.threads = 1, .logits = false, .stop_after_layer = split - 1});
      EXPECT_EQ(partial.info.feature_layer, split - 1);
      ASSERT_EQ(partial.features.size(), size_t{196} * 192);
      ASSERT_EQ(partial.cls_features.size(), size_t{192});
      const auto logits = model_->classify_tokens(partial.cls_features, MatrixView{partial.features, 196, 192}, split, 1);
      ASSERT_EQ(logits.size(), full.logits.size());
      double worst = 0;
      for (size_t i = 0; i < logits.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(logits[i]) - full.logits[i]));
      EXPECT_LT(worst, 1e-4) << files[index] << " split after " << split;
      EXPECT_EQ(vision::top_k_classes(logits, 1), vision::top_k_classes(full.logits, 1));
    }
  }
}

// The partial forward hands over raw hidden states (no final norm) and can tap the next block's q/k.
TEST_F(EvalImagenet, PartialForwardTapsTheNextBlock) {
  const auto image = vision::preprocess(vision::load_image(list_images(dev_dir())[0]), model_->preprocess_recipe());
  Needs needs;
  needs.add({.layer = 8, .keys = true, .cls_query = true});
  needs.add({.layer = 4, .received = true});
  const auto partial = model_->encode(image, needs, {.threads = 1, .logits = false, .stop_after_layer = 7});
  const auto normed = model_->encode(image, Needs{}, {.threads = 1});  // feature layer 11, final norm applied
  ASSERT_EQ(partial.taps.size(), 2u);
  const auto view = partial.view();
  EXPECT_EQ(view.tap(8, "test").keys.rows, 197);
  EXPECT_EQ(view.tap(8, "test").cls_query.size(), 192u);
  EXPECT_EQ(view.tap(4, "test").received.size(), 197u);
  EXPECT_NE(partial.features, normed.features);
  // A stop point past the stored blocks is an error naming it.
  EXPECT_THROW(model_->encode(image, Needs{}, {.threads = 1, .logits = false, .stop_after_layer = 12}), Error);
  EXPECT_THROW(model_->classify_tokens(partial.features, MatrixView{partial.features, 196, 192}, 8, 1), Error);  // CLS width
  EXPECT_THROW(model_->classify_tokens(partial.cls_features, MatrixView{partial.features, 196, 192}, 13, 1), Error);
}

// `--methods none` is the unpruned model: the same top-1 as `vtprune classify`, image by image.
TEST_F(EvalImagenet, NoneReproducesClassify) {
  const fs::path out = test::temp_dir("eval-none");
  std::string log;
  ASSERT_EQ(test::run_command(eval_command(out, "none", "98", kImages), &log), 0) << log;
  std::string files;
  const auto images = list_images(dev_dir());
  for (int i = 0; i < kImages; ++i) files += " " + images[static_cast<size_t>(i)].string();
  std::string classify;
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " classify --threads 1 --model " + model_dir().string() +
                                  " --images" + files + " 2>/dev/null",
                              &classify),
            0)
      << classify;
  std::map<std::string, std::string> expected;  // file -> top-1 class index
  for (const auto& line : split_fields(classify, '\n')) {
    const auto f = split_fields(line, '\t');
    if (f.size() >= 2) expected[f[0]] = f[1];
  }
  ASSERT_EQ(expected.size(), static_cast<size_t>(kImages)) << classify;
  const auto lines = read_lines(out / "per_image.tsv");
  ASSERT_EQ(lines.size(), static_cast<size_t>(kImages) + 2);
  for (size_t i = 2; i < lines.size(); ++i) {
    const auto f = split_fields(lines[i], '\t');
    ASSERT_EQ(f.size(), 9u);
    EXPECT_EQ(f[1], "none");
    EXPECT_EQ(f[2], "all");
    EXPECT_EQ(f[3], expected.at(f[0])) << f[0];
    EXPECT_EQ(f[6], "0");  // KL to itself
  }
  const auto results = read_lines(out / "results.csv");
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[1].substr(0, 12), "none,all,10,");
  EXPECT_NE(results[1].find(",1.0000,0.00000,196.00"), std::string::npos) << results[1];
  EXPECT_TRUE(fs::exists(out / "accuracy.png"));
}

// Kill mid-run (simulated: the log cut mid-line and short of lines), re-run: only the missing work is
// redone, nothing is duplicated, and the table equals an uninterrupted run's.
TEST_F(EvalImagenet, ResumesFromPerImageLog) {
  const fs::path out = test::temp_dir("eval-resume");
  const std::string command = eval_command(out, "none,hiprune,prumerge_plus,visionzip,pool", "49,22", 4);
  std::string log;
  ASSERT_EQ(test::run_command(command, &log), 0) << log;
  const auto complete = read_lines(out / "per_image.tsv");
  ASSERT_EQ(complete.size(), 2u + 4u * 9u) << log;
  const auto results = read_lines(out / "results.csv");
  ASSERT_EQ(results.size(), 10u);

  // Budgets hold: exact methods keep the budget's patch tokens (VisionZip too: its CLS row is the CLS).
  for (size_t i = 2; i < complete.size(); ++i) {
    const auto f = split_fields(complete[i], '\t');
    if (f[1] == "hiprune" || f[1] == "visionzip") {
      EXPECT_EQ(f[5], f[2]) << complete[i];
    } else if (f[1] == "pool" || f[1] == "prumerge_plus") {
      EXPECT_LE(std::stoi(f[5]), std::stoi(f[2])) << complete[i];
    }
  }

  {
    std::ofstream cut(out / "per_image.tsv", std::ios::trunc);
    for (size_t i = 0; i + 7 < complete.size(); ++i) cut << complete[i] << '\n';
    cut << complete[complete.size() - 7].substr(0, 20);  // a line cut by the interruption
  }
  std::string resumed;
  ASSERT_EQ(test::run_command(command, &resumed), 0) << resumed;
  EXPECT_NE(resumed.find("resuming: 3 of 4 images already done"), std::string::npos) << resumed;
  EXPECT_NE(resumed.find("dropped a partly written last line"), std::string::npos) << resumed;
  const auto again = read_lines(out / "per_image.tsv");
  EXPECT_EQ(std::multiset<std::string>(again.begin(), again.end()), std::multiset<std::string>(complete.begin(), complete.end()));
  EXPECT_EQ(read_lines(out / "results.csv"), results);

  // Other settings in the same folder are refused, not mixed in.
  std::string refused;
  EXPECT_NE(test::run_command(command + " --prune-after 6", &refused), 0);
  EXPECT_NE(refused.find("other settings"), std::string::npos) << refused;
}

TEST_F(EvalImagenet, RejectsBadArguments) {
  const fs::path out = test::temp_dir("eval-bad");
  std::string log;
  EXPECT_NE(test::run_command(eval_command(out, "none,nosuch", "49", 1), &log), 0);
  EXPECT_NE(log.find("nosuch"), std::string::npos) << log;
  EXPECT_NE(test::run_command(eval_command(out, "hiprune", "500", 1), &log), 0);
  EXPECT_NE(log.find("500"), std::string::npos) << log;
  EXPECT_NE(test::run_command(eval_command(out, "hiprune", "49", 1) + " --prune-after 12", &log), 0);
  EXPECT_NE(log.find("--prune-after 12"), std::string::npos) << log;
}

}  // namespace
}  // namespace vtprune::eval
