// The ggml ViT on real DeiT-Tiny weights (../shared/models/deit-tiny): logits against an independent
// float64 reference, taps against brute-force statistics of dumped attention maps, and ImageNet top-1
// on ../shared/data/imagenet-sample/dev (the reference implementation gets 207/250).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include "reduce/common.h"
#include "reference_vit.h"
#include "test_support.h"
#include "vtprune/vision.h"

namespace vtprune::vision {
namespace {

constexpr const char* kModel = "models/deit-tiny/model.safetensors";

std::filesystem::path model_dir() { return test::shared_dir() / "models" / "deit-tiny"; }
std::filesystem::path dev_dir() { return test::shared_dir() / "data" / "imagenet-sample" / "dev"; }

std::vector<std::filesystem::path> dev_images() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dev_dir())) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

// max |a - b| / max |b|: error relative to the scale of the reference vector.
template <typename A, typename B>
double relative_error(const A& a, const B& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return num / std::max(den, 1e-30);
}

class VisionDeitTiny : public ::testing::Test {
 protected:
  void SetUp() override {
    VTPRUNE_REQUIRE_SHARED(kModel);
    if (!model_) model_ = std::make_unique<VisionModel>(VisionModel::from_safetensors_timm(model_dir()));
  }
  static void TearDownTestSuite() { model_.reset(); }
  static Image input(const std::filesystem::path& file) { return preprocess(load_image(file), model_->preprocess_recipe()); }
  static std::unique_ptr<VisionModel> model_;
};
std::unique_ptr<VisionModel> VisionDeitTiny::model_;

TEST_F(VisionDeitTiny, LoadsShapesFromFileAndConfig) {
  const EncoderInfo info = model_->info();
  EXPECT_EQ(info.grid.h, 14);
  EXPECT_EQ(info.grid.w, 14);
  EXPECT_TRUE(info.has_cls);
  EXPECT_EQ(info.heads, 3);
  EXPECT_EQ(info.num_layers, 12);
  EXPECT_EQ(info.feature_layer, 11);
  EXPECT_EQ(model_->dim(), 192);
  EXPECT_EQ(model_->num_classes(), 1000);
  EXPECT_EQ(model_->preprocess_recipe().resize_shorter, 256);
  EXPECT_EQ(model_->preprocess_recipe().image_size, 224);
}

TEST_F(VisionDeitTiny, LogitsMatchFloat64Reference) {
  const test::ReferenceVit reference(model_dir() / "model.safetensors", 3, 1e-6);
  const auto files = dev_images();
  ASSERT_GE(files.size(), 201u);
  double worst = 0;
  for (size_t index : {size_t{0}, size_t{100}, size_t{200}}) {
    const Image image = input(files[index]);
    EncodeOptions options;
    options.threads = 2;
    options.logits = true;
    const auto result = model_->encode(image, Needs{}, options);
    const auto expected = reference.forward(image.data);
    ASSERT_EQ(result.logits.size(), expected.logits.size());
    const double err = relative_error(result.logits, expected.logits);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-3) << files[index].filename();
    EXPECT_EQ(top_k_classes(result.logits, 1)[0],
              std::max_element(expected.logits.begin(), expected.logits.end()) - expected.logits.begin());
  }
  std::printf("[ metric ] DeiT-Tiny logits, max relative error vs float64 reference: %.3g\n", worst);
  RecordProperty("max_logit_relative_error", std::to_string(worst));
}

TEST_F(VisionDeitTiny, TapsEqualBruteForceStatisticsOfFullAttention) {
  const Image image = input(dev_images().at(7));
  Needs needs;
  for (int layer : {0, 5, 11}) {
    TapRequest r;
    r.layer = layer;
    r.received = r.cls_attention = r.attention = r.keys = r.cls_query = true;
    needs.add(r);
  }
  EncodeOptions options;
  options.threads = 2;
  const auto result = model_->encode(image, needs, options);
  const EncoderOutput out = result.view();
  out.validate();
  ASSERT_EQ(out.taps.size(), 3u);
  const int64_t T = out.seq_len();
  double worst = 0;
  for (const auto& tap : out.taps) {
    ASSERT_EQ(tap.attention.size(), static_cast<size_t>(3 * T * T));
    std::vector<float> received, cls_attention;
    reduce::attention_statistics(tap.attention, 3, T, &received, &cls_attention);
    ASSERT_EQ(tap.received.size(), received.size());
    ASSERT_EQ(tap.cls_attention.size(), cls_attention.size());
    for (int64_t k = 0; k < T; ++k) {
      EXPECT_NEAR(tap.received[k], received[k], 1e-5) << "layer " << tap.layer << " key " << k;
      EXPECT_NEAR(tap.cls_attention[k], cls_attention[k], 1e-5) << "layer " << tap.layer << " key " << k;
      worst = std::max({worst, std::abs(double(tap.received[k]) - received[k]),
                        std::abs(double(tap.cls_attention[k]) - cls_attention[k])});
    }
    // Softmax rows sum to one, so received attention sums to one over keys.
    double sum = 0;
    for (float v : tap.received) sum += v;
    EXPECT_NEAR(sum, 1.0, 1e-4);
    EXPECT_EQ(tap.keys.rows, T);
    EXPECT_EQ(tap.keys.cols, 192);
    EXPECT_EQ(tap.cls_query.size(), 192u);
  }
  std::printf("[ metric ] tap statistics vs brute force on dumped maps, max abs error: %.3g\n", worst);

  // The dumped maps, keys and CLS query themselves against the float64 reference (layer 5).
  const test::ReferenceVit reference(model_dir() / "model.safetensors", 3, 1e-6);
  const auto expected = reference.forward(image.data, 5);
  const LayerTap& tap = out.tap(5, "test");
  EXPECT_LT(relative_error(tap.attention, expected.attention), 1e-3);
  EXPECT_LT(relative_error(tap.keys.data, expected.keys), 1e-3);
  EXPECT_LT(relative_error(tap.cls_query, expected.cls_query), 1e-3);
}

