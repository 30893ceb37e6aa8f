// The benchmark matrix: encoder-only comparison, every method x budget through the full pipeline (repeats
// interleaved so slow drifts of the machine hit every configuration alike), then llama-mtmd-cli.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "llama.h"
#include "vtprune/family.h"
#include "vtprune/pipeline.h"
#include "vtprune/vision.h"
#include "vtprune_bench.h"

namespace vtprune::bench {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open image");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Peak RSS (VmHWM) is process-wide; writing "5" to clear_refs resets it to the current RSS (Linux >= 4.0),
// so each run's peak is its own on top of what is already resident (the models).
void reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  if (clear) clear << "5";
}

int64_t read_status_kib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1));
  }
  return 0;
}

double load_average() {
  std::ifstream in("/proc/loadavg");
  double load = 0;
  in >> load;
  return load;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  }
  return "unknown";
}

int resolve_threads(int threads) {
  return threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// Blocks the ViT runs for a method: through the feature layer, and further for a tap past it.
int layers_run(const EncoderInfo& info, const Needs& needs) {
  int last = info.feature_layer;
  for (const auto& tap : needs.taps) last = std::max(last, tap.layer);
  return last + 1;
}


struct Config {
  std::string method, budget_text;  // method: the spec as given (name and options)
  std::vector<std::string> options;
  std::string name;
  Budget budget;
  Needs needs;
  std::vector<double> image_decode, preprocess, encode, reduce, project, prefill, ttft, decode_tok_s;
  pipeline::Result last;
  int64_t peak_rss_kib = 0;
};

void validate(const BenchParams& p) {
  if (p.llm_path.empty() || p.mmproj_path.empty() || p.image_path.empty()) {
    throw Error("bench: the LLM (-m), the mmproj (--mmproj) and the image (--image) are required");
  }
  for (const auto* path : {&p.llm_path, &p.mmproj_path, &p.image_path}) {
    if (!std::filesystem::is_regular_file(*path)) throw Error("bench: file not found: " + *path);
  }
  if (p.repeat < 1 || p.repeat > 1000) throw Error("bench: --repeat must be in 1..1000, got " + std::to_string(p.repeat));
  if (p.warmup < 0) throw Error("bench: --warmup must be >= 0");
  if (p.methods.empty()) throw Error("bench: --methods is empty");
  if (!p.mtmd_cli.empty() && ::access(p.mtmd_cli.c_str(), X_OK) != 0) {
    throw Error("bench: --compare-mtmd " + p.mtmd_cli + " is not an executable file");
  }
}

void say(const BenchParams& p, const std::string& line) {
  if (p.progress) p.progress(line);
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

// Encoder-only timings on the same file and threads. ViT alone: no taps, then each method's needs (the tap
// overhead). ViT + projector on all N rows: what llama.cpp's "encoding" covers (clip.cpp runs the projector
// in the same graph), with our HF-faithful graph and with llama.cpp's own (mtmd_compat: CLS last,
// n_layer - 1 blocks, F16 K/V flash attention).
std::vector<EncoderRow> bench_encoder(const BenchParams& p, int threads) {
  vision::VisionModel ours = vision::VisionModel::from_mmproj(p.mmproj_path);
  vision::VisionModel compat = vision::VisionModel::from_mmproj(p.mmproj_path, {.mtmd_compat = true});
  vision::VisionModel ours_f16 = vision::VisionModel::from_mmproj(p.mmproj_path, {.f16_attention = true});
  const vision::Image image = vision::preprocess(vision::load_image(p.image_path), ours.preprocess_recipe());
  const EncoderInfo info = ours.info();

  struct Variant {
    std::string name;
    vision::VisionModel* model;
    Needs needs;
    int layers;
    bool like_mtmd;  // covers what llama-mtmd-cli's encode time covers
    std::vector<double> ms;
  };
  std::vector<Variant> variants;
  variants.push_back({"ViT, no taps", &ours, Needs{}, layers_run(info, Needs{}), false, {}});
  for (const auto& method : p.methods) {
    const MethodSpec spec = parse_method_spec(method);
    if (spec.name == "none") continue;
    const Needs needs = make_reducer(spec.name, spec.options)->needs(info);
    std::string what = needs.taps.empty() ? "" : "taps";
    if (needs.projected) what += what.empty() ? "projector on all N" : " + projector on all N";
    if (what.empty()) continue;  // same graph as "no taps"
    variants.push_back({"ViT, " + method + " " + what, &ours, needs, layers_run(info, needs), false, {}});
  }
  Needs with_projector;
  with_projector.projected = true;
  variants.push_back({"ViT + projector, ours", &ours, with_projector, layers_run(info, Needs{}), true, {}});
  variants.push_back({"ViT + projector, ours --vit-f16-attention", &ours_f16, with_projector, layers_run(info, Needs{}), true, {}});
  variants.push_back({"ViT + projector, mtmd-compat graph", &compat, with_projector, compat.stored_layers() - 1, true, {}});

  for (int r = -std::min(p.warmup, 1); r < p.repeat; ++r) {
    for (auto& v : variants) {
      const auto t0 = Clock::now();
      const vision::EncoderResult result = v.model->encode(image, v.needs, {.threads = threads});
      const double ms = ms_since(t0);
      if (r >= 0) v.ms.push_back(ms);
    }
  }
  std::vector<EncoderRow> rows;
  for (auto& v : variants) {
    EncoderRow row;
    row.name = v.name;
    row.layers = v.layers;
    row.ms = spread(v.ms);
    row.per_layer_ms = row.ms.median / std::max(1, v.layers);
    row.like_mtmd = v.like_mtmd;
    if (!v.like_mtmd && !rows.empty() && rows.front().ms.median > 0) row.vs_no_taps = row.ms.median / rows.front().ms.median;
    say(p, "encoder " + row.name + ": " + fmt("%.1f ms", row.ms.median));
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

Spread spread(std::vector<double> values) {
  Spread s;
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  s.n = static_cast<int>(n);
  s.min = values.front();
  s.max = values.back();
  s.median = n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
  return s;
}

std::vector<std::string> default_budgets(const std::string& family) {
  if (family == "llava-1.5") return {"576", "192", "128", "64"};
  return {"0.334", "0.223", "0.112"};
}

BenchReport run_bench(const BenchParams& params) {
  validate(params);
  BenchReport report;
  report.params = params;
  report.threads = resolve_threads(params.threads);
  report.cpu = cpu_name();
  report.system_info = llama_print_system_info();
  report.load_before = load_average();
  report.flops = read_flop_model(params.llm_path, params.mmproj_path);
  report.family = report.flops.family;
  if (report.params.budgets.empty()) report.params.budgets = default_budgets(report.family);
  // the speed-ups are relative to `none`: always measure it
  const bool has_none = std::any_of(report.params.methods.begin(), report.params.methods.end(),
                                    [](const std::string& m) { return parse_method_spec(m).name == "none"; });
  if (!has_none) {
    report.params.methods.insert(report.params.methods.begin(), "none");
  }
  const BenchParams& p = report.params;
  const std::vector<uint8_t> image = read_bytes(p.image_path);
  {
    const vision::RgbImage rgb = vision::decode_image(image, p.image_path);
    report.image_width = rgb.width;
    report.image_height = rgb.height;
  }

  // vtprune's own graph (LLaVA-1.5): encoder-only runs first, before the pipeline's models are loaded. LLaVA-NeXT's
  // encoder-only rows would time one tile of several: its encode is compared end to end only.
  const family::Family& fam = family::by_name(report.family);
  const bool own_encoder = fam.encoder == family::Encoder::Own;
  const bool anyres = fam.tiling == family::Tiling::AnyRes;
  if (p.encoder_bench && own_encoder && !anyres) report.encoder = bench_encoder(p, report.threads);

  pipeline::Vlm vlm(pipeline::VlmParams{
      .llm_path = p.llm_path, .mmproj_path = p.mmproj_path, .threads = report.threads, .n_ctx = p.n_ctx,
      .n_gpu_layers = p.n_gpu_layers, .rpc_servers = p.rpc_servers, .flash_attn = p.flash_attn, .clip_text_path = p.clip_text_path, .mmproj = {.f16_attention = p.f16_attention}});
  report.encoder_name = std::string(family::to_string(vlm.encoder()));
  EncoderInfo info = vlm.encoder_info();
  // dynamic resolution (grid 0 x 0): the image's token grid comes from a first run (below)
  const bool dynamic = info.grid.size() == 0;
  int64_t n_patches = info.grid.size();
  if (anyres) {  // the overview + the crops of the best pinpoint for this image, 576 tokens each
    const vision::Preprocess& recipe = vlm.vision_model().preprocess_recipe();
    const auto [w, h] = vision::select_best_resolution(report.image_width, report.image_height, recipe.anyres_pinpoints);
    report.flops.tiles = 1 + int64_t{w / recipe.image_size} * (h / recipe.image_size);
    n_patches *= report.flops.tiles;
    say(p, "image " + std::to_string(report.image_width) + "x" + std::to_string(report.image_height) + " -> " +
               std::to_string(report.flops.tiles) + " AnyRes tiles = " + std::to_string(n_patches) + " LLM tokens");
  }

  std::vector<Config> configs;
  for (const auto& method : p.methods) {
    const MethodSpec spec = parse_method_spec(method);
    const auto reducer = make_reducer(spec.name, vlm.method_options(spec.name, spec.options));
    const Needs needs = reducer->needs(info);
    if (reducer->info().budget_use == BudgetUse::Ignored) {
      configs.push_back({.method = method, .budget_text = "all", .options = spec.options, .name = spec.name,
                         .budget = Budget::all(), .needs = needs});
      continue;
    }
    for (const auto& b : p.budgets) {
      const Budget budget = Budget::parse(b);
      if (!dynamic) budget.resolve(n_patches);  // throws for a budget this image cannot take
      configs.push_back({.method = method, .budget_text = b, .options = spec.options, .name = spec.name,
                         .budget = budget, .needs = needs});
    }
  }

  auto run_once = [&](const Config& c) {
    pipeline::Request request;
    request.images = {image};
    request.image_names = {p.image_path};
    request.prompt = p.prompt;
    request.method = c.name;
    request.options = c.options;
    request.budget = c.budget;
    request.sampling = {.temperature = 0.0f, .seed = 0, .max_tokens = p.n_predict};
    return vlm.run(request);
  };
  if (dynamic) {
    // The warm-up runs `none` (every budget fits it) and tells the image's grid; without warm-ups one
    // unmeasured run does. Then every budget is checked against the real token count before anything is measured.
    const auto none = std::find_if(configs.begin(), configs.end(), [](const Config& c) { return c.name == "none"; });
    pipeline::Result probe;
    for (int w = 0; w < std::max(1, p.warmup); ++w) probe = run_once(*none);
    if (probe.images.size() != 1) throw Error("bench: the first run reported " + std::to_string(probe.images.size()) + " images");
    info.grid = probe.images.front().grid;
    n_patches = info.grid.size();
    report.flops.set_image_grid(info.grid.h, info.grid.w);
    say(p, "image " + std::to_string(report.image_width) + "x" + std::to_string(report.image_height) + " -> " +
               std::to_string(info.grid.h) + "x" + std::to_string(info.grid.w) + " = " + std::to_string(n_patches) +
               " LLM tokens (" + std::to_string(report.flops.vit_patches) + " ViT patches)");
    for (const Config& c : configs) {
      try {
        c.budget.resolve(n_patches);
      } catch (const Error& e) {
        throw Error("bench: budget " + c.budget_text + " on " + std::to_string(n_patches) + " image tokens: " + e.what());
      }
    }
  } else {
    for (int w = 0; w < p.warmup; ++w) run_once(configs.front());
  }

  // llama-mtmd-cli on the same files, interleaved with our configurations: one run at the end of every round
  // (after one unmeasured run), so that drifts of the machine hit its TTFT as they hit ours.
  std::optional<MtmdCommand> mtmd_command;
  std::optional<MtmdSummary> mtmd_summary;
  std::vector<double> mtmd_ttft, mtmd_encode, mtmd_image_decode;
  if (!p.mtmd_cli.empty()) {
    mtmd_command = MtmdCommand{.binary = p.mtmd_cli, .llm = p.llm_path, .mmproj = p.mmproj_path, .image = p.image_path,
                               .prompt = p.prompt, .threads = report.threads, .n_ctx = p.n_ctx,
                               .n_batch = vlm.session().n_batch(), .template_args = mtmd_template_args(report.family),
                               .flash_attn = p.flash_attn};
    mtmd_summary.emplace();
    mtmd_summary->argv = mtmd_argv(*mtmd_command);
    mtmd_summary->vit_layers_run = vlm.encoder() == family::Encoder::Own ? vlm.vision_model().stored_layers() - 1  // llama.cpp #25817
                                                                         : info.num_layers;
  }
  const auto run_mtmd = [&](int round) {
    const MtmdRun run = run_mtmd_cli(*mtmd_command);
    say(p, "llama-mtmd-cli run " + (round < 0 ? std::string("(warm-up)") : std::to_string(round + 1) + "/" + std::to_string(p.repeat)) +
               ": encode " + fmt("%.0f ms", run.encode_ms) + ", TTFT " + fmt("%.1f ms", run.ttft_ms));
    if (round < 0) return;
    mtmd_ttft.push_back(run.ttft_ms);
    mtmd_encode.push_back(run.encode_ms);
    mtmd_image_decode.push_back(run.image_decode_ms);
    mtmd_summary->n_prompt_tokens = run.n_prompt_tokens;
    mtmd_summary->peak_rss_bytes = std::max(mtmd_summary->peak_rss_bytes, run.peak_rss_bytes);
  };
  if (mtmd_command && p.warmup > 0) run_mtmd(-1);

  for (int r = 0; r < p.repeat; ++r) {
    if (mtmd_command) run_mtmd(r);
    for (auto& c : configs) {
      reset_peak_rss();
      pipeline::Result result = run_once(c);
      c.peak_rss_kib = std::max(c.peak_rss_kib, read_status_kib("VmHWM"));
      const auto& t = result.timings;
      c.image_decode.push_back(t.decode_ms);
      c.preprocess.push_back(t.preprocess_ms);
      c.encode.push_back(t.encode_ms);
      c.reduce.push_back(t.reduce_ms);
      c.project.push_back(t.project_ms);
      c.prefill.push_back(t.prefill_ms);
      c.ttft.push_back(t.ttft_ms);
      if (result.n_generated > 1) c.decode_tok_s.push_back(t.decode_tok_s);
      say(p, "run " + std::to_string(r + 1) + "/" + std::to_string(p.repeat) + " " + c.method + " @ " + c.budget_text +
                 ": kept " + std::to_string(result.tokens_kept) + ", encode " + fmt("%.1f ms", t.encode_ms) +
                 ", prefill " + fmt("%.1f ms", t.prefill_ms) + ", TTFT " + fmt("%.1f ms", t.ttft_ms));
      c.last = std::move(result);
    }
  }

  const int64_t kv_per_token = vlm.session().kv_bytes_per_token();
  for (const auto& c : configs) {
    Row row;
    row.method = c.method;
    row.budget = c.budget_text;
    row.tokens_in = c.last.tokens_in;
    row.tokens_kept = c.last.tokens_kept;
    row.n_prompt_tokens = c.last.n_prompt_tokens;
    row.n_generated = c.last.n_generated;
    row.kv_bytes = c.last.kv_bytes;
    row.kv_bytes_analytic = kv_per_token * c.last.n_prompt_tokens;
    row.peak_rss_bytes = c.peak_rss_kib * 1024;
    row.image_decode_ms = spread(c.image_decode);
    row.preprocess_ms = spread(c.preprocess);
    row.encode_ms = spread(c.encode);
    row.reduce_ms = spread(c.reduce);
    row.project_ms = spread(c.project);
    row.prefill_ms = spread(c.prefill);
    row.ttft_ms = spread(c.ttft);
    row.decode_tok_s = spread(c.decode_tok_s);
    row.vit_layers_run = layers_run(info, c.needs);
    row.flops_vit = report.flops.vit_flops(row.vit_layers_run);
    if (report.flops.projector_in_encoder) {
      // libmtmd runs the merger on every token inside the encoder, before any method sees them
      row.flops_projector = report.flops.projector_flops(row.tokens_in);
      row.flops_taps = static_cast<double>(c.needs.taps.size()) * report.flops.tap_flops();
    } else {
      // DivPrune (space=projected) projects all N patches inside the encoder, then the kept ones again
      row.flops_projector = report.flops.projector_flops(row.tokens_kept + (c.needs.projected ? n_patches : 0));
    }
    row.flops_prefill = report.flops.prefill_flops(row.n_prompt_tokens);
    report.rows.push_back(row);
  }
  const auto base = std::find_if(report.rows.begin(), report.rows.end(),
                                 [](const Row& r) { return parse_method_spec(r.method).name == "none"; });
  const Row baseline = *base;
  for (auto& row : report.rows) {
    row.ideal_speedup = baseline.flops_total() / row.flops_total();
    row.measured_speedup = baseline.ttft_ms.median / row.ttft_ms.median;
  }

  // libmtmd families: the encoder rows are the end-to-end runs' own encode stage (mtmd_encode_chunk with the
  // eval callback, + read-back and the taps' statistics): `none` without taps, each method with its taps, so
  // the taps' overhead is measured on the same interleaved runs at no extra cost.
  if (p.encoder_bench && !own_encoder) {
    const auto encode_samples = [&](const std::string& method) {
      std::vector<double> ms;
      for (const Config& d : configs) {
        if (d.method == method) ms.insert(ms.end(), d.encode.begin(), d.encode.end());
      }
      return ms;
    };
    const auto none = std::find_if(configs.begin(), configs.end(), [](const Config& c) { return c.name == "none"; });
    EncoderRow no_taps;
    no_taps.name = "libmtmd ViT + merger, no taps (none's runs)";
    no_taps.ms = spread(encode_samples(none->method));
    no_taps.vs_no_taps = 1.0;
    std::vector<EncoderRow> rows{no_taps};
    std::vector<std::string> seen{none->method};
    for (const Config& c : configs) {
      if (c.needs.taps.empty() || std::find(seen.begin(), seen.end(), c.method) != seen.end()) continue;
      seen.push_back(c.method);
      std::string blocks;
      for (const TapRequest& t : c.needs.taps) blocks += (blocks.empty() ? "" : ", ") + std::to_string(t.layer);
      EncoderRow row;
      row.name = "libmtmd ViT + merger, " + c.method + " taps (block" + (c.needs.taps.size() > 1 ? "s " : " ") + blocks +
                 "; all its budgets' runs)";
      row.ms = spread(encode_samples(c.method));
      if (no_taps.ms.median > 0) row.vs_no_taps = row.ms.median / no_taps.ms.median;
      rows.push_back(row);
    }
    for (EncoderRow& row : rows) {
      row.layers = info.num_layers;
      row.like_mtmd = true;
      row.per_layer_ms = row.ms.median / std::max(1, row.layers);
      say(p, "encoder " + row.name + ": " + fmt("%.1f ms", row.ms.median));
      report.encoder.push_back(row);
    }
  }

  if (mtmd_summary) {
    MtmdSummary& summary = *mtmd_summary;
    summary.ttft_ms = spread(mtmd_ttft);
    summary.encode_ms = spread(mtmd_encode);
    summary.image_decode_ms = spread(mtmd_image_decode);
    for (auto& row : report.rows) row.ttft_vs_mtmd = row.ttft_ms.median / summary.ttft_ms.median;
    if (!report.encoder.empty()) {
      for (auto& e : report.encoder) {
        if (e.like_mtmd) e.vs_mtmd = e.ms.median / summary.encode_ms.median;
      }
      EncoderRow cli;
      cli.name = "llama-mtmd-cli (clip.cpp ViT + projector)";
      cli.like_mtmd = true;
      cli.layers = summary.vit_layers_run;
      cli.ms = summary.encode_ms;
      cli.per_layer_ms = cli.ms.median / std::max(1, cli.layers);
      cli.vs_mtmd = 1.0;
      report.encoder.push_back(cli);
    }
    report.mtmd = summary;
  }
  report.load_after = load_average();
  return report;
}

}  // namespace vtprune::bench
