// `vtprune eval vqa` end to end on a generated `tiny` LLaVA-1.5-shaped model pair and a dataset built here
// (generated images, yes/no, choice and open questions): outputs, per-method options, resuming after an
// interruption, and input errors.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "eval_common.h"
#include "test_support.h"
#include "vtprune/vision.h"

namespace vtprune::eval {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> read_lines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class EvalVqa : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<fs::path>(test::temp_dir("eval-vqa"));
    std::string log;
    ASSERT_EQ(test::run_command(test::vtprune_binary().string() + " make-test-model --shape tiny --out " + (*dir_ / "model").string(), &log), 0)
        << log;
    // Four small images: two solid colours, a gradient, a checkerboard.
    fs::create_directories(*dir_ / "data" / "img");
    for (int k = 0; k < 4; ++k) {
      vision::RgbImage image{64, 48, std::vector<uint8_t>(64 * 48 * 3)};
      for (int y = 0; y < image.height; ++y) {
        for (int x = 0; x < image.width; ++x) {
          for (int c = 0; c < 3; ++c) {
            const int v = k == 0 ? 200 * (c == 0) : k == 1 ? 220 * (c == 2) : k == 2 ? x * 4 : ((x / 8 + y / 8) % 2) * 255;
            image.pixels[(static_cast<size_t>(y) * image.width + x) * 3 + c] = static_cast<uint8_t>(v);
          }
        }
      }
      vision::save_png(*dir_ / "data" / "img" / ("im" + std::to_string(k) + ".png"), image);
    }
    std::ofstream(*dir_ / "data" / "set.jsonl")
        << R"({"id": "red", "image": "img/im0.png", "question": "Is the image red?", "answers": ["yes"], "type": "yesno"})" "\n"
        << R"({"id": "blue", "image": "img/im1.png", "question": "Which colour is it?", "choices": ["red", "blue", "green"], "answers": ["B"], "type": "choice"})" "\n"
        << R"({"id": "count", "image": "img/im3.png", "question": "How many squares?", "answers": ["48", "forty-eight", "48", "many"], "type": "open"})" "\n"
        << R"({"id": "grad", "image": "img/im2.png", "question": "Is it a gradient?", "answers": ["Yes"], "type": "yesno"})" "\n";
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static std::string command(const fs::path& out, const std::string& extra = "") {
    const fs::path model = *dir_ / "model";
    return test::vtprune_binary().string() + " eval vqa --data " + (*dir_ / "data" / "set.jsonl").string() + " -m " +
           (model / "llm.gguf").string() + " --mmproj " + (model / "mmproj.gguf").string() +
           " --methods hiprune,prumerge --budgets 64,16 --opt prumerge:layer=-2 --threads 1 -n 3 -c 2048 --out " +
           out.string() + " " + extra;
  }
  static std::unique_ptr<fs::path> dir_;
};
std::unique_ptr<fs::path> EvalVqa::dir_;

