// Case directories: the file format of ../shared/golden (case.json + raw little-endian float32 tensors),
// read into an EncoderOutput a reducer can run on, and written back by `vtprune make-case`.
//
// case.json: {"method", "params": {...}, "inputs": {name: {"file", "shape"}}, "expected": {...}, "oracle": {...}}
// Inputs by name (shapes as in the golden README; H heads, T = N + 1 sequence tokens, CLS first):
//   attn_obj, attn_deep, attn [H,T,T]   post-softmax maps -> received / CLS-attention taps
//   q, k [T,C]                          raw q_proj / k_proj of the last layer (PruMerge)
//   keys [T,C]                          raw k_proj of the feature layer (VisionZip); metric is ignored
//   hidden [T,D]                        feature-layer hidden states incl. CLS (VisionZip)
//   features [N,D]                      patch features (DivPrune, CDPruner: the projected embeddings)
//   image_embeds [N,C], text_embeds [M,C]   CLIP image / instruction embeddings (CDPruner relevance=clip)
//   prompt_embeddings [P,D]             the LLM's token embeddings of the prompt (CDPruner relevance=llm)
// params: grid_h/grid_w/n_patches, has_cls, budget, method options by name (alpha, k_nn, iqr_k, dominant,
// contextual, ...), "options": ["key=value", ...], and for HiPrune "object_layer" 1-based (HIPRUNE_OBJECT_LAYER).
// Layer geometry defaults to LLaVA-1.5's CLIP ViT-L/14-336: 24 layers, features from layer 22
// (params "num_layers" / "feature_layer" override it).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vtprune/reduce.h"

namespace vtprune::family {
struct Family;
}

namespace vtprune::io {

// Reads exactly `count` float32 values; throws Error naming the file when it is missing or the size differs.
std::vector<float> read_f32(const std::filesystem::path& file, int64_t count);
void write_f32(const std::filesystem::path& file, std::span<const float> values);

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

class Case {
 public:
  Case(const Case&) = delete;  // the encoder output holds views into this object's buffers
  Case& operator=(const Case&) = delete;
  Case(Case&&) = default;
  Case& operator=(Case&&) = default;
  // Loads and validates dir/case.json and every input it names. Throws Error naming the file and field.
  static Case load(const std::filesystem::path& dir);

  const std::string& method() const { return method_; }
  const nlohmann::json& params() const { return params_; }
  const nlohmann::json& expected() const { return expected_; }
  const Tensor* input(const std::string& name) const;
  // Budget and options the case asks for (from params).
  const Budget& budget() const { return budget_; }
  const std::vector<std::string>& options() const { return options_; }
  // The encoder output for the case's method; views point into this Case (keep it alive).
  const EncoderOutput& encoder_output() const { return output_; }
  // The model family named by params.model_family (e.g. "qwen2_5_vl"), or null for LLaVA-1.5's geometry.
  const family::Family* family() const;

 private:
  Case() = default;
  std::filesystem::path dir_;
  std::string method_;
  nlohmann::json params_, expected_;
  std::map<std::string, Tensor> inputs_;
  Budget budget_;
  std::vector<std::string> options_;
  // storage behind the views of output_
  std::vector<std::vector<float>> derived_;
  EncoderOutput output_;
  void build_output();
};

// Writes a synthetic case for `method` in the same format (inputs only, "expected": {}): seeded random
// q/k projections turned into real softmax attention maps, smooth random features. Used for examples,
// tests and benchmarks; never for correctness claims (those come from ../shared/golden).
struct SyntheticCaseSpec {
  std::string method;
  Grid grid{24, 24};
  int heads = 2;
  int dim = 32;
  uint64_t seed = 1;
  Budget budget = Budget::all();
  std::vector<std::string> options;
};
void write_synthetic_case(const SyntheticCaseSpec& spec, const std::filesystem::path& dir);

// result.json of `vtprune reduce`: method, kept (output order), kept_sorted, index_space, rows, dim, roles,
// selection_order, groups, relevance (CDPruner: per patch), stats, options, budget.
nlohmann::json reduction_to_json(const Reduction& r, const Reducer& reducer, const Budget& budget);

}  // namespace vtprune::io
