// The benchmark report as JSON, markdown and a stacked-bar PNG of the TTFT breakdown.
#include <cstdio>
#include <sstream>
#include <thread>

#include "vtprune/reduce.h"
#include "vtprune_bench.h"
#ifdef VTPRUNE_BENCH_HAVE_DRAW
#include "vtprune/draw.h"
#endif

namespace vtprune::bench {
namespace {

nlohmann::json spread_json(const Spread& s) {
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"n", s.n}};
}

template <typename T>
nlohmann::json optional_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

std::string f(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// "1234 (1200–1300)": median with its range
std::string ms_cell(const Spread& s, const char* format = "%.1f") {
  if (s.n == 0) return "–";
  if (s.n == 1) return f(format, s.median);
  return f(format, s.median) + " (" + f(format, s.min) + "–" + f(format, s.max) + ")";
}

std::string opt_ratio(const std::optional<double>& v, const char* format = "%.3f") {
  return v ? f(format, *v) : "–";
}

double mib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

#ifdef VTPRUNE_BENCH_HAVE_DRAW
// Short bar labels: dozens of bars share the chart's width.
std::string short_name(const std::string& spec) {
  const std::string method = spec.substr(0, spec.find(':'));  // options are in the tables, not on the bars
  static const std::vector<std::pair<std::string, std::string>> names{
      {"hiprune", "HiP"},   {"prumerge_plus", "PM+"}, {"prumerge", "PM"}, {"visionzip", "VZip"},
      {"fastervlm", "FVLM"}, {"divprune", "Div"},     {"random", "rand"}};
  for (const auto& [name, abbreviation] : names) {
    if (method == name) return abbreviation;
  }
  return method;
}
#endif

}  // namespace

