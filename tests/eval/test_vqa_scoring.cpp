// Scoring rules of `vtprune eval vqa` (POPE yes/no, VLMEvalKit choice extraction, VQAv2 normalisation and
// accuracy), the JSONL loader's errors, and the shared plumbing (append-only logs, option syntax, the
// classifier layer plan).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "eval_common.h"
#include "imagenet_eval.h"
#include "test_support.h"
#include "vqa_eval.h"
#include "vqa_scoring.h"
#include "vtprune/vision.h"

namespace vtprune::eval {
namespace {

namespace fs = std::filesystem;

TEST(PopeYesNo, FollowsLlavaEvalPope) {
  EXPECT_EQ(pope_yes_no("Yes."), "yes");
  EXPECT_EQ(pope_yes_no("yes"), "yes");
  EXPECT_EQ(pope_yes_no("No."), "no");
  EXPECT_EQ(pope_yes_no("No, there is no dog."), "no");
  EXPECT_EQ(pope_yes_no("There is not a dog in the image"), "no");
  EXPECT_EQ(pope_yes_no("Yes, there is a dog. No cat though."), "yes");  // only the first sentence counts
  EXPECT_EQ(pope_yes_no("NO"), "yes");    // the official rule is case-sensitive: "NO" is not "No"/"no"
  EXPECT_EQ(pope_yes_no("Nope"), "yes");  // ... and anything without no/not is a yes
  EXPECT_EQ(pope_yes_no(""), "yes");
}

TEST(ReferenceYesNo, NormalisesCaseAndPunctuation) {
  EXPECT_EQ(reference_yes_no("Yes."), "yes");
  EXPECT_EQ(reference_yes_no(" NO "), "no");
  EXPECT_FALSE(reference_yes_no("maybe").has_value());
  EXPECT_DOUBLE_EQ(score_answer(AnswerType::YesNo, "Yes.", {"yes"}, {}), 1.0);
  EXPECT_DOUBLE_EQ(score_answer(AnswerType::YesNo, "yes", {"No"}, {}), 0.0);
}

TEST(ExtractChoice, LettersInAnyPunctuation) {
  const std::vector<std::string> choices{"red", "blue", "green", "yellow"};
  EXPECT_EQ(extract_choice("B", choices), "B");
  EXPECT_EQ(extract_choice("(B)", choices), "B");
  EXPECT_EQ(extract_choice("B.", choices), "B");
  EXPECT_EQ(extract_choice("[C]", choices), "C");
  EXPECT_EQ(extract_choice("The answer is D.", choices), "D");
  EXPECT_EQ(extract_choice("B. blue", choices), "B");
  EXPECT_EQ(extract_choice("A or B", choices), "");  // two letters: ambiguous
  EXPECT_EQ(extract_choice("E", choices), "");       // not an option
  EXPECT_EQ(extract_choice("b", choices), "");       // letters are upper case, as in VLMEvalKit
}

TEST(ExtractChoice, FallsBackToOptionText) {
  const std::vector<std::string> choices{"red", "blue", "green"};
  EXPECT_EQ(extract_choice("It is Blue", choices), "B");
  EXPECT_EQ(extract_choice("red and green", choices), "");  // two texts: ambiguous
  EXPECT_EQ(extract_choice("purple", choices), "");
}

TEST(ReferenceChoice, LetterOrText) {
  const std::vector<std::string> choices{"red", "blue"};
  EXPECT_EQ(reference_choice("(b)", choices), "B");
  EXPECT_EQ(reference_choice("A.", choices), "A");
  EXPECT_EQ(reference_choice("Blue", choices), "B");
  EXPECT_FALSE(reference_choice("C", choices).has_value());
  EXPECT_DOUBLE_EQ(score_answer(AnswerType::Choice, "(B)", {"B"}, choices), 1.0);
  EXPECT_DOUBLE_EQ(score_answer(AnswerType::Choice, "B", {"(B)"}, choices), 1.0);
  EXPECT_DOUBLE_EQ(score_answer(AnswerType::Choice, "A", {"blue"}, choices), 0.0);
}

TEST(VqaNormalize, ArticlesNumbersPunctuationContractions) {
  EXPECT_EQ(vqa_normalize("The Two Dogs!"), "2 dogs");
  EXPECT_EQ(vqa_normalize("a cat."), "cat");
  EXPECT_EQ(vqa_normalize("An apple"), "apple");
  EXPECT_EQ(vqa_normalize("none"), "0");
  EXPECT_EQ(vqa_normalize("ten"), "10");
  EXPECT_EQ(vqa_normalize("dont"), "don't");
  EXPECT_EQ(vqa_normalize("Yes."), "yes");
  EXPECT_EQ(vqa_normalize("3.5"), "3.5");          // a period before a digit stays
  EXPECT_EQ(vqa_normalize("1,000"), "1000");       // digit,digit: punctuation removed, not spaced
  EXPECT_EQ(vqa_normalize("red-blue"), "red blue");  // unspaced punctuation becomes a space
  EXPECT_EQ(vqa_normalize("red - blue"), "red blue");
  EXPECT_EQ(vqa_normalize(" two\tcats\n"), "2 cats");
  EXPECT_EQ(vqa_normalize("twenty"), "twenty");    // the official map stops at ten
}

TEST(VqaAccuracy, OfficialTenAnnotatorRule) {
  auto answers = [](int matching) {
    std::vector<std::string> a(10, "cat");
    for (int i = 0; i < matching; ++i) a[static_cast<size_t>(i)] = "2";
    return a;
  };
  EXPECT_NEAR(vqa_accuracy("two", answers(0)), 0.0, 1e-12);
  EXPECT_NEAR(vqa_accuracy("two", answers(1)), 0.3, 1e-12);
  EXPECT_NEAR(vqa_accuracy("two", answers(2)), 0.6, 1e-12);
  EXPECT_NEAR(vqa_accuracy("two", answers(3)), 0.9, 1e-12);
  EXPECT_NEAR(vqa_accuracy("Two.", answers(4)), 1.0, 1e-12);
}

TEST(VqaAccuracy, OtherAnswerCounts) {
  EXPECT_DOUBLE_EQ(vqa_accuracy("The dog", {"dog"}), 1.0);  // one answer: exact match after normalisation
  EXPECT_DOUBLE_EQ(vqa_accuracy("dogs", {"dog"}), 0.0);
  EXPECT_NEAR(vqa_accuracy("dog", {"dog", "puppy", "cat"}), 1.0 / 3.0, 1e-12);
  EXPECT_DOUBLE_EQ(vqa_accuracy("dog", {"dog", "a dog", "Dog."}), 1.0);
  EXPECT_DOUBLE_EQ(vqa_accuracy("dog", {}), 0.0);
}

TEST(AnswerType, ParsesAndRejects) {
  EXPECT_EQ(parse_answer_type("yesno"), AnswerType::YesNo);
  EXPECT_EQ(to_string(AnswerType::Choice), "choice");
  EXPECT_THROW(parse_answer_type("boolean"), Error);
}

class VqaJsonl : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("vqa-jsonl");
    vision::RgbImage image{4, 4, std::vector<uint8_t>(48, 128)};
    vision::save_png(dir_ / "a.png", image);
  }
  fs::path write(const std::string& text) {
    const fs::path path = dir_ / "data.jsonl";
    std::ofstream(path) << text;
    return path;
  }
  std::string error_of(const std::string& text) {
    try {
      load_vqa_items(write(text));
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  fs::path dir_;
};

TEST_F(VqaJsonl, LoadsItemsAndBuildsLlavaPrompts) {
  const auto items = load_vqa_items(write(
      "{\"id\": \"1\", \"image\": \"a.png\", \"question\": \"Is it grey?\", \"answers\": [\"Yes\"], \"type\": \"yesno\"}\n"
      "\n# a comment\n"
      "{\"id\": 2, \"image\": \"a.png\", \"question\": \"Colour?\", \"choices\": [\"grey\", \"red\"], \"answers\": [\"A\"], "
      "\"type\": \"choice\"}\n"
      "{\"id\": \"3\", \"image\": \"a.png\", \"prompt\": \"Say it.\", \"answers\": [2], \"type\": \"open\"}\n"));
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[0].prompt, "Is it grey?\nAnswer the question using a single word or phrase.");
  EXPECT_EQ(items[1].id, "2");
  EXPECT_EQ(items[1].prompt, "Colour?\nA. grey\nB. red\nAnswer with the option's letter from the given choices directly.");
  EXPECT_EQ(items[2].prompt, "Say it.");
  EXPECT_EQ(items[2].answers, std::vector<std::string>{"2"});
  EXPECT_EQ(items[2].image, dir_ / "a.png");
}

TEST_F(VqaJsonl, ErrorsNameLineAndField) {
  const std::string ok = R"("image": "a.png", "question": "q", "answers": ["yes"], "type": "yesno")";
  EXPECT_NE(error_of("{\"id\": \"1\", " + ok + "}\n{\"image\": \"a.png\"}\n").find("data.jsonl:2: missing field \"id\""),
            std::string::npos);
  EXPECT_NE(error_of("{\"id\": \"1\", " + ok + "}\n{\"id\": \"1\", " + ok + "}\n").find(":2: id \"1\" appears twice"),
            std::string::npos);
  EXPECT_NE(error_of("{not json}\n").find("data.jsonl:1: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"id": "1", "image": "missing.png", "question": "q", "answers": ["yes"], "type": "yesno"})")
                .find("field \"image\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"id": "1", "image": "a.png", "question": "q", "answers": ["maybe"], "type": "yesno"})")
                .find("field \"answers\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"id": "1", "image": "a.png", "question": "q", "answers": ["yes"], "type": "bool"})")
                .find("field \"type\""),
            std::string::npos);
  EXPECT_NE(error_of(R"({"id": "1", "image": "a.png", "question": "q", "answers": [], "type": "open"})")
                .find("non-empty array"),
            std::string::npos);
  EXPECT_NE(error_of("\n").find("no items"), std::string::npos);
}

TEST(AppendLog, DropsTruncatedLastLineAndAppends) {
  const fs::path path = test::temp_dir("append-log") / "sub" / "log.tsv";
  {
    AppendLog log(path, {"# header"});
    EXPECT_FALSE(log.was_truncated());
    log.append("a\t1");
    log.append("b\t2");
  }
  {
    std::ofstream(path, std::ios::app) << "c\t";  // a crash in the middle of a line
  }
  AppendLog log(path, {"# header"});
  EXPECT_TRUE(log.was_truncated());
  EXPECT_EQ(log.existing_lines(), (std::vector<std::string>{"# header", "a\t1", "b\t2"}));
  log.append("c\t3");
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text, "# header\na\t1\nb\t2\nc\t3\n");
  EXPECT_THROW(log.append("two\nlines"), Error);
}

