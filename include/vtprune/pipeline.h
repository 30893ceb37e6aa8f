// vtprune pipeline: one VLM request end to end, every stage timed.
//
//   image bytes -> decode -> preprocess -> ViT encode (+ the taps the method needs) -> reduce
//               -> projector on the kept tokens only -> LLaVA-1.5 prompt -> libllama prefill -> generate
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "vtprune/llm.h"
#include "vtprune/reduce.h"
#include "vtprune/vision.h"

namespace vtprune::pipeline {

struct VlmParams {
  std::string llm_path;
  // The vision side: a llama.cpp mmproj GGUF, or a Hugging Face CLIP vision tower in safetensors (all 24
  // layers, as PruMerge's official layer needs) with the LLaVA projector in it or in `projector_path`.
  std::string mmproj_path;
  std::string vision_tower_path;
  std::string projector_path;
  int threads = 0;        // 0 = all cores
  int n_ctx = 4096;
  bool verbose = false;
  vision::MmprojOptions mmproj;
  vision::ImageLimits image_limits;
};

// How a budget is shared across the images of one prompt.
enum class BudgetScope {
  PerImage,  // every image gets the budget
  Total,     // the budget is split across images (see split_budget)
};

struct Request {
  std::vector<std::vector<uint8_t>> images;  // encoded image files (JPEG / PNG / BMP)
  std::vector<std::string> image_names;      // for error messages (same length as images, or empty)
  std::string prompt;                        // the user's question; may contain <image> markers
  std::string method = "none";
  std::vector<std::string> options;          // method options, key=value
  Budget budget = Budget::all();
  BudgetScope scope = BudgetScope::PerImage;
  llm::SamplingParams sampling;
};

// Milliseconds per stage, summed over the request's images.
struct Timings {
  double decode_ms = 0;      // image file -> pixels
  double preprocess_ms = 0;  // resize / pad / normalise
  double encode_ms = 0;      // ViT (+ taps)
  double reduce_ms = 0;      // the method
  double project_ms = 0;     // projector on the kept tokens
  double prefill_ms = 0;     // LLM prefill: text, image embeddings, text
  double ttft_ms = 0;        // request start -> first generated token (all of the above + sampling)
  double decode_tok_s = 0;   // generated tokens per second after the first
  double total_ms = 0;
};

struct ImageReport {
  int64_t tokens_in = 0;        // patches the encoder produced
  int64_t tokens_kept = 0;      // rows sent to the LLM for this image
  int64_t budget = 0;           // the budget this image got (0 = all)
  Reduction reduction;          // what was kept, roles, merges (tokens cleared)
};

struct Result {
  std::string answer;
  std::string method;
  std::string budget;
  std::vector<ImageReport> images;
  int64_t tokens_in = 0;        // visual tokens before reduction, all images
  int64_t tokens_kept = 0;      // visual tokens after reduction, all images
  int n_prompt_tokens = 0;      // whole prompt (text + visual) in LLM positions
  int n_generated = 0;
  int64_t kv_bytes = 0;         // KV cache bytes holding the prompt
  llm::StopReason stop = llm::StopReason::max_tokens;
  Timings timings;
};

// Splits a total budget across images in proportion to what the method would keep from each image
// without a budget (fixed-budget methods: its patch count; adaptive ones: their own count), largest
// remainder first (ties: the earlier image), at least 1 token per image and never more than it would keep.
std::vector<int64_t> split_budget(int64_t total, const std::vector<int64_t>& would_keep);

class Vlm {
 public:
  explicit Vlm(const VlmParams& params);
  // Another pipeline on the same loaded models (weights in memory once), with its own encoder state,
  // context and KV cache: run the two from different threads at once (a server's slots).
  Vlm share() const;
  ~Vlm();
  Vlm(Vlm&&) noexcept;
  Vlm& operator=(Vlm&&) noexcept;

  const vision::VisionModel& vision_model() const;
  llm::Session& session();

  // Runs one request; `on_piece` receives the answer as it is generated. Throws InputError for bad images,
  // methods, options or budgets, and prompts longer than the context; Error for failures of the models.
  Result run(const Request& request, const llm::PieceCallback& on_piece = {});

 private:
  struct Impl;
  explicit Vlm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vtprune::pipeline
