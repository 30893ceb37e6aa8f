// `vtprune run`: answer a question about one or more images with a reduction method (llama.cpp-style flags).
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "vtprune/pipeline.h"

namespace vtprune::cli {

std::vector<uint8_t> read_image_file(const std::string& path, int64_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open image");
  const auto size = static_cast<int64_t>(in.tellg());
  if (size > max_bytes) throw Error(path + ": image file is " + std::to_string(size) + " bytes, over the limit of " + std::to_string(max_bytes));
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  return bytes;
}

namespace {

std::string mib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

void add_run(CLI::App& app, Action& action) {
  struct Args {
    pipeline::VlmParams vlm;
    std::vector<std::string> images;
    std::string prompt = "Describe the image.";
    std::string method = "none", budget, budget_total;
    std::vector<std::string> options;
    int n_predict = 256;
    uint32_t seed = 0;
    float temperature = 0.0f, top_p = 1.0f;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("run", "Answer a prompt about images with a VLM GGUF pair (LLaVA-1.5, Qwen2.5-VL) and a reduction method");
  cmd->add_option("-m,--model", a->vlm.llm_path, "LLM GGUF (llama.cpp conversion, any quantisation)")->required();
  auto* mmproj = cmd->add_option("--mmproj", a->vlm.mmproj_path, "mmproj GGUF (vision encoder + projector; its projector type picks the family)");
  auto* tower = cmd->add_option("--vision-tower", a->vlm.vision_tower_path,
                                "Hugging Face CLIP vision tower (safetensors file or folder; keeps all 24 layers)");
  cmd->add_option("--projector", a->vlm.projector_path, "LLaVA projector safetensors, when not inside the tower's file")->needs(tower);
  mmproj->excludes(tower);
  cmd->add_option("--image", a->images, "image file (repeat for several; <image> markers in the prompt place them)")->required();
  cmd->add_option("-p,--prompt", a->prompt, "question")->capture_default_str();
  cmd->add_option("--method", a->method, "reduction method (vtprune methods)")->capture_default_str();
  cmd->add_option("--budget", a->budget, "visual tokens kept per image: a count, a ratio, N% or all");
  cmd->add_option("--budget-total", a->budget_total, "visual tokens for all images together, split in proportion to what the method keeps of each")
      ->excludes(cmd->get_option("--budget"));
  cmd->add_option("--opt", a->options, "method option key=value (repeatable)");
  cmd->add_option("-n,--n-predict", a->n_predict, "tokens to generate at most")->capture_default_str();
  cmd->add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  cmd->add_option("--temp", a->temperature, "temperature (0 = greedy)")->capture_default_str();
  cmd->add_option("--top-p", a->top_p, "nucleus sampling")->capture_default_str();
  cmd->add_option("-t,--threads", a->vlm.threads, "threads (0 = all cores)")->capture_default_str();
  cmd->add_option("-c,--ctx-size", a->vlm.n_ctx, "context length")->capture_default_str();
  cmd->add_flag("--mtmd-compat", a->vlm.mmproj.mtmd_compat, "encode exactly as llama.cpp's clip graph does (CLS last, one layer short)");
  cmd->add_option("--anyres-layout", a->vlm.anyres_layout,
                  "LLaVA-NeXT: spatial (HiPrune's official order: overview, then the crops' rows in the image's raster) | "
                  "spatial_unpad (LLaVA-NeXT's own: padding removed, a newline token after every row) | "
                  "mtmd (llama.cpp's order: each crop in turn, then the overview)")
      ->capture_default_str();
  cmd->add_flag("--vit-f16-attention", a->vlm.mmproj.f16_attention,
                "flash attention on F16 K/V in untapped ViT blocks, as llama.cpp does (faster; features move ~1e-3)");
  add_device_options(*cmd, a->vlm);
  cmd->add_flag("--json", a->json, "print one JSON object instead of streaming the answer");
  cmd->add_flag("-v,--verbose", a->vlm.verbose, "show llama.cpp's log");
  cmd->callback([a, &action] {
    action = [a] {
      pipeline::Vlm vlm(a->vlm);
      pipeline::Request req;
      for (const auto& path : a->images) {
        req.images.push_back(read_image_file(path, a->vlm.image_limits.max_file_bytes));
        req.image_names.push_back(path);
      }
      req.prompt = a->prompt;
      req.method = a->method;
      req.options = a->options;
      if (!a->budget.empty()) req.budget = Budget::parse(a->budget);
      if (!a->budget_total.empty()) {
        req.budget = Budget::parse(a->budget_total);
        req.scope = pipeline::BudgetScope::Total;
      }
      req.sampling = {.temperature = a->temperature, .top_p = a->top_p, .seed = a->seed, .max_tokens = a->n_predict};
      const auto stream = [&](std::string_view piece) {
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      };
      const pipeline::Result r = vlm.run(req, a->json ? llm::PieceCallback{} : llm::PieceCallback{stream});
      const auto& t = r.timings;
      if (a->json) {
        nlohmann::json j;
        j["answer"] = r.answer;
        j["family"] = vlm.family().name;
        j["encoder"] = std::string(family::to_string(vlm.encoder()));
        j["method"] = r.method;
        j["budget"] = r.budget;
        j["tokens_in"] = r.tokens_in;
        j["tokens_kept"] = r.tokens_kept;
        j["n_prompt_tokens"] = r.n_prompt_tokens;
        j["n_generated"] = r.n_generated;
        j["kv_bytes"] = r.kv_bytes;
        nlohmann::json kept = nlohmann::json::array(), images = nlohmann::json::array();
        for (const auto& im : r.images) {
          kept.push_back(im.reduction.kept);
          images.push_back({{"image", im.image}, {"tile", im.tile}, {"tokens_in", im.tokens_in}, {"tokens_kept", im.tokens_kept}, {"budget", im.budget},
                            {"grid", {im.grid.h, im.grid.w}}, {"stats", im.reduction.stats}});
        }
        j["kept"] = kept;  // one list per image (per tile of a tiled image), source indices in the order the LLM receives them
        j["images"] = images;
        j["timings"] = {{"decode_ms", t.decode_ms},   {"preprocess_ms", t.preprocess_ms}, {"encode_ms", t.encode_ms},
                        {"reduce_ms", t.reduce_ms},   {"project_ms", t.project_ms},       {"prefill_ms", t.prefill_ms},
                        {"ttft_ms", t.ttft_ms},       {"decode_tok_s", t.decode_tok_s},   {"total_ms", t.total_ms}};
        // the answer of a random-weight model may hold partial UTF-8 byte tokens: replace, do not throw
        std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      } else {
        std::printf("\n");
        std::fflush(stdout);  // the answer's line ends before the stats line on a shared terminal
        std::fprintf(stderr,
                     "[vtprune] %s (budget %s): kept %lld of %lld visual tokens | decode %.1f ms, preprocess %.1f ms, "
                     "encode %.1f ms, reduce %.2f ms, project %.1f ms, prefill %.1f ms, TTFT %.1f ms, decode %.1f tok/s, "
                     "KV %s for %d prompt tokens\n",
                     r.method.c_str(), r.budget.c_str(), static_cast<long long>(r.tokens_kept),
                     static_cast<long long>(r.tokens_in), t.decode_ms, t.preprocess_ms, t.encode_ms, t.reduce_ms,
                     t.project_ms, t.prefill_ms, t.ttft_ms, t.decode_tok_s, mib(r.kv_bytes).c_str(), r.n_prompt_tokens);
      }
      return 0;
    };
  });
}

}  // namespace vtprune::cli
