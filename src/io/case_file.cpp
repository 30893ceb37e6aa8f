#include "vtprune/case_file.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>

#include "../reduce/common.h"
#include "vtprune/family.h"

namespace vtprune::io {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<float> read_f32(const fs::path& file, int64_t count) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) throw Error(file.string() + ": cannot read (" + ec.message() + ")");
  if (count < 0 || size != static_cast<uintmax_t>(count) * sizeof(float)) {
    throw Error(file.string() + ": has " + std::to_string(size) + " bytes, expected " + std::to_string(count) +
                " float32 values (" + std::to_string(count * 4) + " bytes)");
  }
  std::vector<float> v(static_cast<size_t>(count));
  std::ifstream in(file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size))) {
    throw Error(file.string() + ": read failed");
  }
  return v;
}

void write_f32(const fs::path& file, std::span<const float> values) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size_bytes()));
  if (!out) throw Error(file.string() + ": write failed");
}

namespace {

int64_t get_int(const json& params, const char* key, int64_t fallback) {
  if (!params.contains(key)) return fallback;
  const auto& v = params[key];
  if (!v.is_number_integer()) throw Error(std::string("case.json: params.") + key + " must be an integer");
  return v.get<int64_t>();
}

std::string scalar_to_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    std::ostringstream os;
    os.precision(17);
    os << v.get<double>();
    return os.str();
  }
  throw Error("case.json: option value " + v.dump() + " is not a scalar");
}

}  // namespace

const Tensor* Case::input(const std::string& name) const {
  auto it = inputs_.find(name);
  return it == inputs_.end() ? nullptr : &it->second;
}

