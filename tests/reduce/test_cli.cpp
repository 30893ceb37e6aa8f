// The `vtprune reduce` contract (other tools rely on it) and `vtprune make-case`, through the real binary.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "golden.h"
#include "vtprune/case_file.h"

namespace vtprune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

std::string bin() { return test::vtprune_binary().string(); }

TEST(Cli, ReduceWritesResultAndTokensForAGoldenCase) {
  const auto cases = test::golden_cases("prumerge_plus");
  if (cases.empty()) GTEST_SKIP() << "../shared/golden not found (set VTPRUNE_SHARED_DIR)";
  const fs::path out = test::temp_dir("cli");
  std::string log;
  ASSERT_EQ(test::run_command(bin() + " reduce --case " + cases[0].string() + " --out " + out.string(), &log), 0) << log;
  const json result = read_json(out / "result.json");
  const json expected = read_json(cases[0] / "case.json")["expected"];
  EXPECT_EQ(result["method"], "prumerge_plus");
  EXPECT_EQ(result["kept"], expected["kept"]);
  EXPECT_EQ(result["index_space"], "patch");
  const auto rows = result["rows"].get<int64_t>(), dim = result["dim"].get<int64_t>();
  EXPECT_EQ(rows, static_cast<int64_t>(expected["kept"].size()) + 1);
  EXPECT_EQ(fs::file_size(out / "tokens.f32"), static_cast<uintmax_t>(rows * dim * 4));
}

TEST(Cli, ReduceUsesSequenceIndicesForVisionZip) {
  const auto cases = test::golden_cases("visionzip");
  if (cases.empty()) GTEST_SKIP() << "../shared/golden not found (set VTPRUNE_SHARED_DIR)";
  const fs::path out = test::temp_dir("cli");
  ASSERT_EQ(test::run_command(bin() + " reduce -q --case " + cases[0].string() + " --out " + out.string()), 0);
  const json result = read_json(out / "result.json");
  EXPECT_EQ(result["index_space"], "sequence");
  EXPECT_EQ(result["kept"][0], 0);  // CLS
  EXPECT_EQ(result["selection_order"], read_json(cases[0] / "case.json")["expected"]["kept"]);
}

TEST(Cli, ReduceRunsCdPrunerGoldenCaseAndEveryRelevance) {
  const auto cases = test::golden_cases("cdpruner");
  if (cases.empty()) GTEST_SKIP() << "../shared/golden/cdpruner not found (set VTPRUNE_SHARED_DIR)";
  const fs::path out = test::temp_dir("cli");
  std::string log;
  ASSERT_EQ(test::run_command(bin() + " reduce -q --case " + cases[0].string() + " --out " + out.string(), &log), 0) << log;
  const json result = read_json(out / "result.json");
  const json expected = read_json(cases[0] / "case.json")["expected"];
  EXPECT_EQ(result["kept"], expected["kept"]);
  EXPECT_EQ(result["selection_order"], expected["selection_order"]);
  EXPECT_EQ(result["relevance"].size(), 576u);
  // a synthetic case carries the inputs of every relevance mode (prompt_embeddings for llm)
  const fs::path dir = test::temp_dir("case");
  ASSERT_EQ(test::run_command(bin() + " make-case --method cdpruner --grid 6x8 --budget 12 --out " + dir.string(), &log), 0) << log;
  for (const char* mode : {"clip", "llm", "none"}) {
    SCOPED_TRACE(mode);
    ASSERT_EQ(test::run_command(bin() + " reduce -q --case " + dir.string() + " --out " + out.string() +
                                " --opt relevance=" + mode, &log), 0) << log;
    const json r = read_json(out / "result.json");
    EXPECT_EQ(r["kept"].size(), 12u);
    EXPECT_EQ(r["selection_order"].size(), 12u);
    EXPECT_EQ(r.contains("relevance"), std::string(mode) != "none");
  }
}

TEST(Cli, BadCasesFailWithOneLine) {
  const fs::path dir = test::temp_dir("bad");
  const fs::path out = test::temp_dir("out");
  auto expect_fail = [&](const std::string& fragment) {
    std::string log;
    EXPECT_NE(test::run_command(bin() + " reduce --case " + dir.string() + " --out " + out.string(), &log), 0);
    EXPECT_NE(log.find(fragment), std::string::npos) << log;
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  };
  expect_fail("case.json: cannot open");
  std::ofstream(dir / "case.json") << "{not json";
  expect_fail("malformed JSON");
  std::ofstream(dir / "case.json") << R"({"method": "tome"})";
  expect_fail("unknown method 'tome'");
  std::ofstream(dir / "case.json") << R"({"method": "fastervlm", "params": {"budget": 8}, "inputs": {"attn": {"file": "attn.f32", "shape": [1, 50, 50]}}})";
  expect_fail("attn.f32: cannot read");
  std::ofstream(dir / "attn.f32") << "short";
  expect_fail("has 5 bytes, expected 2500 float32 values");
  std::ofstream(dir / "case.json") << R"({"method": "fastervlm", "params": {"budget": 8, "n_patches": 49}, "inputs": {"attn": {"file": "../x.f32", "shape": [1, 50, 50]}}})";
  expect_fail("inside the case directory");
  std::ofstream(dir / "case.json") << R"({"method": "hiprune", "params": {"n_patches": 48}})";
  expect_fail("not square");
}