nlohmann::json to_json(const BenchReport& r) {
  const BenchParams& p = r.params;
  nlohmann::json j;
  j["params"] = {{"llm", p.llm_path},         {"mmproj", p.mmproj_path},   {"image", p.image_path},
                 {"prompt", p.prompt},        {"methods", p.methods},      {"budgets", p.budgets},
                 {"repeat", p.repeat},        {"warmup", p.warmup},        {"threads", r.threads},
                 {"n_predict", p.n_predict},  {"n_ctx", p.n_ctx},          {"compare_mtmd", p.mtmd_cli},
                 {"command_line", p.command_line}};
  j["machine"] = {{"cpu", r.cpu},
                  {"hardware_threads", std::thread::hardware_concurrency()},
                  {"llama_system_info", r.system_info},
                  {"load_average_before", r.load_before},
                  {"load_average_after", r.load_after}};
  const FlopModel& m = r.flops;
  j["flop_model"] = {{"vit_patches", m.vit_patches},           {"vit_tokens", m.vit_tokens},
                     {"vit_dim", m.vit_dim},                   {"vit_stored_layers", m.vit_stored_layers},
                     {"tiles", m.tiles},
                     {"vit_block_params", m.vit_block_params}, {"patch_embd_params", m.patch_embd_params},
                     {"projector_params", m.projector_params}, {"llm_layers", m.llm_layers},
                     {"llm_embd", m.llm_embd},                 {"llm_heads", m.llm_heads},
                     {"llm_vocab", m.llm_vocab},               {"llm_block_params", m.llm_block_params},
                     {"note", "multiply-add = 2 FLOPs; matrices only; ViT attention T x T both ways; LLM causal "
                              "attention + output head on the last position"}};
  j["family"] = r.family;
  j["vision_encoder"] = r.encoder_name;  // "own" | "mtmd" (j["encoder"] holds the encoder rows)
  j["image"] = {{"width", r.image_width}, {"height", r.image_height}, {"grid_h", m.grid_h}, {"grid_w", m.grid_w}};
  if (m.dynamic_resolution()) {
    j["flop_model"]["family"] = m.family;
    j["flop_model"]["grid_h"] = m.grid_h;
    j["flop_model"]["grid_w"] = m.grid_w;
    j["flop_model"]["merge"] = m.merge;
    j["flop_model"]["n_wa_pattern"] = m.n_wa_pattern;
    j["flop_model"]["window_tokens"] = m.window_tokens;
    j["flop_model"]["window_pairs"] = m.window_pairs;
    j["flop_model"]["projector_in_encoder"] = m.projector_in_encoder;
    j["flop_model"]["note"] =
        "multiply-add = 2 FLOPs; matrices only (biases, norms, RoPE, activations, softmax left out); patch embedding "
        "= both Conv3D halves on every patch; ViT attention (QK^T + AV) over the patches of each window in windowed "
        "blocks and over all T x T patch pairs in every n_wa_pattern-th block; the merger on every merged token "
        "inside the encoder; LLM causal attention + the (tied) output head on the last position. Taps: dense QK^T "
        "over all patches per tapped block, outside the graph (reported, not in the total)";
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const Row& row : r.rows) {
    rows.push_back({{"method", row.method},
                    {"budget", row.budget},
                    {"tokens_in", row.tokens_in},
                    {"tokens_kept", row.tokens_kept},
                    {"n_prompt_tokens", row.n_prompt_tokens},
                    {"n_generated", row.n_generated},
                    {"kv_bytes", row.kv_bytes},
                    {"kv_bytes_analytic", row.kv_bytes_analytic},
                    {"peak_rss_bytes", row.peak_rss_bytes},
                    {"image_decode_ms", spread_json(row.image_decode_ms)},
                    {"preprocess_ms", spread_json(row.preprocess_ms)},
                    {"encode_ms", spread_json(row.encode_ms)},
                    {"reduce_ms", spread_json(row.reduce_ms)},
                    {"project_ms", spread_json(row.project_ms)},
                    {"prefill_ms", spread_json(row.prefill_ms)},
                    {"ttft_ms", spread_json(row.ttft_ms)},
                    {"decode_tok_s", spread_json(row.decode_tok_s)},
                    {"vit_layers_run", row.vit_layers_run},
                    {"flops", {{"vit", row.flops_vit},
                               {"projector", row.flops_projector},
                               {"prefill", row.flops_prefill},
                               {"taps", row.flops_taps},
                               {"total", row.flops_total()}}},
                    {"ideal_speedup", row.ideal_speedup},
                    {"measured_speedup", row.measured_speedup},
                    {"speedup_vs_ideal", row.ideal_speedup > 0 ? row.measured_speedup / row.ideal_speedup : 0.0},
                    {"reduce_vs_encode", row.encode_ms.median > 0 ? row.reduce_ms.median / row.encode_ms.median : 0.0},
                    {"ttft_vs_mtmd", optional_json(row.ttft_vs_mtmd)}});
  }
  j["rows"] = rows;
  nlohmann::json enc = nlohmann::json::array();
  for (const EncoderRow& e : r.encoder) {
    enc.push_back({{"name", e.name},
                   {"layers", e.layers},
                   {"includes_projector", e.like_mtmd},
                   {"ms", spread_json(e.ms)},
                   {"per_layer_ms", e.per_layer_ms},
                   {"vs_mtmd", optional_json(e.vs_mtmd)},
                   {"vs_no_taps", optional_json(e.vs_no_taps)}});
  }
  j["encoder"] = enc;
  if (r.mtmd) {
    j["mtmd"] = {{"argv", r.mtmd->argv},
                 {"ttft_ms", spread_json(r.mtmd->ttft_ms)},
                 {"encode_ms", spread_json(r.mtmd->encode_ms)},
                 {"image_decode_ms", spread_json(r.mtmd->image_decode_ms)},
                 {"n_prompt_tokens", r.mtmd->n_prompt_tokens},
                 {"peak_rss_bytes", r.mtmd->peak_rss_bytes},
                 {"vit_layers_run", r.mtmd->vit_layers_run}};
  } else {
    j["mtmd"] = nullptr;
  }
  return j;
}

