// EncoderOutput / Needs bookkeeping and the validation every reducer relies on.
#include <algorithm>
#include <string>

#include "common.h"
#include "vtprune/reduce.h"

namespace vtprune {
namespace {

std::string shape(int64_t a, int64_t b) { return "[" + std::to_string(a) + " x " + std::to_string(b) + "]"; }

void check_vector(std::span<const float> v, int64_t expected, const std::string& what) {
  if (!v.empty() && static_cast<int64_t>(v.size()) != expected) {
    throw Error(what + " has " + std::to_string(v.size()) + " values, expected " + std::to_string(expected));
  }
}

void check_matrix(const MatrixView& m, int64_t rows, const std::string& what) {
  if (m.empty()) return;
  if (m.cols <= 0 || m.rows * m.cols != static_cast<int64_t>(m.data.size())) {
    throw Error(what + " view " + shape(m.rows, m.cols) + " does not match its " + std::to_string(m.data.size()) +
                " floats");
  }
  if (rows >= 0 && m.rows != rows) {
    throw Error(what + " has shape " + shape(m.rows, m.cols) + ", expected " + std::to_string(rows) + " rows");
  }
}

}  // namespace

const LayerTap* EncoderOutput::find_tap(int layer) const {
  for (const auto& t : taps) {
    if (t.layer == layer) return &t;
  }
  return nullptr;
}

const LayerTap& EncoderOutput::tap(int layer, std::string_view method) const {
  if (const auto* t = find_tap(layer)) return *t;
  throw Error(std::string(method) + ": the encoder output has no tap for layer " + std::to_string(layer));
}

void EncoderOutput::validate() const {
  const Grid& g = info.grid;
  if (g.h <= 0 || g.w <= 0) {
    throw Error("encoder output: grid " + std::to_string(g.h) + "x" + std::to_string(g.w) + " is empty");
  }
  const int64_t n = num_patches(), t = seq_len();
  check_matrix(features, n, "features");
  if (!features.empty() && features.rows != n) {
    throw Error("features have " + std::to_string(features.rows) + " rows but the grid " + std::to_string(g.h) + "x" +
                std::to_string(g.w) + " has " + std::to_string(n) + " patches");
  }
  if (!cls_features.empty()) {
    if (!info.has_cls) throw Error("encoder output: cls_features given but has_cls is false");
    if (!features.empty()) check_vector(cls_features, features.cols, "cls_features");
  }
  check_matrix(projected, n, "projected embeddings");
  check_matrix(image_embeds, n, "image_embeds");
  check_matrix(text_embeds, -1, "text_embeds");
  if (!image_embeds.empty() && !text_embeds.empty() && image_embeds.cols != text_embeds.cols) {
    throw Error("image_embeds " + shape(image_embeds.rows, image_embeds.cols) + " and text_embeds " +
                shape(text_embeds.rows, text_embeds.cols) + " differ in width (not the same CLIP projection?)");
  }
  check_matrix(prompt_embeddings, -1, "prompt_embeddings");
  if (!projected.empty() && !prompt_embeddings.empty() && projected.cols != prompt_embeddings.cols) {
    throw Error("prompt_embeddings " + shape(prompt_embeddings.rows, prompt_embeddings.cols) +
                " and projected embeddings " + shape(projected.rows, projected.cols) +
                " differ in width (not the same LLM?)");
  }
  for (const auto& tp : taps) {
    const std::string where = "layer " + std::to_string(tp.layer) + " ";
    check_vector(tp.received, t, where + "received attention");
    check_vector(tp.cls_attention, t, where + "CLS attention");
    if (!tp.attention.empty()) {
      if (info.heads <= 0) throw Error(where + "attention maps given but heads is " + std::to_string(info.heads));
      check_vector(tp.attention, int64_t{info.heads} * t * t,
                   where + "attention maps [" + std::to_string(info.heads) + " x " + std::to_string(t) + " x " +
                       std::to_string(t) + "]");
    }
    check_matrix(tp.keys, t, where + "keys");
    if (!tp.cls_query.empty() && !tp.keys.empty()) check_vector(tp.cls_query, tp.keys.cols, where + "CLS query");
  }
}

void Needs::add(const TapRequest& request) {
  for (auto& t : taps) {
    if (t.layer == request.layer) {
      t.received |= request.received;
      t.cls_attention |= request.cls_attention;
      t.attention |= request.attention;
      t.keys |= request.keys;
      t.cls_query |= request.cls_query;
      return;
    }
  }
  taps.push_back(request);
  std::sort(taps.begin(), taps.end(), [](const TapRequest& a, const TapRequest& b) { return a.layer < b.layer; });
}

const TapRequest* Needs::find(int layer) const {
  for (const auto& t : taps) {
    if (t.layer == layer) return &t;
  }
  return nullptr;
}

void Needs::merge(const Needs& other) {
  for (const auto& t : other.taps) add(t);
  features |= other.features;
  cls_features |= other.cls_features;
  projected |= other.projected;
  image_embeds |= other.image_embeds;
  text_embeds |= other.text_embeds;
  prompt_embeddings |= other.prompt_embeddings;
}

// ---- the Reducer front door: validation shared by every method -------------------------------------

Reduction Reducer::reduce(const EncoderOutput& input, const Budget& budget) const {
  const auto& name = info().name;
  try {
    input.validate();
  } catch (const Error& e) {
    throw Error(name + ": " + e.what());
  }
  const Needs need = needs(input.info);
  const int64_t n = input.num_patches();
  // Finiteness is checked on what a method decides with (scores, and features when it reads them);
  // gathered-only features pass through untouched (a full scan would cost more than most methods).
  if (need.features) {
    if (input.features.empty()) throw Error(name + ": needs the patch features, none given");
    reduce::check_finite(input.features.data, name, "features");
  }
  if (need.cls_features) {
    if (input.cls_features.empty()) throw Error(name + ": needs the CLS token's features, none given");
    reduce::check_finite(input.cls_features, name, "CLS features");
  }
  if (need.projected) {
    if (input.projected.empty()) throw Error(name + ": needs post-projector embeddings, none given");
    reduce::check_finite(input.projected.data, name, "projected embeddings");
  }
  // Prompt-conditioned inputs: the caller computes them from the prompt (README "Methods", cdpruner).
  auto require_matrix = [&](bool wanted, const MatrixView& m, const char* what, const char* from) {
    if (!wanted) return;
    if (m.empty()) throw Error(name + ": needs " + what + " (" + from + "), none given");
    reduce::check_finite(m.data, name, what);
  };
  require_matrix(need.image_embeds, input.image_embeds, "image_embeds",
                 "CLIP visual_projection(post_layernorm(patch features))");
  require_matrix(need.text_embeds, input.text_embeds, "text_embeds", "CLIP text tower embeddings of the prompt");
  require_matrix(need.prompt_embeddings, input.prompt_embeddings, "prompt_embeddings",
                 "the LLM's token embeddings of the prompt");
  for (const auto& req : need.taps) {
    const LayerTap& tp = input.tap(req.layer, name);
    const std::string l = "layer " + std::to_string(req.layer) + " ";
    auto require = [&](bool wanted, std::span<const float> v, const char* what) {
      if (!wanted) return;
      if (v.empty()) throw Error(name + ": needs " + l + what + ", none given");
      reduce::check_finite(v, name, l + what);
    };
    require(req.received, tp.received, "received attention");
    require(req.cls_attention, tp.cls_attention, "CLS attention");
    require(req.attention, tp.attention, "attention maps");
    require(req.keys, tp.keys.data, "keys");
    require(req.cls_query, tp.cls_query, "CLS query");
  }
  const bool given = budget.kind != Budget::Kind::All;
  int64_t count = 0;
  try {
    count = budget.resolve(n);
  } catch (const Error& e) {
    throw Error(name + ": " + e.what());
  }
  Reduction r = run(input, count, given);
  r.method = name;
  r.source_tokens = n;
  return r;
}

}  // namespace vtprune