Case Case::load(const fs::path& dir) {
  Case c;
  c.dir_ = dir;
  const fs::path file = dir / "case.json";
  std::ifstream in(file);
  if (!in) throw Error(file.string() + ": cannot open");
  json doc;
  try {
    doc = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(file.string() + ": malformed JSON: " + e.what());
  }
  try {
    if (!doc.is_object() || !doc.contains("method") || !doc["method"].is_string()) {
      throw Error("missing string field \"method\"");
    }
    c.method_ = doc["method"].get<std::string>();
    c.params_ = doc.value("params", json::object());
    c.expected_ = doc.value("expected", json::object());
    if (!c.params_.is_object()) throw Error("\"params\" must be an object");
    const json inputs = doc.value("inputs", json::object());
    if (!inputs.is_object()) throw Error("\"inputs\" must be an object");
    for (const auto& [name, spec] : inputs.items()) {
      if (!spec.is_object() || !spec.contains("file") || !spec["file"].is_string() || !spec.contains("shape") ||
          !spec["shape"].is_array()) {
        throw Error("inputs." + name + " needs \"file\" (string) and \"shape\" (array)");
      }
      const std::string rel = spec["file"].get<std::string>();
      if (rel.find("..") != std::string::npos || fs::path(rel).is_absolute()) {
        throw Error("inputs." + name + ".file must be a file name inside the case directory");
      }
      Tensor t;
      int64_t count = 1;
      for (const auto& d : spec["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (int64_t{1} << 31)) {
          throw Error("inputs." + name + ".shape has a bad dimension " + d.dump());
        }
        t.shape.push_back(d.get<int64_t>());
        count *= d.get<int64_t>();
        if (count > (int64_t{1} << 32)) throw Error("inputs." + name + " is too large");
      }
      t.data = read_f32(dir / rel, count);
      c.inputs_.emplace(name, std::move(t));
    }
    // budget and options
    if (c.params_.contains("budget")) {
      const auto& b = c.params_["budget"];
      c.budget_ = b.is_string() ? Budget::parse(b.get<std::string>()) : Budget::parse(scalar_to_string(b));
    } else if (c.params_.contains("retention")) {  // HiPrune's Qwen path: HIPRUNE_QWEN_RETENTION, a fraction
      if (!c.params_["retention"].is_number()) throw Error("params.retention must be a number");
      c.budget_ = Budget::fraction(c.params_["retention"].get<double>());
    }
    const MethodInfo& info = method_info(c.method_);
    for (const auto& spec : info.options) {
      if (spec.name == "object_layer" && c.params_.contains("object_layer")) {  // 1-based HIPRUNE_OBJECT_LAYER
        c.options_.push_back("object_layer=" + std::to_string(get_int(c.params_, "object_layer", 9) - 1));
      } else if (c.params_.contains(spec.name)) {
        c.options_.push_back(spec.name + "=" + scalar_to_string(c.params_[spec.name]));
      }
    }
    if (c.params_.contains("options")) {
      for (const auto& kv : c.params_["options"]) {
        if (!kv.is_string()) throw Error("params.options must be a list of \"key=value\" strings");
        c.options_.push_back(kv.get<std::string>());
      }
    }
    // A case from another model family runs with that family's defaults for the method (e.g. HiPrune's Qwen
    // rules), as the pipeline would; the case's own parameters override them.
    if (const family::Family* f = c.family()) c.options_ = family::method_options(*f, c.method_, c.options_);
    c.build_output();
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
  return c;
}

const family::Family* Case::family() const {
  if (!params_.contains("model_family")) return nullptr;
  if (!params_["model_family"].is_string()) throw Error("params.model_family must be a string");
  std::string name = params_["model_family"].get<std::string>();
  std::replace(name.begin(), name.end(), '_', '-');                 // "qwen2_5_vl" -> "qwen2-5-vl"
  if (name == "qwen2-5-vl") name = "qwen2.5-vl";
  return &family::by_name(name);
}

void Case::build_output() {
  EncoderOutput& out = output_;
  const family::Family* fam = family();
  // Merged-token families: the grid is the LLM's token grid; the maps cover merge x merge patches per token,
  // merge-unit-major (patches unit*t .. unit*t + unit-1 form token t).
  const int unit = fam ? fam->geometry.merge * fam->geometry.merge : 1;
  const bool has_cls = params_.value("has_cls", fam ? fam->geometry.has_cls : true);
  int64_t n = get_int(params_, "n_tokens", get_int(params_, "n_patches", 576) / unit);
  const int64_t gh = get_int(params_, "grid_h", 0), gw = get_int(params_, "grid_w", 0);
  if (gh > 0 && gw > 0) {
    if ((params_.contains("n_patches") || params_.contains("n_tokens")) && gh * gw != n) {
      throw Error("grid " + std::to_string(gh) + "x" + std::to_string(gw) + " does not hold " + std::to_string(n) +
                  (unit > 1 ? " merged tokens" : " patches (n_patches)"));
    }
    out.info.grid = {static_cast<int>(gh), static_cast<int>(gw)};
  } else {
    const auto side = static_cast<int>(std::lround(std::sqrt(static_cast<double>(n))));
    if (int64_t{side} * side != n) throw Error("n_patches=" + std::to_string(n) + " is not square; give grid_h and grid_w");
    out.info.grid = {side, side};
  }
  n = out.info.grid.size();
  // sequence length of the attention maps: the ViT's (unit patches per token, + CLS)
  const int64_t t = n * unit + (has_cls ? 1 : 0);
  out.info.has_cls = has_cls;
  out.info.queries = t;
  // Qwen2.5-VL's ViT: 32 blocks, the LLM gets the last one; LLaVA-1.5's CLIP: 24, features from layer 22.
  out.info.num_layers = static_cast<int>(get_int(params_, "num_layers", fam && unit > 1 ? 32 : 24));
  out.info.feature_layer = static_cast<int>(
      get_int(params_, "feature_layer", out.info.num_layers - (fam && !fam->geometry.has_cls ? 1 : 2)));

  auto expect_shape = [&](const std::string& name, std::vector<int64_t> shape) -> const Tensor& {
    const Tensor* tensor = input(name);
    if (!tensor) throw Error("method " + method_ + " needs input \"" + name + "\"");
    if (tensor->shape.size() != shape.size()) throw Error("input " + name + " has the wrong rank");
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] >= 0 && tensor->shape[i] != shape[i]) {
        std::ostringstream want, got;  // (ostringstream: GCC 12's -Wrestrict misfires on string concatenation)
        for (size_t j = 0; j < shape.size(); ++j) {
          if (j) want << ',', got << ',';
          if (shape[j] < 0) want << '*'; else want << shape[j];
          got << tensor->shape[j];
        }
        throw Error("input " + name + " has shape [" + got.str() + "], expected [" + want.str() + "]");
      }
    }
    return *tensor;
  };
  auto attention_tap = [&](const std::string& name, int layer, bool received, bool cls_row) {
    const Tensor& a = expect_shape(name, {-1, t, t});
    out.info.heads = static_cast<int>(a.shape[0]);
    std::vector<float> rec, cls;
    reduce::attention_statistics(a.data, out.info.heads, t, received ? &rec : nullptr, cls_row ? &cls : nullptr);
    if (unit > 1 && received) rec = family::merge_unit_mean(rec, unit);  // per patch -> per merged token
    LayerTap* tap = nullptr;
    for (auto& existing : out.taps) {
      if (existing.layer == layer) tap = &existing;
    }
    if (!tap) {
      out.taps.push_back({});
      tap = &out.taps.back();
      tap->layer = layer;
    }
    if (received) tap->received = derived_.emplace_back(std::move(rec));
    if (cls_row) tap->cls_attention = derived_.emplace_back(std::move(cls));
  };
  auto features = [&](const std::string& name, int64_t rows) {
    const Tensor& f = expect_shape(name, {rows, -1});
    return MatrixView{f.data, f.shape[0], f.shape[1]};
  };

  out.taps.reserve(4);  // taps are referenced by pointer while being filled
  const std::string& m = method_;
  if (m == "hiprune") {
    const int object_layer = static_cast<int>(get_int(params_, "object_layer", 9) - 1);
    attention_tap("attn_obj", object_layer, true, false);
    attention_tap("attn_deep", out.info.feature_layer, true, false);
    if (input("features")) out.features = features("features", n);
  } else if (m == "fastervlm") {
    attention_tap("attn", out.info.feature_layer, false, true);
    if (input("features")) out.features = features("features", n);
  } else if (m == "visionzip") {
    attention_tap("attn", out.info.feature_layer, false, true);
    const Tensor& keys = expect_shape("keys", {t, -1});
    out.taps.back().keys = {keys.data, keys.shape[0], keys.shape[1]};
    const Tensor& hidden = expect_shape("hidden", {t, -1});
    const int64_t d = hidden.shape[1];
    out.cls_features = std::span<const float>(hidden.data).first(static_cast<size_t>(d));
    out.features = {std::span<const float>(hidden.data).subspan(static_cast<size_t>(d)), n, d};
  } else if (m == "prumerge" || m == "prumerge_plus") {
    const Tensor& q = expect_shape("q", {t, -1});
    const Tensor& k = expect_shape("k", {t, q.shape[1]});
    LayerTap tap;
    tap.layer = out.info.num_layers - 1;
    tap.keys = {k.data, k.shape[0], k.shape[1]};
    tap.cls_query = std::span<const float>(q.data).first(static_cast<size_t>(q.shape[1]));
    out.taps.push_back(tap);
    out.features = features("features", n);
  } else if (m == "divprune") {
    out.projected = features("features", n);
    out.features = out.projected;
  } else if (m == "cdpruner") {  // features are the projected tokens; the prompt-side inputs are optional
    out.projected = features("features", n);
    out.features = out.projected;
    if (input("image_embeds")) out.image_embeds = features("image_embeds", n);
    if (input("text_embeds")) out.text_embeds = features("text_embeds", -1);
    if (input("prompt_embeddings")) out.prompt_embeddings = features("prompt_embeddings", -1);
  } else {  // pool, dfmr, random, none: features only (random / none can also run without them)
    if (input("features")) out.features = features("features", n);
  }
  if (out.info.heads == 0) out.info.heads = static_cast<int>(get_int(params_, "heads", 1));
}