TEST_F(VisionDeitTiny, TapsDoNotChangeFeaturesOrLogits) {
  const Image image = input(dev_images().at(3));
  EncodeOptions options;
  options.threads = 2;
  options.logits = true;
  const auto fast = model_->encode(image, Needs{}, options);  // flash attention everywhere
  Needs needs;
  for (int layer = 0; layer < 12; ++layer) {
    TapRequest r;
    r.layer = layer;
    r.received = true;
    needs.add(r);
  }
  needs.cls_features = true;
  const auto tapped = model_->encode(image, needs, options);  // explicit softmax everywhere
  ASSERT_EQ(fast.features.size(), static_cast<size_t>(196 * 192));
  EXPECT_LT(relative_error(tapped.features, fast.features), 1e-4);
  EXPECT_LT(relative_error(tapped.logits, fast.logits), 1e-4);
  EXPECT_EQ(tapped.cls_features.size(), 192u);
  EXPECT_TRUE(fast.cls_features.empty());
}

TEST_F(VisionDeitTiny, RejectsBadRequests) {
  Needs needs;
  TapRequest r;
  r.layer = 12;
  r.received = true;
  needs.add(r);
  const Image image = input(dev_images().at(0));
  EXPECT_THROW(model_->encode(image, needs), Error);
  Image small;
  small.width = small.height = 112;
  small.data.assign(3 * 112 * 112, 0.0f);
  EXPECT_THROW(model_->encode(small, Needs{}), Error);
  EncodeOptions bad;
  bad.threads = 0;
  EXPECT_THROW(model_->encode(image, Needs{}, bad), Error);
  EXPECT_THROW(model_->project(MatrixView{image.data, 1, 192}), Error);  // no projector
}

TEST_F(VisionDeitTiny, ImageNetDevTopOneMatchesReference) {
  VTPRUNE_REQUIRE_SHARED("data/imagenet-sample/synset_words.txt");
  std::vector<std::string> synsets;
  std::ifstream in(test::shared_dir() / "data" / "imagenet-sample" / "synset_words.txt");
  for (std::string line; std::getline(in, line);) synsets.push_back(line.substr(0, line.find(' ')));
  ASSERT_EQ(synsets.size(), 1000u);
  int correct = 0, total = 0;
  double encode_ms = 0;
  EncodeOptions options;
  options.threads = 1;  // ggml's threads spin at barriers: on a busy CI machine one thread is the fastest
  options.logits = true;
  for (const auto& file : dev_images()) {
    const std::string name = file.filename().string();
    const auto label = std::find(synsets.begin(), synsets.end(), name.substr(0, name.find('_')));
    ASSERT_NE(label, synsets.end()) << name;
    const auto result = model_->encode(input(file), Needs{}, options);
    encode_ms += result.encode_ms;
    correct += top_k_classes(result.logits, 1)[0] == label - synsets.begin();
    ++total;
  }
  std::printf("[ metric ] DeiT-Tiny top-1 on imagenet-sample/dev: %d/%d, encode %.1f ms/image (1 thread)\n", correct,
              total, encode_ms / total);
  EXPECT_EQ(total, 250);
  EXPECT_NEAR(correct, 207, 2);
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t pos; (pos = text.find(sep, start)) != std::string::npos; start = pos + 1) out.push_back(text.substr(start, pos - start));
  out.push_back(text.substr(start));
  return out;
}

TEST_F(VisionDeitTiny, ClassifyCommandPrintsOneLinePerImage) {
  const auto synsets = test::shared_dir() / "data" / "imagenet-sample" / "synset_words.txt";
  const auto files = dev_images();
  std::string command = test::vtprune_binary().string() + " classify --threads 1 --model " + model_dir().string() +
                        " --synsets " + synsets.string() + " --images";
  for (size_t i : {0, 1, 2}) command += " " + files[i].string();
  std::string output;
  // stdout only (the summary on stderr is not part of the per-image lines).
  ASSERT_EQ(test::run_command("{ " + command + " 2>/dev/null; }", &output), 0) << output;
  const auto lines = split(output, '\n');
  ASSERT_GE(lines.size(), 3u) << output;
  for (size_t i = 0; i < 3; ++i) {
    const auto fields = split(lines[i], '\t');
    ASSERT_EQ(fields.size(), 5u) << lines[i];
    EXPECT_EQ(fields[0], files[i].filename().string());
    EXPECT_EQ(split(fields[2], ',').size(), 5u);
    EXPECT_EQ(fields[1], split(fields[2], ',')[0]);
  }
  EXPECT_EQ(split(lines[0], '\t')[1], "0");  // the tench
  EXPECT_EQ(split(lines[0], '\t')[3], "n01440764");
  // A missing image is one error line naming it, exit code 1.
  ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " classify --model " + model_dir().string() +
                                  " --images /nonexistent/cat.jpg",
                              &output),
            1);
  EXPECT_NE(output.find("/nonexistent/cat.jpg"), std::string::npos) << output;
}

}  // namespace
}  // namespace vtprune::vision
