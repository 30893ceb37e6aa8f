// `vtprune bench`: TTFT of every method x budget on one GGUF pair, per stage, beside the ideal FLOP-ratio
// speed-up and (optionally) llama.cpp's llama-mtmd-cli on the same files.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "vtprune/reduce.h"
#include "vtprune_bench.h"

namespace vtprune::cli {
namespace {

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

void write_text(const std::string& path, const std::string& text) {
  const std::filesystem::path file(path);
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary);
  if (!out) throw Error(path + ": cannot open for writing");
  out << text;
  if (!out) throw Error(path + ": write failed");
}

}  // namespace

void add_bench(CLI::App& app, Action& action) {
  struct Args {
    bench::BenchParams params;
    std::string methods = "none,hiprune", budgets;
    std::string json, markdown, chart;
    bool no_encoder = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("bench", "TTFT per stage for every method x budget, vs the FLOP ideal and llama-mtmd-cli");
  cmd->add_option("-m,--model", a->params.llm_path, "LLM GGUF")->required();
  cmd->add_option("--mmproj", a->params.mmproj_path, "mmproj GGUF (LLaVA-1.5 CLIP or Qwen2.5-VL vision tower + projector)")
      ->required();
  cmd->add_option("--clip-text", a->params.clip_text_path, "Hugging Face CLIP folder for CDPruner's relevance=clip (see run --help)");
  cmd->add_option("--n-gpu-layers", a->params.n_gpu_layers, "LLM layers on the GPU / RPC servers (-ngl)")->capture_default_str();
  cmd->add_option("--rpc", a->params.rpc_servers, "ggml RPC servers host:port (comma-separated), as run --rpc")->delimiter(',');
  cmd->add_option("--image", a->params.image_path, "image file")->required();
  cmd->add_option("-p,--prompt", a->params.prompt, "question")->capture_default_str();
  cmd->add_option("--methods", a->methods, "comma-separated methods, each optionally with options: prumerge:layer=-2 (none is always added: speed-ups are relative to it)")
      ->capture_default_str();
  cmd->add_option("--budgets", a->budgets,
                  "comma-separated budgets: a count, a retention ratio (0.112) or N%; methods that ignore budgets run "
                  "once (default: 576,192,128,64 for LLaVA-1.5; 0.334,0.223,0.112 for dynamic-resolution families)");
  cmd->add_option("--repeat", a->params.repeat, "measured runs per configuration")->capture_default_str();
  cmd->add_option("--warmup", a->params.warmup, "unmeasured warm-up runs")->capture_default_str();
  cmd->add_option("-t,--threads", a->params.threads, "threads (0 = all cores)")->capture_default_str();
  cmd->add_option("-n,--n-predict", a->params.n_predict, "tokens generated per run (decode tok/s)")->capture_default_str();
  cmd->add_option("-c,--ctx-size", a->params.n_ctx, "context length")->capture_default_str();
  cmd->add_option("--json", a->json, "write the full report as JSON")->required();
  cmd->add_option("--markdown", a->markdown, "write the tables as markdown");
  cmd->add_option("--chart", a->chart, "write the TTFT breakdown as a PNG stacked-bar chart");
  cmd->add_option("--compare-mtmd", a->params.mtmd_cli, "llama-mtmd-cli binary to run on the same files (scripts/bench.sh builds it)");
  cmd->add_flag("--no-encoder-bench", a->no_encoder,
                "skip the encoder-only comparison (LLaVA-1.5: extra encoder-only runs; libmtmd families: rows taken "
                "from the end-to-end runs, no extra cost)");
  cmd->add_option("--flash-attn", a->params.flash_attn,
                  "llama.cpp's flash attention (on, off, auto) for vtprune's LLM and libmtmd's ViT, and llama-mtmd-cli's -fa")
      ->check(CLI::IsMember({"on", "off", "auto"}))
      ->capture_default_str();
  cmd->add_flag("--vit-f16-attention", a->params.f16_attention,
                "end-to-end rows with flash attention on F16 K/V in untapped ViT blocks (as llama.cpp)");
  cmd->callback([a, &action] {
    action = [a] {
      bench::BenchParams& p = a->params;
      p.methods = split_list(a->methods);
      p.budgets = split_list(a->budgets);
      p.encoder_bench = !a->no_encoder;
      for (const auto& m : p.methods) method_info(m.substr(0, m.find(':')));  // unknown names fail before any model is loaded
      for (const auto& b : p.budgets) Budget::parse(b);
      if (!a->chart.empty() && !bench::chart_available()) {
        throw Error("--chart " + a->chart + ": this vtprune was built without the draw library");
      }
      std::ostringstream cmdline;
      cmdline << "vtprune bench -m " << p.llm_path << " --mmproj " << p.mmproj_path << " --image " << p.image_path
              << " --methods " << a->methods << (a->budgets.empty() ? "" : " --budgets " + a->budgets) << " --repeat " << p.repeat << " -t "
              << p.threads << " -n " << p.n_predict << (p.mtmd_cli.empty() ? "" : " --compare-mtmd " + p.mtmd_cli);
      p.command_line = cmdline.str();
      p.progress = [](const std::string& line) { std::fprintf(stderr, "[bench] %s\n", line.c_str()); };

      const bench::BenchReport report = bench::run_bench(p);
      write_text(a->json, bench::to_json(report).dump(2) + "\n");
      const std::string md = bench::to_markdown(report);
      if (!a->markdown.empty()) write_text(a->markdown, md);
      if (!a->chart.empty()) bench::save_ttft_chart(report, a->chart);
      std::printf("%s", md.c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
