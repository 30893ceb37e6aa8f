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

// The tiny Qwen2.5-VL pair (libmtmd's encoder; its 252 x 196 image -> 7 x 9 = 63 merged tokens, 3 x 2 windows).
const std::filesystem::path& tiny_qwen_models() {
  static const std::filesystem::path dir = [] {
    const auto d = temp_dir("bench_qwen_models");
    std::string out;
    const int rc = run_command(vtprune_binary().string() + " make-test-model --shape qwen2.5-vl --out " + d.string(), &out);
    EXPECT_EQ(rc, 0) << out;
    return d;
  }();
  return dir;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
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

// LLaVA-NeXT: the tiny pair's 640 x 320 image is the overview + 2 crops, each a 577-token ViT pass; the FLOP model
// counts every tile, the rows every tile's tokens, and the encoder-only rows (one tile of several) are left out.
TEST(bench_cli, LlavaNextCountsEveryTile) {
  const auto d = temp_dir("bench_next_models");
  std::string out;
  ASSERT_EQ(run_command(vtprune_binary().string() + " make-test-model --shape llava-next --out " + d.string(), &out), 0) << out;
  const auto m = vtprune::bench::read_flop_model(d / "llm.gguf", d / "mmproj.gguf");
  EXPECT_EQ(m.family, "llava-next");
  EXPECT_FALSE(m.dynamic_resolution());
  EXPECT_EQ(m.vit_patches, 576);
  vtprune::bench::FlopModel three = m;
  three.tiles = 3;
  EXPECT_DOUBLE_EQ(three.vit_flops(22), 3 * m.vit_flops(22));
  const auto res = temp_dir("bench_next_out");
  const std::string cmd = vtprune_binary().string() + " bench -m " + (d / "llm.gguf").string() + " --mmproj " +
                          (d / "mmproj.gguf").string() + " --image " + (d / "image.png").string() +
                          " --methods hiprune --budgets 0.112 --repeat 1 --warmup 0 -t 1 -n 1 --json " + (res / "r.json").string();
  ASSERT_EQ(run_command(cmd, &out), 0) << out;
  const json j = read_json(res / "r.json");
  EXPECT_EQ(j["flop_model"]["tiles"], 3);
  EXPECT_TRUE(j["encoder"].empty());
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) EXPECT_EQ(row["tokens_in"], 3 * 576);
  EXPECT_EQ(j["rows"][1]["tokens_kept"], vtprune::Budget::fraction(0.112).resolve(3 * 576));
  EXPECT_GT(j["rows"][1]["ideal_speedup"].get<double>(), 1.0);
}

TEST(bench_flops, QwenMatchesHandCountOnTinyModel) {
  const auto& models = tiny_qwen_models();
  auto m = vtprune::bench::read_flop_model(models / "llm.gguf", models / "mmproj.gguf");
  // tiny Qwen2.5-VL: ViT D = 64, SwiGLU ff = 128, 4 blocks with n_wa_pattern 2 (blocks 1 and 3 full attention),
  // patch 14, merge 2, 112-px windows = 4 x 4 merged tokens; merger 256 -> 256 -> 64. LLM qwen2vl 64 wide,
  // ff 128, 2 layers, 4 heads (head 16), 2 KV heads, q/k/v biases, tied output, vocab 2048.
  EXPECT_EQ(m.family, "qwen2.5-vl");
  EXPECT_TRUE(m.dynamic_resolution());
  EXPECT_TRUE(m.projector_in_encoder);
  EXPECT_EQ(m.vit_stored_layers, 4);
  EXPECT_EQ(m.merge, 2);
  EXPECT_EQ(m.n_wa_pattern, 2);
  EXPECT_EQ(m.window_tokens, 4);
  EXPECT_EQ(m.vit_block_params, 4 * 64 * 64 + 3 * 64 * 128);       // q, k, v, out + gate, up, down
  EXPECT_EQ(m.patch_embd_params, 2 * 3 * 14 * 14 * 64);             // both Conv3D halves
  EXPECT_EQ(m.projector_params, 256 * 256 + 256 * 64);              // mm.0 + mm.2
  EXPECT_EQ(m.llm_block_params, 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128));  // GQA: k, v 2 x 16 wide
  EXPECT_EQ(m.llm_vocab, 2048);
  EXPECT_EQ(m.vit_patches, 0);  // the grid is the image's
  EXPECT_FALSE(m.full_attention_block(0));
  EXPECT_TRUE(m.full_attention_block(1));
  EXPECT_FALSE(m.full_attention_block(2));
  EXPECT_TRUE(m.full_attention_block(3));

  m.set_image_grid(7, 9);  // 252 x 196 px -> 18 x 14 patches -> 7 x 9 tokens
  EXPECT_EQ(m.vit_patches, 252);
  EXPECT_EQ(m.vit_tokens, 252);
  // windows: rows of 4 + 3 tokens, columns of 4 + 4 + 1; a window of a x b tokens holds 4ab patches:
  // sum (4ab)^2 = 16 (4^2 + 3^2)(4^2 + 4^2 + 1^2) = 16 * 25 * 33
  EXPECT_EQ(m.window_pairs, 13200);
  const double T = 252, D = 64;
  const double patch = 2.0 * T * (2 * 3 * 14 * 14 * 64);
  const double weights = 2.0 * T * (4 * 64 * 64 + 3 * 64 * 128);
  const double windowed = weights + 4.0 * 13200 * D, full = weights + 4.0 * T * T * D;
  EXPECT_DOUBLE_EQ(m.vit_flops(4), patch + windowed + full + windowed + full);
  EXPECT_DOUBLE_EQ(m.vit_flops(1), patch + windowed);
  EXPECT_DOUBLE_EQ(m.projector_flops(63), 2.0 * 63 * (256 * 256 + 256 * 64));
  EXPECT_DOUBLE_EQ(m.tap_flops(), 2.0 * T * T * D);
  const double llm_block = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128);
  // causal attention over 10 positions: 2 layers x (QK^T + AV) x 2 x head_dim x heads x 10 * 11 / 2 pairs
  EXPECT_DOUBLE_EQ(m.prefill_flops(10), 2.0 * llm_block * 10 + 2 * 2.0 * 2 * 16 * 4 * 55 + 2.0 * 64 * 2048);
}