// ---- synthetic cases ------------------------------------------------------------------------------

namespace {

struct Synth {
  std::mt19937_64 rng;
  std::normal_distribution<float> normal{0.0f, 1.0f};
  explicit Synth(uint64_t seed) : rng(seed) {}
  std::vector<float> gaussian(int64_t n, float scale = 1.0f) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(rng) * scale;
    return v;
  }
};

// Smooth features: a few low-frequency spatial waves per channel plus noise, and some "object" blobs.
std::vector<float> smooth_features(Synth& s, const Grid& g, int d, bool with_cls) {
  const int64_t n = g.size();
  std::vector<float> f(static_cast<size_t>((n + (with_cls ? 1 : 0)) * d));
  const int64_t row0 = with_cls ? 1 : 0;
  if (with_cls) {
    auto cls = s.gaussian(d);
    std::copy(cls.begin(), cls.end(), f.begin());
  }
  std::uniform_real_distribution<float> uni(0.0f, 1.0f);
  for (int c = 0; c < d; ++c) {
    const float fy = uni(s.rng) * 3.0f, fx = uni(s.rng) * 3.0f, phase = uni(s.rng) * 6.28f;
    for (int r = 0; r < g.h; ++r) {
      for (int col = 0; col < g.w; ++col) {
        const float v = std::sin(fy * static_cast<float>(r) / static_cast<float>(g.h) * 3.14f +
                                 fx * static_cast<float>(col) / static_cast<float>(g.w) * 3.14f + phase);
        f[static_cast<size_t>((row0 + r * g.w + col) * d + c)] = v + 0.3f * s.normal(s.rng);
      }
    }
  }
  return f;
}

