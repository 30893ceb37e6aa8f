// Options and budgets: typed parsing, validation messages, describe(), the registry.
#include <gtest/gtest.h>

#include "vtprune/reduce.h"

namespace vtprune {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Registry, ListsEveryMethodOnce) {
  std::vector<std::string> names;
  for (const auto& m : methods()) names.push_back(m.name);
  EXPECT_EQ(names, (std::vector<std::string>{"hiprune", "prumerge", "prumerge_plus", "dfmr", "visionzip", "fastervlm",
                                             "divprune", "cdpruner", "pool", "random", "none"}));
  for (const auto& n : names) EXPECT_NE(make_reducer(n), nullptr);
}

TEST(Registry, UnknownMethodNamesTheKnownOnes) {
  const auto msg = error_of([] { make_reducer("tome"); });
  EXPECT_NE(msg.find("unknown method 'tome'"), std::string::npos);
  EXPECT_NE(msg.find("hiprune"), std::string::npos);
}

TEST(Options, DefaultsAndOverrides) {
  const auto r = make_reducer("hiprune", {"alpha=0.2", "border=drop"});
  const auto eff = r->options().effective();
  EXPECT_NE(std::find(eff.begin(), eff.end(), "alpha=0.2"), eff.end());
  EXPECT_NE(std::find(eff.begin(), eff.end(), "border=drop"), eff.end());
  EXPECT_NE(std::find(eff.begin(), eff.end(), "row_wrap=allowed"), eff.end());
  EXPECT_DOUBLE_EQ(r->options().number("alpha"), 0.2);
}

TEST(Options, RejectsBadInputWithClearMessages) {
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"alpha"}); }).find("not key=value"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"beta=1"}); }).find("unknown option 'beta'"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"alpha=abc"}); }).find("expects a finite number"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"alpha=nan"}); }).find("expects a finite number"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"alpha=9"}); }).find("must be in [0, 5]"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"border=wrap"}); }).find("expects one of clamp|drop"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"object_layer=x"}); }).find("layer index"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("prumerge", {"k_nn=3.5"}); }).find("expects an integer"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("prumerge", {"summary=maybe"}); }).find("true or false"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("hiprune", {"alpha=0.1", "alpha=0.2"}); }).find("given twice"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("dfmr", {"factors=1,x"}); }).find("comma-separated"), std::string::npos);
  EXPECT_NE(error_of([] { make_reducer("none", {"a=1"}); }).find("known: none"), std::string::npos);
}

TEST(Options, LayersResolvePythonStyle) {
  const auto r = make_reducer("hiprune", {"object_layer=-3", "deep_layer=feature"});
  EncoderInfo info;
  info.num_layers = 24;
  info.feature_layer = 22;
  const Needs n = r->needs(info);
  ASSERT_EQ(n.taps.size(), 2u);
  EXPECT_EQ(n.taps[0].layer, 21);
  EXPECT_EQ(n.taps[1].layer, 22);
  const auto bad = make_reducer("hiprune", {"object_layer=30"});
  EXPECT_NE(error_of([&] { bad->needs(info); }).find("outside the encoder's 24 layers"), std::string::npos);
}

TEST(Budget, ParsesCountsRatiosPercentAll) {
  EXPECT_EQ(Budget::parse("64").resolve(576), 64);
  EXPECT_EQ(Budget::parse("0.25").resolve(576), 144);
  EXPECT_EQ(Budget::parse("25%").resolve(576), 144);
  EXPECT_EQ(Budget::parse("all").resolve(576), 576);
  EXPECT_THROW(Budget::parse("0.0001").resolve(576), Error);  // rounds to no token: an error, not a silent 1
  EXPECT_EQ(Budget::parse("0.0009").resolve(576), 1);  // 0.518 rounds to 1
  EXPECT_EQ(Budget::parse("1").resolve(1), 1);
  EXPECT_THROW(Budget::parse("0"), Error);
  EXPECT_THROW(Budget::parse("-3"), Error);
  EXPECT_THROW(Budget::parse("1.5"), Error);
  EXPECT_THROW(Budget::parse("abc"), Error);
  EXPECT_THROW(Budget::parse(""), Error);
  EXPECT_NE(error_of([] { Budget::tokens(577).resolve(576); }).find("out of range"), std::string::npos);
}

TEST(Describe, ListsEveryOptionWithDefault) {
  const std::string d = describe(method_info("prumerge_plus"));
  for (const char* s : {"iqr_k=1.5", "k_nn=32", "summary=true", "stride_divisor=3", "provenance", "budget:     cap"}) {
    EXPECT_NE(d.find(s), std::string::npos) << s;
  }
}

}  // namespace
}  // namespace vtprune

namespace vtprune {
namespace {

// One syntax for method options on every command line (bench --methods, eval / viz --opt).
TEST(MethodSpecs, OneSyntaxForEveryCommand) {
  const MethodSpec spec = parse_method_spec("prumerge:layer=-2:k_nn=8");
  EXPECT_EQ(spec.name, "prumerge");
  EXPECT_EQ(spec.options, (std::vector<std::string>{"layer=-2", "k_nn=8"}));
  EXPECT_EQ(parse_method_spec("none").options.size(), 0u);
  EXPECT_THROW(parse_method_spec("nosuch:layer=1"), Error);
  EXPECT_THROW(parse_method_spec("prumerge:layer"), Error);
  const auto routed = parse_routed_option("hiprune:alpha=0.2");
  ASSERT_TRUE(routed.has_value());
  EXPECT_EQ(routed->name, "hiprune");
  EXPECT_EQ(routed->options, std::vector<std::string>{"alpha=0.2"});
  EXPECT_FALSE(parse_routed_option("alpha=0.2").has_value());  // every chosen method that has the option
  try {
    parse_routed_option("prumerge.layer=-2");
    ADD_FAILURE() << "the older method.key=value was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prumerge:layer=-2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_routed_option("layer"), Error);
  EXPECT_THROW(parse_routed_option("hiprune:alpha=0.2:beta=1"), Error);
}

}  // namespace
}  // namespace vtprune