TEST(bench_mtmd, TemplateFlagsFollowTheFamily) {
  EXPECT_EQ(vtprune::bench::mtmd_template_args("llava-1.5"), (std::vector<std::string>{"--chat-template", "vicuna"}));
  EXPECT_EQ(vtprune::bench::mtmd_template_args("qwen2.5-vl"), std::vector<std::string>{"--jinja"});
  vtprune::bench::MtmdCommand c{.binary = "cli", .llm = "l", .mmproj = "p", .image = "i", .prompt = "q", .threads = 2,
                                .n_ctx = 4096, .n_batch = 2048, .template_args = {"--jinja"}};
  const auto argv = vtprune::bench::mtmd_argv(c);
  const std::vector<std::string> want{"cli", "-m", "l", "--mmproj", "p", "--image", "i", "-p", "q", "--jinja",
                                      "-n", "1", "--temp", "0", "--seed", "0", "-t", "2", "-tb", "2", "-c", "4096",
                                      "-b", "2048", "-ub", "2048", "--log-jsonl", "--log-timestamps"};
  EXPECT_EQ(argv, want);
  // --flash-attn on / off reaches llama-mtmd-cli as its -fa (auto: its default, no flag)
  c.flash_attn = "off";
  const auto off = vtprune::bench::mtmd_argv(c);
  ASSERT_EQ(off.size(), want.size() + 2);
  EXPECT_EQ(off[16], "-fa");
  EXPECT_EQ(off[17], "off");
}

std::string qwen_bench_base() {
  const auto& models = tiny_qwen_models();
  return vtprune_binary().string() + " bench -m " + (models / "llm.gguf").string() + " --mmproj " +
         (models / "mmproj.gguf").string() + " --image " + (models / "image.png").string();
}

