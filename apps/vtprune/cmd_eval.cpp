// `vtprune eval imagenet|vqa`: what a method and budget cost in answer quality.
//   eval imagenet: token reduction inside a real timm ViT classifier (DeiT-Tiny), top-1 / agreement / KL.
//   eval vqa:      a JSONL VQA set on a LLaVA-style GGUF pair, scored as POPE / MMBench / VQAv2 do.
// Both append one line per result and flush it, so Ctrl-C loses nothing and a re-run resumes.
#include <algorithm>
#include <cstdio>
#include <thread>
#include <cmath>

#include "commands.h"
#include "eval_common.h"
#include "imagenet_eval.h"
#include "vqa_eval.h"

namespace vtprune::cli {
namespace {

int resolve_threads(int threads) { return threads > 0 ? threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency())); }

std::string percent(double v) { return std::isfinite(v) ? eval::format_number(100.0 * v, 1) : "-"; }

}  // namespace

void add_eval(CLI::App& app, Action& action) {
  CLI::App* eval_cmd = app.add_subcommand("eval", "Measure accuracy under token reduction (ImageNet classifier, VQA on a VLM)");
  eval_cmd->require_subcommand(1);

  struct ImagenetArgs {
    eval::ImagenetConfig config;
    std::string methods, budgets;
    bool quiet = false, no_chart = false;
  };
  auto in = std::make_shared<ImagenetArgs>();
  in->methods = "none,hiprune,prumerge,prumerge_plus,visionzip,fastervlm,divprune,dfmr,pool,random";
  in->budgets = "98,49,22";
  CLI::App* imagenet = eval_cmd->add_subcommand(
      "imagenet", "Token-reduction benchmark on a timm ViT/DeiT classifier: blocks [0,E) encode, a method reduces the "
                  "patch tokens, blocks [E,depth) + head classify [CLS; kept]");
  imagenet->add_option("--model", in->config.model, "timm folder (model.safetensors + config.json) or the file")->required();
  imagenet->add_option("--images", in->config.images, "folder of images; label = synset id prefix of the file name")->required();
  imagenet->add_option("--synsets", in->config.synsets, "synset_words.txt: line i = '<synset id> <name>' of class i")->required();
  imagenet->add_option("--methods", in->methods, "comma-separated methods (none = the unpruned model)")->capture_default_str();
  imagenet->add_option("--budgets", in->budgets, "comma-separated budgets: counts, ratios or N%")->capture_default_str();
  imagenet->add_option("--prune-after", in->config.prune_after, "E: tokens are reduced after this many blocks")->capture_default_str();
  imagenet->add_option("--opt", in->config.options, "method option method:key=value, over the layer plan (repeatable)");
  imagenet->add_option("-t,--threads", in->config.threads, "threads (0 = all cores)")->capture_default_str();
  imagenet->add_option("--device", in->config.device, "where the ViT runs: cpu, gpu (the first GPU device) or a name from `vtprune devices`")
      ->capture_default_str();
  imagenet->add_option("--limit", in->config.limit, "only the first N images by name (0 = all)")->capture_default_str();
  imagenet->add_option("--out", in->config.out, "output folder: results.csv, per_image.tsv, accuracy.png")->required();
  imagenet->add_flag("-q,--quiet", in->quiet, "no progress bar");
  imagenet->add_flag("--no-chart", in->no_chart, "skip accuracy.png");
  imagenet->callback([in, &action] {
    action = [in] {
      eval::ImagenetConfig config = in->config;
      config.methods = eval::split_list(in->methods);
      config.budgets = eval::split_list(in->budgets);
      config.threads = resolve_threads(config.threads);
      config.progress = !in->quiet;
      config.chart = !in->no_chart;
      const auto rows = eval::run_imagenet_eval(config);
      std::printf("%-14s %6s %8s %7s %7s %9s %8s %11s\n", "method", "budget", "images", "top1%", "top5%", "agree%",
                  "KL", "tokens");
      for (const auto& r : rows) {
        std::printf("%-14s %6s %8lld %7s %7s %9s %8.4f %11.1f\n", r.method.c_str(), r.budget.c_str(),
                    static_cast<long long>(r.n_images), percent(r.top1).c_str(), percent(r.top5).c_str(),
                    percent(r.agreement).c_str(), r.mean_kl, r.mean_tokens_kept);
      }
      std::printf("wrote %s/results.csv, per_image.tsv%s\n", config.out.string().c_str(), config.chart ? ", accuracy.png" : "");
      return 0;
    };
  });

  struct VqaArgs {
    eval::VqaConfig config;
    std::string methods = "none", budgets = "64";
    bool quiet = false;
  };
  auto vq = std::make_shared<VqaArgs>();
  CLI::App* vqa = eval_cmd->add_subcommand("vqa", "VQA accuracy per method and budget on a LLaVA-1.5 GGUF pair (JSONL input)");
  vqa->add_option("--data", vq->config.data, "JSONL: {id, image, question, answers, type: yesno|choice|open[, choices, prompt]}")
      ->required();
  vqa->add_option("-m,--model", vq->config.llm, "LLM GGUF")->required();
  vqa->add_option("--mmproj", vq->config.mmproj, "mmproj GGUF (vision tower + projector)")->required();
  vqa->add_option("--clip-text", vq->config.clip_text, "Hugging Face CLIP folder for CDPruner's relevance=clip (see run --help)");
  vqa->add_option("--n-gpu-layers", vq->config.n_gpu_layers, "LLM layers on the GPU / RPC servers (-ngl)")->capture_default_str();
  vqa->add_flag("--mmproj-offload", vq->config.vision_gpu, "run the vision encoder (libmtmd's or vtprune's own graphs) on the first GPU device");
  vqa->add_option("--rpc", vq->config.rpc_servers, "ggml RPC servers host:port (comma-separated), as run --rpc")->delimiter(',');
  vqa->add_option("--methods", vq->methods, "comma-separated methods (none always runs: the retention reference)")
      ->capture_default_str();
  vqa->add_option("--budgets", vq->budgets, "comma-separated budgets: counts, ratios or N%")->capture_default_str();
  vqa->add_option("--opt", vq->config.options, "method option method:key=value (repeatable), e.g. prumerge:layer=-2");
  vqa->add_option("-t,--threads", vq->config.threads, "threads (0 = all cores)")->capture_default_str();
  vqa->add_option("-n,--n-predict", vq->config.n_predict, "answer tokens at most (greedy)")->capture_default_str();
  vqa->add_option("-c,--ctx-size", vq->config.n_ctx, "context length")->capture_default_str();
  vqa->add_option("--limit", vq->config.limit, "only the first N items (0 = all)")->capture_default_str();
  vqa->add_option("--out", vq->config.out, "output folder: answers.jsonl, results.csv")->required();
  vqa->add_flag("-q,--quiet", vq->quiet, "no progress bar");
  vqa->callback([vq, &action] {
    action = [vq] {
      eval::VqaConfig config = vq->config;
      config.methods = eval::split_list(vq->methods);
      config.budgets = eval::split_list(vq->budgets);
      config.progress = !vq->quiet;
      const auto rows = eval::run_vqa_eval(config);
      std::printf("%-14s %6s %6s %9s %10s %8s %10s\n", "method", "budget", "items", "accuracy", "retention", "tokens",
                  "TTFT ms");
      for (const auto& r : rows) {
        std::printf("%-14s %6s %6lld %9s %10s %8.1f %10.1f\n", r.method.c_str(), r.budget.c_str(),
                    static_cast<long long>(r.n_items), percent(r.accuracy).c_str(), percent(r.retention).c_str(),
                    r.mean_tokens_kept, r.mean_ttft_ms);
      }
      std::printf("wrote %s/results.csv, answers.jsonl\n", config.out.string().c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
