// `vtprune eval imagenet`: a token-reduction benchmark on a real ViT classifier (timm DeiT/ViT).
//
// Blocks [0, E) are the "encoder" (E = prune_after). Their output (CLS + N patch rows, no final norm) and
// the taps a method asks for go to the reducer; blocks [E, depth) + final norm + head then run on
// [CLS; kept or merged rows]. The unpruned reference is the ordinary full forward, exactly what
// `vtprune classify` computes, so method `none` reproduces classify bit for bit.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "vtprune/reduce.h"

namespace vtprune::eval {

// How a method's LLaVA-1.5 layer choices (24-layer CLIP, features from layer 22) map onto a classifier
// split after block E of a `depth`-block ViT. The ONE place these choices live (README "eval imagenet"):
//
//   method             LLaVA-1.5 default                     classifier split after E blocks
//   hiprune            object_layer 8 (1-based 9) of 24      round_half_even(8 * depth / 24), at most E-1
//                      deep_layer = feature (22)             E-1 (the layer producing the reduced tokens)
//   fastervlm          layer = feature (22)                  E-1
//   visionzip          layer = feature (22)                  E-1; budget + 1 (its CLS row is the tail's CLS)
//   prumerge(_plus)    layer = 23, whose INPUT is the        E: block E's raw q/k on block E-1's output
//                      feature map
//   divprune           space = projected                     space = features (a classifier has no projector)
//   dfmr, pool, random, none: no layer choices
struct ClassifierPlan {
  std::vector<std::string> options;  // key=value for make_reducer, before the user's overrides
  int budget_extra = 0;              // rows added to the budget for a method that outputs the CLS row
};
ClassifierPlan classifier_plan(std::string_view method, int prune_after, int depth);

struct ImagenetConfig {
  std::filesystem::path model;    // timm folder (model.safetensors + config.json) or the file
  std::filesystem::path images;   // folder; label = synset prefix of the file name ("n01440764_...")
  std::filesystem::path synsets;  // synset_words.txt: line i = "<synset id> <name>" of class i
  std::filesystem::path out;
  std::vector<std::string> methods;
  std::vector<std::string> budgets;       // as given: "98", "25%", "0.5"; `none` always runs at "all"
  std::vector<std::string> options;       // "method:key=value", applied after the plan's options
  int prune_after = 8;                    // E
  int threads = 1;
  std::string device = "cpu";             // where the ViT runs (cpu, gpu or a ggml device name)
  int limit = 0;                          // first N images by name (0 = all)
  bool progress = true;
  bool chart = true;                      // write accuracy.png
};

// One row of results.csv.
struct ImagenetRow {
  std::string method, budget;
  int64_t n_images = 0;
  int64_t n_labelled = 0;
  double top1 = 0, top5 = 0;              // over labelled images
  double agreement = 0;                   // top-1 equal to the unpruned model's top-1
  double mean_kl = 0;                     // KL(unpruned || pruned) of the class distributions, nats
  double mean_tokens_kept = 0;            // patch-derived rows after reduction (CLS not counted)
};

// Runs (or resumes) the benchmark; writes OUT/per_image.tsv (append-only), OUT/results.csv and
// OUT/accuracy.png. Returns the rows of results.csv.
std::vector<ImagenetRow> run_imagenet_eval(const ImagenetConfig& config);

// Numerics shared with the tests.
// KL(p || q) for p = softmax(reference), q = softmax(other), in nats (double precision, log-sum-exp).
double kl_divergence_from_logits(const std::vector<float>& reference, const std::vector<float>& other);
// The class whose synset id prefixes `file_name` ("<id>_..."), or -1.
int label_from_file_name(const std::string& file_name, const std::vector<std::string>& synset_ids);

}  // namespace vtprune::eval