std::string to_markdown(const BenchReport& r) {
  const BenchParams& p = r.params;
  const FlopModel& m = r.flops;
  std::ostringstream md;
  md << "### TTFT by method and budget\n\n";
  md << "`" << p.command_line << "`\n\n";
  md << "CPU: " << r.cpu << ", " << r.threads << (r.threads == 1 ? " thread" : " threads") << "; load average " << f("%.2f", r.load_before) << " before, "
     << f("%.2f", r.load_after) << " after. Median (min–max) of " << p.repeat << " runs, interleaved, after "
     << p.warmup << " warm-up run(s). Random weights: speed does not depend on weight values. ";
  if (m.dynamic_resolution()) {
    md << "Family " << r.family << " (encoder: " << r.encoder_name << "); image " << r.image_width << "×"
       << r.image_height << " → " << m.grid_h << "×" << m.grid_w << " = " << m.grid_h * m.grid_w << " LLM tokens ("
       << m.vit_patches << " ViT patches). ViT: " << m.vit_stored_layers << " blocks, D = " << m.vit_dim
       << ", attention in windows of " << m.window_tokens << "×" << m.window_tokens << " tokens except blocks ";
    std::string full;
    for (int b = 0; b < m.vit_stored_layers; ++b) {
      if (m.full_attention_block(b)) full += (full.empty() ? "" : ", ") + std::to_string(b);
    }
    md << full << " (full attention); LLM: ";
  } else {
    md << "ViT: " << m.vit_stored_layers << " stored blocks, D = " << m.vit_dim << ", " << m.vit_tokens << " tokens";
    if (m.tiles > 1) {
      md << " on each of " << m.tiles << " AnyRes tiles (image " << r.image_width << "×" << r.image_height
         << ": the overview + " << m.tiles - 1 << " crops, " << m.tiles * m.grid_h * m.grid_w << " LLM tokens)";
    }
    md << "; LLM: ";
  }
  md << m.llm_layers << " layers, n_embd " << m.llm_embd << ", "
     << f("%.1f", static_cast<double>(m.llm_block_params) / 1e6) << " M block parameters.\n\n";
  md << "| method | budget | kept | prompt tok | preprocess ms | encode ms | reduce ms | project ms | prefill ms "
        "| TTFT ms | speed-up | ideal | speed-up / ideal | TTFT / mtmd | KV MiB | peak RSS MiB | decode tok/s |\n";
  md << "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const Row& row : r.rows) {
    Spread pre = row.preprocess_ms;
    pre.median += row.image_decode_ms.median, pre.min += row.image_decode_ms.min, pre.max += row.image_decode_ms.max;
    md << "| " << row.method << " | " << row.budget << " | " << row.tokens_kept << " | " << row.n_prompt_tokens << " | "
       << f("%.1f", pre.median) << " | " << ms_cell(row.encode_ms, "%.0f") << " | " << f("%.2f", row.reduce_ms.median)
       << " | " << f("%.1f", row.project_ms.median) << " | " << ms_cell(row.prefill_ms, "%.0f") << " | "
       << ms_cell(row.ttft_ms, "%.0f") << " | " << f("%.2f×", row.measured_speedup) << " | "
       << f("%.2f×", row.ideal_speedup) << " | " << f("%.2f", row.measured_speedup / row.ideal_speedup) << " | "
       << opt_ratio(row.ttft_vs_mtmd, "%.2f") << " | " << f("%.1f", mib(row.kv_bytes)) << " | "
       << f("%.0f", mib(row.peak_rss_bytes)) << " | "
       << (row.decode_tok_s.n ? f("%.1f", row.decode_tok_s.median) : std::string("–")) << " |\n";
  }
  if (m.projector_in_encoder) {
    md << "\npreprocess = image file decode + the file's chat template + mtmd_tokenize (libmtmd's resize and "
          "normalise); encode = libmtmd's ViT + merger on all tokens (mtmd_encode_chunk) + read-back + the method's "
          "taps (attention statistics computed in the eval callback); project = 0 (the merger runs inside the "
          "encoder).";
  } else {
    md << "\npreprocess = image file decode + resize/pad/normalise.";
  }
  md << " speed-up = TTFT(none) / TTFT(row); ideal = "
        "FLOPs(none) / FLOPs(row), FLOPs = ViT + projector + LLM prefill (table below). KV MiB = "
        "llama_state_seq_get_size after prefill (F16 K and V of the prompt's positions). Peak RSS = VmHWM of the "
        "bench process during the row's runs (reset with /proc/self/clear_refs before each run), so it includes "
        "the resident (mmapped) weights of both models. Chart labels: HiP = hiprune, PM(+) = prumerge(_plus), "
        "VZip = visionzip, FVLM = fastervlm, Div = divprune, rand = random.\n\n";

  md << "### FLOPs and achieved rates\n\n";
  const bool taps_column = m.projector_in_encoder;
  md << "| method | budget | ViT layers | ViT GFLOP | projector GFLOP | prefill GFLOP | total GFLOP | "
     << (taps_column ? "taps GFLOP (not in total) | " : "") << "encode GFLOP/s | prefill GFLOP/s | reduce / encode |\n"
     << "|---|---|---|---|---|---|---|" << (taps_column ? "---|" : "") << "---|---|---|\n";
  for (const Row& row : r.rows) {
    // the encode stage's FLOPs: the ViT, plus the projector where the encoder runs it (libmtmd's merger)
    const double encode_flops = row.flops_vit + (m.projector_in_encoder ? row.flops_projector : 0.0);
    md << "| " << row.method << " | " << row.budget << " | " << row.vit_layers_run << " | " << f("%.1f", row.flops_vit / 1e9)
       << " | " << f("%.1f", row.flops_projector / 1e9) << " | " << f("%.1f", row.flops_prefill / 1e9) << " | "
       << f("%.1f", row.flops_total() / 1e9) << " | " << (taps_column ? f("%.1f", row.flops_taps / 1e9) + " | " : "")
       << f("%.0f", encode_flops / row.encode_ms.median / 1e6) << " | "
       << f("%.0f", row.flops_prefill / row.prefill_ms.median / 1e6) << " | "
       << f("%.2f%%", 100.0 * row.reduce_ms.median / row.encode_ms.median) << " |\n";
  }
  if (m.projector_in_encoder) {
    md << "\nencode GFLOP/s counts the ViT and the merger (both run in libmtmd's encode). ViT FLOPs: "
       << f("%.1f", m.vit_flops(static_cast<int>(m.vit_stored_layers)) / 1e9) << " GFLOP, of which attention "
       << f("%.1f", [&] {
            double a = 0;
            for (int b = 0; b < m.vit_stored_layers; ++b) a += 4.0 * m.vit_attention_pairs(b) * static_cast<double>(m.vit_dim);
            return a / 1e9;
          }())
       << " GFLOP (" << m.vit_tokens << " patches; windowed blocks: " << m.window_pairs
       << " (query, key) pairs per head, full blocks: " << m.vit_tokens * m.vit_tokens << ").\n";
  }

  if (!r.encoder.empty()) {
    md << "\n### Encoder alone (same mmproj, same image, " << r.threads << (r.threads == 1 ? " thread" : " threads") << ")\n\n";
    md << "| encoder | blocks run | ms | ms / block | vs llama-mtmd-cli | vs no taps |\n|---|---|---|---|---|---|\n";
    for (const EncoderRow& e : r.encoder) {
      md << "| " << e.name << " | " << e.layers << " | " << ms_cell(e.ms, "%.0f") << " | " << f("%.1f", e.per_layer_ms)
         << " | " << opt_ratio(e.vs_mtmd) << " | " << opt_ratio(e.vs_no_taps) << " |\n";
    }
    if (!m.projector_in_encoder) {
    md << "\nOurs: wall time of VisionModel::encode (graph build, compute, read-back). \"ViT\" rows: the tower only "
          "(vs no taps = the cost of a method's statistics). \"ViT + projector\" rows: the projector on all "
       << m.vit_patches << " rows in the same graph, which is what llama-mtmd-cli's \"encoding done in N ms\" covers. "
          "Our graph is HF-faithful: CLS first, all "
       << m.vit_stored_layers << " stored blocks (LLaVA's feature layer -2 is the last stored block); llama.cpp's clip "
          "graph runs one block fewer (llama.cpp #25817) and puts CLS last (#25814); the mtmd-compat row is our graph "
          "doing exactly that, i.e. the same work as llama.cpp.\n";
    } else {
      md << "\nNo encoder-only runs: these rows are the encode stage of the end-to-end runs above (libmtmd's graph "
            "through mtmd_encode_chunk with vtprune's eval callback installed, + read-back), pooled over each "
            "method's budgets. Untapped blocks run as in llama-mtmd-cli (flash attention); a tapped block's Q and K "
            "are copied out in the callback and its received attention is recomputed densely over all "
         << m.vit_tokens << " patches (taps GFLOP above), so vs no taps = the taps' cost. llama-mtmd-cli's row is "
            "its own \"image slice encoded in N ms\" (the same graph and merger, no callback).\n";
    }
  }
  if (r.mtmd) {
    md << "\n### llama-mtmd-cli on the same files\n\n";
    md << "`";
    for (size_t i = 0; i < r.mtmd->argv.size(); ++i) {
      const std::string& a = r.mtmd->argv[i];
      md << (i ? " " : "") << (a.find(' ') != std::string::npos ? "'" + a + "'" : a);
    }
    md << "`\n\n| TTFT ms | encode ms | image prefill ms | prompt tokens | peak RSS MiB |\n|---|---|---|---|---|\n";
    md << "| " << ms_cell(r.mtmd->ttft_ms, "%.0f") << " | " << ms_cell(r.mtmd->encode_ms, "%.0f") << " | "
       << (r.mtmd->image_decode_ms.max > 0 ? ms_cell(r.mtmd->image_decode_ms, "%.0f") : std::string("– (not logged)")) << " | "
       << (r.mtmd->n_prompt_tokens > 0 ? std::to_string(r.mtmd->n_prompt_tokens) : std::string("– (not logged)")) << " | "
       << f("%.0f", mib(r.mtmd->peak_rss_bytes)) << " |\n";
    md << "\nTTFT from its JSONL log timestamps: \"main: loading model\" (models loaded and warmed up) to the first "
          "generated piece — image file decode, preprocessing, encode, prefill, first sample, as ours.\n";
  }
  return md.str();
}

