// vtprune pipeline: one VLM request end to end, every stage timed.
//
// Two encoders behind one seam, chosen by the mmproj file's family (family.h):
//   own (LLaVA-1.5):  image bytes -> decode -> preprocess -> vtprune's ViT (+ taps) -> reduce
//                     -> projector on the kept tokens only -> LLaVA-1.5 prompt -> libllama prefill -> generate
//   libmtmd (Qwen2.5-VL, ...): image bytes -> decode -> the file's chat template -> mtmd_tokenize (libmtmd's own
//                     resize) -> libmtmd's ViT + projector (+ taps through the eval callback) -> reduce the
//                     LLM-input embeddings -> prefill with the family's positions (M-RoPE: kept tokens keep theirs)
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "vtprune/family.h"
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
  // "auto" (the family's encoder: vtprune's graph for LLaVA-1.5, libmtmd for the others), "own" or "mtmd".
  std::string encoder = "auto";
  int n_gpu_layers = 0;    // LLM layers on the GPU (-ngl), when llama.cpp was built with a GPU backend
  // The vision side on the GPU (--mmproj-offload): libmtmd's encoder, or vtprune's own graphs (LLaVA ViT with taps,
  // projector, CLIP text tower) on the device libmtmd would pick (vtprune::resolve_device("gpu")).
  bool vision_gpu = false;
  std::vector<std::string> rpc_servers;  // ggml RPC servers ("host:port") for offloaded LLM layers (llama.cpp's --rpc)
  int image_min_tokens = -1, image_max_tokens = -1;  // llama.cpp's limits for dynamic-resolution families
  // llama.cpp's -fa (--flash-attn): "auto" (its default), "on" or "off", for the LLM context and libmtmd's ViT, as
  // llama-mtmd-cli applies it to both. On CPU, "off" runs a long ViT sequence several times faster (SigLIP at 896 px:
  // 4096 patches; see the README) at the cost of bit-parity with a default llama-mtmd-cli run.
  std::string flash_attn = "auto";
  // CDPruner's official relevance (relevance=clip): a Hugging Face CLIP checkpoint folder (model.safetensors with
  // text_model.*, text_projection, vision_model.post_layernorm, visual_projection; vocab.json + merges.txt), e.g.
  // openai/clip-vit-large-patch14-336, the tower LLaVA-1.5 was trained with. Loaded once, shared by share().
  std::string clip_text_path;
  // LLaVA-NeXT: the order an image's tiles' kept rows enter the LLM. "spatial": HiPrune's official layout (its
  // mm_patch_merge_type = 'spatial'): the overview's rows, then the crops' rows in the whole image's patch raster;
  // "spatial_unpad": LLaVA-NeXT's own layout (the crops' raster without the padding rows / columns, the file's
  // v.image_newline after every row; kept rows in the padding are dropped); "mtmd": llama.cpp's libmtmd order,
  // each crop's rows in turn, then the overview's (ov_img_first is false for LLaVA-1.6), no newline rows.
  std::string anyres_layout = "spatial";
  vision::MmprojOptions mmproj;
  vision::ImageLimits image_limits;
};

// How a budget is shared across the images of one prompt.
enum class BudgetScope {
  PerImage,  // every image gets the budget
  Total,     // the budget is split across images (see split_budget)
};

class EmbeddingCache;  // embedding_cache.h

struct Request {
  std::vector<std::vector<uint8_t>> images;  // encoded image files (JPEG / PNG / BMP)
  std::vector<std::string> image_names;      // for error messages (same length as images, or empty)
  // A single question: the shorthand for one user message (used when `messages` is empty); may contain <image>
  // markers, otherwise the images go first.
  std::string prompt;
  // A conversation (system / developer, user and assistant messages), rendered with the family's template:
  // LLaVA-1.5's conv_llava_v1 (llm::llava15_conversation) or the model file's own (llm::render_chat). Every
  // image is an <image> marker in a user message's content; markers and images match in number and order.
  std::vector<llm::ChatMessage> messages;
  std::string method = "none";
  std::vector<std::string> options;          // method options, key=value
  Budget budget = Budget::all();             // per image, or for all images of the conversation (scope)
  BudgetScope scope = BudgetScope::PerImage;
  llm::SamplingParams sampling;

  // ---- reuse across requests (a server's prompt caching); both off by default
  // Encoded + reduced images are looked up here before anything is encoded, and stored after (shared by the
  // pipelines of one server; not owned).
  EmbeddingCache* cache = nullptr;
  // Keep the KV rows this prompt shares with what this pipeline's KV cache holds (llm::Session::prefill).
  bool reuse_prefix = false;
  // SHA-256 digests of `images` (embedding_cache.h: digest) when the caller has them; computed when needed.
  std::vector<std::string> image_digests;
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

// One per encoded unit: an image, or one tile of an image that the family slices into an overview and tiles
// (Idefics3 / SmolVLM: one libmtmd chunk each, in prompt order).
struct ImageReport {
  int image = 0;                // which of the request's images
  int tile = 0;                 // which of its tiles (0 for a family that encodes an image whole)
  Grid grid;                    // the LLM token grid the kept indices refer to (row-major)
  int64_t tokens_in = 0;        // visual tokens the encoder produced (LLM tokens: Qwen2.5-VL's merged ones)
  int64_t tokens_kept = 0;      // rows sent to the LLM for this image
  int64_t budget = 0;           // the budget this image got (0 = all)
  Reduction reduction;          // what was kept, roles, merges (tokens cleared)
  bool cached = false;          // taken from the EmbeddingCache: nothing was encoded, reduced or projected
};

struct Result {
  std::string answer;
  std::string method;
  std::string budget;
  std::vector<ImageReport> images;  // one per image, or per tile of a tiled image (ImageReport::image / tile)
  int64_t tokens_in = 0;        // visual tokens before reduction, all images
  int64_t tokens_kept = 0;      // visual tokens after reduction, all images
  int n_prompt_tokens = 0;      // whole prompt (text + visual) in LLM positions
  int n_cached_tokens = 0;      // of them, kept in the KV cache from the previous request (Request::reuse_prefix)
  int n_generated = 0;
  int64_t kv_bytes = 0;         // KV cache bytes holding the prompt
  llm::StopReason stop = llm::StopReason::max_tokens;
  std::vector<llm::TokenLogprob> logprobs;  // when sampling.top_logprobs >= 0
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

  // The family of the vision file and the encoder serving it.
  const family::Family& family() const;
  family::Encoder encoder() const;
  // What methods plan against (grid 0 x 0 for dynamic-resolution families: it depends on the image).
  EncoderInfo encoder_info() const;
  // vtprune's own ViT (LLaVA-1.5 files); throws Error when libmtmd serves the file.
  const vision::VisionModel& vision_model() const;
  llm::Session& session();

  // The user's method options with the family's defaults for the method under them (family::method_options);
  // throws InputError when the method is refused on this family.
  std::vector<std::string> method_options(const std::string& method, const std::vector<std::string>& options) const;

  // Runs one request; `on_piece` receives the answer as it is generated. Throws InputError for bad images,
  // methods, options, budgets or conversations, and prompts longer than the context (llm::MessageError when it
  // can name the message); Error for failures of the models and encoders (a non-finite encoder output or a
  // missing attention tap included), never blamed on the request.
  Result run(const Request& request, const llm::PieceCallback& on_piece = {});

 private:
  struct Impl;
  explicit Vlm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace vtprune::pipeline