TEST(Cli, MakeCaseThenReduceRoundTrip) {
  for (const auto& m : methods()) {
    SCOPED_TRACE(m.name);
    const fs::path dir = test::temp_dir("case"), out = test::temp_dir("out");
    std::string log;
    ASSERT_EQ(test::run_command(bin() + " make-case --method " + m.name + " --grid 6x8 --out " + dir.string() +
                                " --budget 12", &log), 0) << log;
    ASSERT_EQ(test::run_command(bin() + " reduce -q --case " + dir.string() + " --out " + out.string(), &log), 0) << log;
    const json result = read_json(out / "result.json");
    EXPECT_EQ(result["method"], m.name);
    EXPECT_LE(result["rows"].get<int64_t>(), m.budget_use == BudgetUse::Ignored ? 48 : 12);
  }
}

TEST(Cli, ShippedExamplesAreReproducibleByMakeCase) {
  // examples/ is stored data written by `vtprune make-case` (examples/README.md): regenerating each case with the
  // parameters in its case.json must give the same case.json byte for byte (integers and strings only: exact by
  // construction) and the same float inputs up to the rounding that differs between CPU targets. The generator's
  // arithmetic is not bit-reproducible across builds: its dot products vectorise to the target's width (4, 8 or
  // 16 lanes: another summation order), -march targets with FMA contract a*b+c, and libstdc++'s normal
  // distribution is inlined with the same flags. Measured against the stored files (made with -march=native on
  // an AVX-512 CPU): x86-64-v3 attention maps 1.9e-6 relative, x86-64 / x86-64-v2 features 1.9e-6 absolute.
  // Any change of seed, draw order, shape or formula moves the values by O(1), far outside these tolerances.
  const fs::path examples = test::source_dir() / "examples";
  ASSERT_TRUE(fs::exists(examples / "README.md")) << examples;
  int checked = 0;
  for (const auto& e : fs::directory_iterator(examples)) {
    if (!fs::exists(e.path() / "case.json")) continue;
    const json c = read_json(e.path() / "case.json");
    const json& p = c["params"];
    std::string cmd = bin() + " make-case --method " + c["method"].get<std::string>() + " --grid " +
                      std::to_string(p["grid_h"].get<int>()) + "x" + std::to_string(p["grid_w"].get<int>()) +
                      " --heads " + std::to_string(p["heads"].get<int>()) + " --seed " +
                      std::to_string(p["seed"].get<uint64_t>());
    if (p.contains("budget")) cmd += " --budget " + p["budget"].get<std::string>();
    for (const auto& [name, spec] : c["inputs"].items()) {
      if (name == "features" || name == "hidden") cmd += " --dim " + std::to_string(spec["shape"][1].get<int64_t>());
    }
    const fs::path dir = test::temp_dir("regen");
    ASSERT_EQ(test::run_command(cmd + " --out " + dir.string()), 0) << cmd;
    int inputs = 0;
    for (const auto& f : fs::directory_iterator(e.path())) {
      const std::string file = f.path().filename().string();
      const auto input = std::find_if(c["inputs"].begin(), c["inputs"].end(),
                                      [&](const json& spec) { return spec["file"] == file; });
      if (input == c["inputs"].end()) {  // case.json: exact
        std::ifstream a(f.path(), std::ios::binary), b(dir / file, std::ios::binary);
        const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
        EXPECT_EQ(sa, sb) << f.path();
        continue;
      }
      ++inputs;
      int64_t count = 1;
      for (const auto& extent : (*input)["shape"]) count *= extent.get<int64_t>();
      const auto stored = io::read_f32(f.path(), count), made = io::read_f32(dir / file, count);
      // Attention maps (post-softmax, 2.8e-6 .. 0.57): relative 2e-5. Each value is exp(x_j - max) / sum; the
      // logit x_j = q.k / 4 + 2 boost (|x| < 8) moves by a few float ulps of 8 (~1e-6 each) with another dot
      // order or FMA, and the 145-term sum by at most 145 roundings (8.6e-6 relative): <= ~1.5e-5 in the worst
      // case. Features, q, k (|v| < 4): absolute 1e-5. Features are sin(arg) with arg up to 3pi + 3pi + 2pi
      // (float ulp 1.9e-6) rounded differently with or without FMA, plus a normal draw (polar method: a few
      // roundings of values < 4).
      const bool attention = file.rfind("attn", 0) == 0;
      double worst = 0;
      for (size_t i = 0; i < stored.size(); ++i) {
        const double err = std::abs(double{made[i]} - double{stored[i]});
        worst = std::max(worst, attention ? err / std::abs(double{stored[i]}) : err);
      }
      EXPECT_LE(worst, attention ? 2e-5 : 1e-5) << f.path() << (attention ? " (relative)" : " (absolute)");
    }
    EXPECT_EQ(inputs, static_cast<int>(c["inputs"].size())) << e.path();
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

}  // namespace
}  // namespace vtprune