bool chart_available() {
#ifdef VTPRUNE_BENCH_HAVE_DRAW
  return true;
#else
  return false;
#endif
}

void save_ttft_chart(const BenchReport& r, const std::filesystem::path& png) {
#ifdef VTPRUNE_BENCH_HAVE_DRAW
  draw::StackedBarChart chart;
  std::ostringstream title;
  title << "TTFT breakdown, " << r.flops.llm_layers << "-layer " << r.flops.llm_embd << "-wide LLM ("
        << r.threads << " threads, median of " << r.params.repeat << ")";
  chart.title = title.str();
  chart.y_label = "seconds";
  chart.segment_names = {"preprocess", "encode", "reduce", "project", "prefill", "other"};
  for (const Row& row : r.rows) {
    const double pre = row.image_decode_ms.median + row.preprocess_ms.median;
    const double known = pre + row.encode_ms.median + row.reduce_ms.median + row.project_ms.median + row.prefill_ms.median;
    draw::Bar bar;
    bar.label = row.method == "none" ? "none" : short_name(row.method) + " " + row.budget;
    bar.segments = {pre / 1e3, row.encode_ms.median / 1e3, row.reduce_ms.median / 1e3, row.project_ms.median / 1e3,
                    row.prefill_ms.median / 1e3, std::max(0.0, row.ttft_ms.median - known) / 1e3};
    chart.bars.push_back(bar);
  }
  if (r.mtmd) {
    // llama-mtmd-cli reports encode and image prefill; the rest (file decode, preprocess, text prefill) is "other"
    const double encode = r.mtmd->encode_ms.median, image = r.mtmd->image_decode_ms.median;
    chart.bars.push_back({"mtmd-cli", {0.0, encode / 1e3, 0.0, 0.0, image / 1e3,
                                       std::max(0.0, r.mtmd->ttft_ms.median - encode - image) / 1e3}});
  }
  const int width = std::max(1100, 80 * static_cast<int>(chart.bars.size()) + 320);
  draw::render_stacked_bars(chart, width, 640).save_png(png);
#else
  throw Error("cannot write " + png.string() + ": vtprune was built without the draw library (src/draw)");
#endif
}

}  // namespace vtprune::bench