TEST(MethodOptions, ParseAndMerge) {
  const auto parsed = parse_method_options({"prumerge:layer=-2", "hiprune:alpha=0.2", "prumerge:k_nn=8"});
  EXPECT_EQ(parsed.at("prumerge"), (std::vector<std::string>{"layer=-2", "k_nn=8"}));
  EXPECT_THROW(parse_method_options({"layer=-2"}), Error);
  EXPECT_THROW(parse_method_options({"nosuch:layer=1"}), Error);
  EXPECT_THROW(parse_method_options({"prumerge.layer=-2"}), Error);  // the older syntax: the error shows the new one
  EXPECT_EQ(merge_options({"object_layer=4", "deep_layer=7"}, {"deep_layer=5", "alpha=0.2"}),
            (std::vector<std::string>{"object_layer=4", "deep_layer=5", "alpha=0.2"}));
  EXPECT_EQ(split_list(" none, hiprune ,,pool"), (std::vector<std::string>{"none", "hiprune", "pool"}));
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
}

TEST(ClassifierPlan, MapsLlavaLayersOntoTheSplit) {
  // DeiT-Tiny (12 blocks) split after block 8: features = block 7's output.
  EXPECT_EQ(classifier_plan("hiprune", 8, 12).options, (std::vector<std::string>{"object_layer=4", "deep_layer=7"}));
  EXPECT_EQ(classifier_plan("fastervlm", 8, 12).options, std::vector<std::string>{"layer=7"});
  EXPECT_EQ(classifier_plan("visionzip", 8, 12).options, std::vector<std::string>{"layer=7"});
  EXPECT_EQ(classifier_plan("visionzip", 8, 12).budget_extra, 1);
  EXPECT_EQ(classifier_plan("prumerge", 8, 12).options, std::vector<std::string>{"layer=8"});
  EXPECT_EQ(classifier_plan("prumerge_plus", 8, 12).options, std::vector<std::string>{"layer=8"});
  EXPECT_EQ(classifier_plan("divprune", 8, 12).options, std::vector<std::string>{"space=features"});
  EXPECT_TRUE(classifier_plan("pool", 8, 12).options.empty());
  // An early split: the object layer can not come after the features.
  EXPECT_EQ(classifier_plan("hiprune", 3, 12).options, (std::vector<std::string>{"object_layer=2", "deep_layer=2"}));
  // 24 blocks (CLIP-L) split after 23: LLaVA's own choices come back.
  EXPECT_EQ(classifier_plan("hiprune", 23, 24).options, (std::vector<std::string>{"object_layer=8", "deep_layer=22"}));
  EXPECT_EQ(classifier_plan("prumerge", 23, 24).options, std::vector<std::string>{"layer=23"});
}

TEST(Metrics, KlAndLabels) {
  EXPECT_DOUBLE_EQ(kl_divergence_from_logits({1, 2, 3}, {1, 2, 3}), 0.0);
  EXPECT_DOUBLE_EQ(kl_divergence_from_logits({1, 2, 3}, {11, 12, 13}), 0.0);  // shift-invariant
  // p = (1/2, 1/2), q = (e/(1+e), 1/(1+e)): KL = log(1+e) - log 2 - 1/2
  EXPECT_NEAR(kl_divergence_from_logits({0, 0}, {1, 0}), std::log1p(std::exp(1.0)) - std::log(2.0) - 0.5, 1e-12);
  EXPECT_THROW(kl_divergence_from_logits({1}, {1, 2}), Error);
  const std::vector<std::string> ids{"n01440764", "n01443537"};
  EXPECT_EQ(label_from_file_name("n01443537_goldfish.JPEG", ids), 1);
  EXPECT_EQ(label_from_file_name("n09999999_x.JPEG", ids), -1);
  EXPECT_EQ(label_from_file_name("goldfish.JPEG", ids), -1);
}

}  // namespace
}  // namespace vtprune::eval
