// `vtprune bench` end to end on a tiny random-weight pair, plus the pieces it is built from.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_support.h"
#include "vtprune/reduce.h"
#include "vtprune_bench.h"

namespace {

using nlohmann::json;
using vtprune::test::run_command;
using vtprune::test::temp_dir;
using vtprune::test::vtprune_binary;

// One tiny model pair for the whole suite (LLaVA geometry: 576 patches, tiny widths).
const std::filesystem::path& tiny_models() {
  static const std::filesystem::path dir = [] {
    const auto d = temp_dir("bench_models");
    std::string out;
    const int rc = run_command(vtprune_binary().string() + " make-test-model --shape tiny --out " + d.string(), &out);
    EXPECT_EQ(rc, 0) << out;
    return d;
  }();
  return dir;
}

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

void expect_spread(const json& s, const std::string& what) {
  ASSERT_TRUE(s.is_object()) << what;
  for (const char* key : {"median", "min", "max", "n"}) EXPECT_TRUE(s.contains(key)) << what << "." << key;
  EXPECT_LE(s["min"].get<double>(), s["median"].get<double>()) << what;
  EXPECT_LE(s["median"].get<double>(), s["max"].get<double>()) << what;
}

TEST(bench_cli, TinyModelProducesEveryField) {
  const auto& models = tiny_models();
  const auto out = temp_dir("bench_out");
  std::string output;
  const std::string cmd = vtprune_binary().string() + " bench -m " + (models / "llm.gguf").string() + " --mmproj " +
                          (models / "mmproj.gguf").string() + " --image " + (models / "image.png").string() +
                          " --methods hiprune,divprune --budgets 576,64 --repeat 1 --warmup 0 -t 1 -n 2 --json " +
                          (out / "r.json").string() + " --markdown " + (out / "r.md").string();
  ASSERT_EQ(run_command(cmd, &output), 0) << output;
  const json j = read_json(out / "r.json");
  for (const char* key : {"params", "machine", "flop_model", "rows", "encoder", "mtmd"}) EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_TRUE(j["mtmd"].is_null());
  // none is added (speed-ups are relative to it) and runs once; the others once per budget
  ASSERT_EQ(j["rows"].size(), 5u);
  EXPECT_EQ(j["rows"][0]["method"], "none");
  EXPECT_EQ(j["rows"][0]["budget"], "all");
  int64_t kv_none = 0;
  for (const auto& row : j["rows"]) {
    const std::string what = row["method"].get<std::string>() + "@" + row["budget"].get<std::string>();
    for (const char* key : {"image_decode_ms", "preprocess_ms", "encode_ms", "reduce_ms", "project_ms", "prefill_ms",
                            "ttft_ms", "decode_tok_s"}) {
      expect_spread(row[key], what + "." + key);
    }
    for (const char* key : {"tokens_in", "tokens_kept", "n_prompt_tokens", "kv_bytes", "kv_bytes_analytic",
                            "peak_rss_bytes", "vit_layers_run", "ideal_speedup", "measured_speedup",
                            "speedup_vs_ideal", "reduce_vs_encode", "flops", "ttft_vs_mtmd"}) {
      EXPECT_TRUE(row.contains(key)) << what << "." << key;
    }
    EXPECT_EQ(row["tokens_in"], 576) << what;
    EXPECT_GT(row["ttft_ms"]["median"].get<double>(), 0.0) << what;
    EXPECT_GT(row["peak_rss_bytes"].get<int64_t>(), 0) << what;
    EXPECT_GT(row["flops"]["total"].get<double>(), 0.0) << what;
    if (row["method"] == "none") kv_none = row["kv_bytes"].get<int64_t>();
  }
  // KV bytes follow the kept tokens: hiprune@64 holds 512 fewer positions than none
  const auto& hip64 = j["rows"][2];
  ASSERT_EQ(hip64["method"], "hiprune");
  ASSERT_EQ(hip64["tokens_kept"], 64);
  EXPECT_EQ(j["rows"][0]["n_prompt_tokens"].get<int>() - hip64["n_prompt_tokens"].get<int>(), 512);
  EXPECT_LT(hip64["kv_bytes"].get<int64_t>(), kv_none);
  EXPECT_GT(hip64["ideal_speedup"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["rows"][0]["ideal_speedup"].get<double>(), 1.0);
  // encoder-only rows: ViT without taps, with hiprune's taps, with divprune's projector; ViT + projector
  // with our graph, with F16 K/V attention, and with llama.cpp's (one block fewer)
  ASSERT_EQ(j["encoder"].size(), 6u);
  EXPECT_EQ(j["encoder"][0]["name"], "ViT, no taps");
  EXPECT_EQ(j["encoder"][0]["layers"], 23);
  EXPECT_FALSE(j["encoder"][1]["vs_no_taps"].is_null());
  EXPECT_TRUE(j["encoder"][3]["includes_projector"].get<bool>());
  EXPECT_EQ(j["encoder"][4]["name"], "ViT + projector, ours --vit-f16-attention");
  EXPECT_EQ(j["encoder"][5]["layers"], 22);
  std::ifstream md(out / "r.md");
  const std::string text((std::istreambuf_iterator<char>(md)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("| hiprune | 64 | 64 |"), std::string::npos) << text;
}

TEST(bench_cli, BadArgumentsFailWithOneLine) {
  const auto& models = tiny_models();
  const std::string base = vtprune_binary().string() + " bench -m " + (models / "llm.gguf").string() + " --mmproj " +
                           (models / "mmproj.gguf").string() + " --image " + (models / "image.png").string() +
                           " --json /dev/null";
  std::string out;
  EXPECT_EQ(run_command(base + " --methods nosuchmethod", &out), 1);
  EXPECT_NE(out.find("nosuchmethod"), std::string::npos) << out;
  EXPECT_EQ(run_command(base + " --budgets 99999 --repeat 1 --warmup 0 --no-encoder-bench", &out), 1);
  EXPECT_NE(out.find("99999"), std::string::npos) << out;
  EXPECT_EQ(run_command(base + " --compare-mtmd /nonexistent/llama-mtmd-cli", &out), 1);
  EXPECT_NE(out.find("/nonexistent/llama-mtmd-cli"), std::string::npos) << out;
}

TEST(bench_mtmd, ParsesJsonlLog) {
  // the shape of llama-mtmd-cli's --log-jsonl --log-timestamps output (times in microseconds)
  const std::string log =
      R"({"type":"log","time":1000000,"level":"info","msg":"main: loading model: llm.gguf\n"})" "\n"
      R"({"type":"log","time":1100000,"level":"info","msg":"encoding mtmd batch, n_chunks = 1\n"})" "\n"
      R"({"type":"log","time":2600000,"level":"info","msg":"mtmd batch encoding done in 1500 ms\n"})" "\n"
      R"({"type":"log","time":2600100,"level":"info","msg":"decoding image batch 1/1, n_tokens_batch = 576\n"})" "\n"
      R"({"type":"log","time":6600000,"level":"info","msg":"image decoded (batch 1/1) in 3999 ms\n"})" "\n"
      R"({"type":"log","time":6900000,"level":"none","msg":"\n"})" "\n"
      R"({"type":"log","time":6901000,"level":"none","msg":"hello"})" "\n"
      R"({"type":"log","time":7000000,"level":"info","msg":"llama_perf_context_print: prompt eval time =    6000.00 ms /   617 tokens\n"})" "\n";
  const auto run = vtprune::bench::parse_mtmd_log(log);
  EXPECT_DOUBLE_EQ(run.encode_ms, 1500.0);
  EXPECT_DOUBLE_EQ(run.image_decode_ms, 3999.0);
  EXPECT_DOUBLE_EQ(run.ttft_ms, 5901.0);
  EXPECT_EQ(run.n_prompt_tokens, 617);
  EXPECT_THROW(vtprune::bench::parse_mtmd_log("not a log\n"), vtprune::Error);
  // the pinned build logs no "image decoded" line: the encode line anchors the image, and the piece may be empty
  const std::string pinned =
      R"({"type":"log","time":3724366,"level":"info","msg":"main: loading model: llm.gguf\n"})" "\n"
      R"({"type":"log","time":9461740,"level":"info","msg":"mtmd batch encoding done in 5214 ms\n"})" "\n"
      R"({"type":"log","time":24136746,"level":"none","msg":"\n"})" "\n"
      R"({"type":"log","time":24137123,"level":"none","msg":""})" "\n";
  EXPECT_NEAR(vtprune::bench::parse_mtmd_log(pinned).ttft_ms, 20412.757, 1e-6);
}

TEST(bench_flops, MatchesHandCountOnTinyModel) {
  const auto& models = tiny_models();
  const auto m = vtprune::bench::read_flop_model(models / "llm.gguf", models / "mmproj.gguf");
  // tiny: ViT D = 64, ff = 128, 23 stored blocks, 336 px / 14 px; LLM 64 wide, ff 128, 2 layers, vocab 1024
  EXPECT_EQ(m.vit_patches, 576);
  EXPECT_EQ(m.vit_stored_layers, 23);
  EXPECT_EQ(m.vit_block_params, 4 * 64 * 64 + 2 * 64 * 128);
  EXPECT_EQ(m.patch_embd_params, 3 * 14 * 14 * 64);
  EXPECT_EQ(m.projector_params, 64 * 64 + 64 * 64);
  EXPECT_EQ(m.llm_block_params, 2 * (4 * 64 * 64 + 3 * 64 * 128));
  EXPECT_EQ(m.llm_vocab, 1024);
  const double T = 577;
  EXPECT_DOUBLE_EQ(m.vit_flops(1), 2.0 * 576 * 3 * 14 * 14 * 64 + 2.0 * T * (4 * 64 * 64 + 2 * 64 * 128) + 4.0 * T * T * 64);
  EXPECT_DOUBLE_EQ(m.prefill_flops(1), 2.0 * 2 * (4 * 64 * 64 + 3 * 64 * 128) + 2 * 2.0 * 2 * 16 * 4 * 1 + 2.0 * 64 * 1024);
}

TEST(bench_stats, SpreadIsMedianMinMax) {
  const auto s = vtprune::bench::spread({3, 1, 2, 10});
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 10);
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(vtprune::bench::spread({}).n, 0);
}

}  // namespace
