// A plain C++ float64 forward pass of a timm ViT/DeiT classifier, written only for tests: it parses the
// safetensors file itself and shares no code with src/vision, so it checks the ggml graph independently.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace vtprune::test {

class ReferenceVit {
 public:
  // `heads` and `eps` as in the model's config.json.
  ReferenceVit(const std::filesystem::path& safetensors, int heads, double eps);

  struct Result {
    std::vector<double> logits;
    // For the layer given to forward(): the full post-softmax maps [H][T][T], the raw k projection
    // [T][D] and the raw q projection of the CLS token [D].
    std::vector<double> attention, keys, cls_query;
  };
  // `image` is the preprocessed input, CHW planar [3 x S x S].
  Result forward(const std::vector<float>& image, int tap_layer = -1) const;

  int depth() const { return depth_; }

 private:
  const std::vector<double>& t(const std::string& name) const;
  std::map<std::string, std::vector<double>> tensors_;
  int dim_ = 0, heads_ = 0, depth_ = 0, patch_ = 0, grid_ = 0, ff_ = 0, classes_ = 0;
  double eps_ = 1e-6;
};

}  // namespace vtprune::test