TEST(bench_cli, QwenRatiosFlopsEncoderRowsAndMtmd) {
  const auto out = temp_dir("bench_qwen_out");
  std::string output;
  std::string cmd = qwen_bench_base() + " --methods hiprune,random --budgets all,0.334,0.112 --repeat 1 --warmup 0 -t 1 -n 2 --json " +
                    (out / "r.json").string() + " --markdown " + (out / "r.md").string();
#ifdef VTPRUNE_MTMD_CLI
  cmd += std::string(" --compare-mtmd ") + VTPRUNE_MTMD_CLI;
#endif
  ASSERT_EQ(run_command(cmd, &output), 0) << output;
  const json j = read_json(out / "r.json");
  EXPECT_EQ(j["family"], "qwen2.5-vl");
  EXPECT_EQ(j["vision_encoder"], "mtmd");
  EXPECT_EQ(j["image"]["width"], 252);
  EXPECT_EQ(j["image"]["height"], 196);
  EXPECT_EQ(j["image"]["grid_h"], 7);
  EXPECT_EQ(j["image"]["grid_w"], 9);
  EXPECT_EQ(j["flop_model"]["vit_patches"], 252);
  EXPECT_EQ(j["flop_model"]["window_pairs"], 13200);
  // none (added, once) + hiprune x 3 + random x 3
  ASSERT_EQ(j["rows"].size(), 7u);
  EXPECT_EQ(j["rows"][0]["method"], "none");
  const auto& none = j["rows"][0];
  const auto m = [&] {
    auto fm = vtprune::bench::read_flop_model(tiny_qwen_models() / "llm.gguf", tiny_qwen_models() / "mmproj.gguf");
    fm.set_image_grid(7, 9);
    return fm;
  }();
  for (const auto& row : j["rows"]) {
    const std::string what = row["method"].get<std::string>() + "@" + row["budget"].get<std::string>();
    EXPECT_EQ(row["tokens_in"], 63) << what;
    EXPECT_EQ(row["vit_layers_run"], 4) << what;
    // the ViT and the merger run on every token whatever the method keeps
    EXPECT_DOUBLE_EQ(row["flops"]["vit"].get<double>(), m.vit_flops(4)) << what;
    EXPECT_DOUBLE_EQ(row["flops"]["projector"].get<double>(), m.projector_flops(63)) << what;
    EXPECT_DOUBLE_EQ(row["flops"]["prefill"].get<double>(), m.prefill_flops(row["n_prompt_tokens"].get<int64_t>())) << what;
    // none's prompt minus the pruned tokens
    EXPECT_EQ(none["n_prompt_tokens"].get<int>() - row["n_prompt_tokens"].get<int>(), 63 - row["tokens_kept"].get<int>()) << what;
    EXPECT_GT(row["ttft_ms"]["median"].get<double>(), 0.0) << what;
  }
  // retention ratios round half to even on the 63 tokens: 0.334 -> 21, 0.112 -> 7 (random keeps exactly that;
  // HiPrune's official register rule may keep fewer)
  EXPECT_EQ(j["rows"][5]["method"], "random");
  EXPECT_EQ(j["rows"][5]["budget"], "0.334");
  EXPECT_EQ(j["rows"][5]["tokens_kept"], 21);
  EXPECT_EQ(j["rows"][6]["tokens_kept"], 7);
  EXPECT_EQ(j["rows"][3]["method"], "hiprune");
  EXPECT_EQ(j["rows"][3]["budget"], "0.112");
  EXPECT_LE(j["rows"][3]["tokens_kept"].get<int>(), 7);
  EXPECT_GT(j["rows"][3]["ideal_speedup"].get<double>(), 1.0);
  // HiPrune taps two blocks (object 15 and the last, scaled to this 4-block ViT): dense QK^T each, not in the total
  EXPECT_DOUBLE_EQ(j["rows"][3]["flops"]["taps"].get<double>(), 2 * m.tap_flops());
  EXPECT_DOUBLE_EQ(j["rows"][5]["flops"]["taps"].get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(none["ideal_speedup"].get<double>(), 1.0);
  // encoder rows from the end-to-end runs: none (no taps), hiprune (taps); random taps nothing
  ASSERT_GE(j["encoder"].size(), 2u);
  EXPECT_EQ(j["encoder"][0]["name"], "libmtmd ViT + merger, no taps (none's runs)");
  EXPECT_EQ(j["encoder"][0]["ms"]["n"], 1);
  EXPECT_NE(j["encoder"][1]["name"].get<std::string>().find("hiprune taps"), std::string::npos);
  EXPECT_EQ(j["encoder"][1]["ms"]["n"], 3);  // all three budgets' runs
  EXPECT_FALSE(j["encoder"][1]["vs_no_taps"].is_null());
#ifdef VTPRUNE_MTMD_CLI
  ASSERT_EQ(j["encoder"].size(), 3u);
  EXPECT_FALSE(j["encoder"][0]["vs_mtmd"].is_null());
  ASSERT_TRUE(j["mtmd"].is_object());
  const auto argv = j["mtmd"]["argv"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--jinja"), argv.end());
  EXPECT_EQ(std::find(argv.begin(), argv.end(), "vicuna"), argv.end());
  // (the same prompt on both sides is tests/pipeline/test_qwen.cpp's; this build's log does not count its tokens)
  EXPECT_GT(j["mtmd"]["ttft_ms"]["median"].get<double>(), 0.0);
  EXPECT_GT(j["mtmd"]["encode_ms"]["median"].get<double>(), 0.0);
  EXPECT_FALSE(none["ttft_vs_mtmd"].is_null());
#else
  EXPECT_EQ(j["encoder"].size(), 2u);
#endif
  const std::string md = read_text(out / "r.md");
  EXPECT_NE(md.find("252×196 → 7×9 = 63 LLM tokens"), std::string::npos) << md;
  EXPECT_NE(md.find("| random | 0.112 | 7 |"), std::string::npos) << md;
  EXPECT_NE(md.find("taps GFLOP"), std::string::npos) << md;
}

TEST(bench_cli, QwenBadBudgetsAndRefusedMethodsFail) {
  const std::string base = qwen_bench_base() + " --json /dev/null --repeat 1 --warmup 0 -t 1 -n 1";
  std::string out;
  // a ratio that rounds to 0 of the 63 tokens, and a count above them: named before anything is measured
  EXPECT_EQ(run_command(base + " --methods random --budgets 0.001", &out), 1);
  EXPECT_NE(out.find("0.001"), std::string::npos) << out;
  EXPECT_NE(out.find("63"), std::string::npos) << out;
  EXPECT_EQ(out.find("run 1/1"), std::string::npos) << out;
  EXPECT_EQ(run_command(base + " --methods random --budgets 64", &out), 1);
  EXPECT_NE(out.find("64"), std::string::npos) << out;
  // PruMerge needs a CLS token, which Qwen2.5-VL's ViT does not have
  EXPECT_EQ(run_command(base + " --methods prumerge", &out), 1);
  EXPECT_NE(out.find("prumerge"), std::string::npos) << out;
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