// Post-softmax attention maps [H, T, T] from random queries/keys with a few salient keys.
std::vector<float> attention_maps(Synth& s, int64_t t, int heads, int head_dim) {
  std::vector<float> maps(static_cast<size_t>(int64_t{heads} * t * t));
  std::vector<float> boost = s.gaussian(t, 0.6f);
  for (int h = 0; h < heads; ++h) {
    const auto q = s.gaussian(t * head_dim), k = s.gaussian(t * head_dim);
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (int64_t i = 0; i < t; ++i) {
      float* row = maps.data() + (int64_t{h} * t + i) * t;
      float mx = -1e30f;
      for (int64_t j = 0; j < t; ++j) {
        row[j] = reduce::dot(&q[static_cast<size_t>(i * head_dim)], &k[static_cast<size_t>(j * head_dim)], head_dim) * scale +
                 2.0f * boost[static_cast<size_t>(j)];
        mx = std::max(mx, row[j]);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < t; ++j) sum += (row[j] = std::exp(row[j] - mx));
      for (int64_t j = 0; j < t; ++j) row[j] /= sum;
    }
  }
  return maps;
}

}  // namespace

void write_synthetic_case(const SyntheticCaseSpec& spec, const fs::path& dir) {
  method_info(spec.method);  // validates the name
  if (spec.grid.h <= 0 || spec.grid.w <= 0 || spec.heads <= 0 || spec.dim <= 0 || spec.dim % spec.heads != 0) {
    throw Error("make-case: grid, heads and dim must be positive and dim divisible by heads");
  }
  fs::create_directories(dir);
  Synth s(spec.seed);
  const Grid& g = spec.grid;
  const int64_t n = g.size(), t = n + 1;
  const int d = spec.dim, hd = spec.dim / spec.heads;
  json inputs = json::object();
  auto put = [&](const std::string& name, const std::vector<float>& data, std::vector<int64_t> shape) {
    write_f32(dir / (name + ".f32"), data);
    inputs[name] = {{"file", name + ".f32"}, {"shape", shape}};
  };
  const std::string& m = spec.method;
  if (m == "hiprune") {
    put("attn_obj", attention_maps(s, t, spec.heads, hd), {spec.heads, t, t});
    put("attn_deep", attention_maps(s, t, spec.heads, hd), {spec.heads, t, t});
    put("features", smooth_features(s, g, d, false), {n, d});
  } else if (m == "fastervlm") {
    put("attn", attention_maps(s, t, spec.heads, hd), {spec.heads, t, t});
    put("features", smooth_features(s, g, d, false), {n, d});
  } else if (m == "visionzip") {
    put("attn", attention_maps(s, t, spec.heads, hd), {spec.heads, t, t});
    put("keys", s.gaussian(t * d), {t, d});
    put("hidden", smooth_features(s, g, d, true), {t, d});
  } else if (m == "prumerge" || m == "prumerge_plus") {
    auto q = s.gaussian(t * d), k = s.gaussian(t * d);
    // a handful of patches whose keys align with the CLS query: the attention outliers PruMerge looks for
    std::uniform_int_distribution<int64_t> pick(1, t - 1);
    for (int i = 0; i < std::max<int64_t>(3, n / 40); ++i) {
      const int64_t j = pick(s.rng);
      for (int c = 0; c < d; ++c) k[static_cast<size_t>(j * d + c)] += 0.5f * q[static_cast<size_t>(c)];
    }
    put("q", q, {t, d});
    put("k", k, {t, d});
    put("features", smooth_features(s, g, d, false), {n, d});
  } else if (m == "cdpruner") {
    // projected tokens, CLIP-side embeddings (C = d / 2) of the patches and of a 2-segment instruction, and LLM
    // prompt embeddings (P = 5 tokens) in the projected space; the embeddings share a direction with the features
    // so that relevance is not noise.
    const auto features = smooth_features(s, g, d, false);
    const int c = std::max(1, d / 2);
    std::vector<float> image(static_cast<size_t>(n * c));
    for (int64_t p = 0; p < n; ++p) {
      for (int k = 0; k < c; ++k) image[static_cast<size_t>(p * c + k)] = features[static_cast<size_t>(p * d + k)] + 0.5f * s.normal(s.rng);
    }
    put("features", features, {n, d});
    put("image_embeds", image, {n, c});
    put("text_embeds", s.gaussian(2 * c), {2, c});
    put("prompt_embeddings", s.gaussian(5 * int64_t{d}), {5, d});
  } else {
    put("features", smooth_features(s, g, d, false), {n, d});
  }
  json params = {{"grid_h", g.h},        {"grid_w", g.w},       {"n_patches", n},
                 {"has_cls", m != "divprune" && m != "cdpruner"}, {"heads", spec.heads}, {"seed", spec.seed},
                 {"num_layers", 24},     {"feature_layer", 22}};
  if (m == "hiprune") params["object_layer"] = 9;
  if (spec.budget.kind != Budget::Kind::All) params["budget"] = spec.budget.to_string();
  if (!spec.options.empty()) params["options"] = spec.options;
  const json doc = {{"method", m},
                    {"params", params},
                    {"inputs", inputs},
                    {"expected", json::object()},
                    {"oracle", {{"notes", "synthetic inputs written by vtprune make-case (seeded); no oracle output"}}}};
  std::ofstream(dir / "case.json") << doc.dump(1) << "\n";
}

nlohmann::json reduction_to_json(const Reduction& r, const Reducer& reducer, const Budget& budget) {
  json j;
  j["method"] = r.method;
  j["kept"] = r.kept;
  std::vector<int32_t> sorted = r.kept;
  std::sort(sorted.begin(), sorted.end());
  j["kept_sorted"] = sorted;
  j["index_space"] = r.sequence_indices ? "sequence" : "patch";
  j["source_tokens"] = r.source_tokens;
  j["rows"] = r.rows() > 0 ? r.rows() : static_cast<int64_t>(r.roles.size());
  j["dim"] = r.dim;
  std::vector<std::string> roles;
  for (TokenRole role : r.roles) roles.emplace_back(to_string(role));
  j["roles"] = roles;
  if (!r.selection_order.empty()) j["selection_order"] = r.selection_order;
  if (!r.groups.empty()) j["groups"] = r.groups;
  if (!r.relevance.empty()) j["relevance"] = r.relevance;
  j["stats"] = r.stats;
  j["options"] = reducer.options().effective();
  j["budget"] = budget.to_string();
  j["budget_use"] = std::string(to_string(reducer.info().budget_use));
  return j;
}

}  // namespace vtprune::io