TEST_F(EvalVqa, WritesAnswersAndResultsThenResumes) {
  const fs::path out = test::temp_dir("eval-vqa-run");
  std::string log;
  ASSERT_EQ(test::run_command(command(out), &log), 0) << log;
  EXPECT_NE(log.find("ETA"), std::string::npos) << log;  // the progress bar

  // answers.jsonl: the settings record, then 4 items x (none + 2 methods x 2 budgets).
  const auto lines = read_lines(out / "answers.jsonl");
  ASSERT_EQ(lines.size(), 1u + 4u * 5u) << log;
  EXPECT_TRUE(nlohmann::json::parse(lines[0]).contains("vtprune_eval_vqa"));
  std::set<std::string> cells;
  for (size_t i = 1; i < lines.size(); ++i) {
    const auto j = nlohmann::json::parse(lines[i]);
    cells.insert(j.at("id").get<std::string>() + "/" + j.at("method").get<std::string>() + "/" + j.at("budget").get<std::string>());
    const double score = j.at("score").get<double>();
    EXPECT_GE(score, 0.0);
    EXPECT_LE(score, 1.0);
    EXPECT_GT(j.at("ttft_ms").get<double>(), 0.0);
    const auto kept = j.at("tokens_kept").get<int64_t>();
    const std::string method = j.at("method").get<std::string>();
    if (method == "none") {
      EXPECT_EQ(kept, 576);
    } else if (method == "hiprune") {
      EXPECT_EQ(kept, std::stoll(j.at("budget").get<std::string>()));
    } else {
      EXPECT_LE(kept, std::stoll(j.at("budget").get<std::string>()));
    }
  }
  EXPECT_EQ(cells.size(), 20u);

  const auto results = read_lines(out / "results.csv");
  ASSERT_EQ(results.size(), 6u);
  EXPECT_EQ(results[0],
            "method,budget,n_items,accuracy,retention,mean_tokens_kept,mean_ttft_ms,accuracy_yesno,accuracy_choice,accuracy_open");
  EXPECT_EQ(results[1].substr(0, 11), "none,all,4,");
  EXPECT_EQ(results[2].substr(0, 13), "hiprune,64,4,");
  EXPECT_EQ(results[5].substr(0, 14), "prumerge,16,4,");

  // Interrupted run: the last 6 records lost, the one before cut mid-write. The re-run redoes exactly those.
  {
    std::ofstream cut(out / "answers.jsonl", std::ios::trunc);
    for (size_t i = 0; i + 7 < lines.size(); ++i) cut << lines[i] << '\n';
    cut << lines[lines.size() - 7].substr(0, 25);
  }
  std::string resumed;
  ASSERT_EQ(test::run_command(command(out), &resumed), 0) << resumed;
  EXPECT_NE(resumed.find("resuming: 13 of 20 answers already done"), std::string::npos) << resumed;
  const auto again = read_lines(out / "answers.jsonl");
  ASSERT_EQ(again.size(), lines.size());
  std::set<std::string> cells_again;
  for (size_t i = 1; i < again.size(); ++i) {
    const auto j = nlohmann::json::parse(again[i]);  // every line is whole JSON again
    cells_again.insert(j.at("id").get<std::string>() + "/" + j.at("method").get<std::string>() + "/" +
                       j.at("budget").get<std::string>());
  }
  EXPECT_EQ(cells_again, cells);
  // Deterministic (greedy, same model): the same answers, so the same accuracy and token columns.
  const auto results_again = read_lines(out / "results.csv");
  ASSERT_EQ(results_again.size(), results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    const auto a = split_fields(results[i], ','), b = split_fields(results_again[i], ',');
    ASSERT_EQ(a.size(), b.size());
    for (size_t c : {0, 1, 2, 3, 4, 5, 7, 8, 9}) EXPECT_EQ(a[c], b[c]) << results[i];
  }

  // A run with other settings refuses the folder instead of mixing answers.
  std::string refused;
  EXPECT_NE(test::run_command(command(out, "--opt hiprune:alpha=0.2"), &refused), 0);
  EXPECT_NE(refused.find("other settings"), std::string::npos) << refused;
}

TEST_F(EvalVqa, MethodOptionErrorsComeFirst) {
  const fs::path model = *dir_ / "model";
  const std::string base = test::vtprune_binary().string() + " eval vqa --data " + (*dir_ / "data" / "set.jsonl").string() +
                           " -m " + (model / "llm.gguf").string() + " --mmproj " + (model / "mmproj.gguf").string() +
                           " --threads 1 --out " + test::temp_dir("eval-vqa-bad").string();
  std::string log;
  // PruMerge reads layer 23, which llama.cpp's LLaVA conversion drops: the error says so before any item runs.
  EXPECT_NE(test::run_command(base + " --methods prumerge --budgets 64", &log), 0);
  EXPECT_NE(log.find("not stored"), std::string::npos) << log;
  EXPECT_NE(test::run_command(base + " --methods hiprune --budgets 64 --opt layer=3", &log), 0);
  EXPECT_NE(log.find("method:key=value"), std::string::npos) << log;
  EXPECT_NE(test::run_command(base + " --methods hiprune --budgets 64 --opt pool:stride=2", &log), 0);
  EXPECT_NE(log.find("not in --methods"), std::string::npos) << log;
  EXPECT_NE(test::run_command(base + " --methods hiprune --budgets 64 --opt hiprune:nosuch=1", &log), 0);
  EXPECT_NE(log.find("nosuch"), std::string::npos) << log;
}

}  // namespace
}  // namespace vtprune::eval
