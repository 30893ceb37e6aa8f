// The CLIP text tower and image-side projection (ggml, float32) against a float64 plain-C++ forward written
// only here, on random weights in Hugging Face's tensor layout; loader errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "test_support.h"
#include "vtprune/text.h"

namespace vtprune::text {
namespace {

namespace fs = std::filesystem;

// ---- a tiny CLIP checkpoint (the library's random checkpoint writer) --------------------------------------

using Tensors = ClipTensors;
constexpr int kD = 32, kH = 4, kF = 64, kLayers = 2, kT = 16, kC = 16, kDv = 24;
constexpr RandomClipShape kShape{.width = kD, .heads = kH, .ffn = kF, .layers = kLayers, .context = kT, .embed = kC, .vision_width = kDv};

Tensors random_clip(uint64_t seed, bool image_side = true) {
  RandomClipShape shape = kShape;
  if (!image_side) shape.vision_width = 0;
  return random_clip_tensors(shape, seed);
}

fs::path write_model(const Tensors& t, int64_t eos_token_id, const std::string& tag) {
  const fs::path dir = test::temp_dir(tag);
  RandomClipShape shape = kShape;
  shape.eos_token_id = eos_token_id;
  write_clip_checkpoint(dir, t, shape);
  return dir;
}

// Rewrites only the weights file (broken checkpoints).
void write_safetensors(const fs::path& path, const Tensors& t) {
  const fs::path tmp = test::temp_dir("clip_rewrite");
  write_clip_checkpoint(tmp, t, kShape);
  fs::copy_file(tmp / "model.safetensors", path, fs::copy_options::overwrite_existing);
}

// ---- the float64 reference (CLIPTextTransformer + text_projection; post_layernorm + visual_projection) -----

using Vec = std::vector<double>;

const std::vector<float>& w(const Tensors& t, const std::string& name) { return t.at(name).data; }

Vec layer_norm(const Vec& x, const std::vector<float>& g, const std::vector<float>& b) {
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(x.size());
  for (double v : x) var += (v - mean) * (v - mean);
  var /= static_cast<double>(x.size());
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = (x[i] - mean) / std::sqrt(var + 1e-5) * g[i] + b[i];
  return y;
}

Vec linear(const Vec& x, const std::vector<float>& wt, const std::vector<float>* b, size_t out) {
  Vec y(out);
  for (size_t o = 0; o < out; ++o) {
    double s = b ? (*b)[o] : 0.0;
    for (size_t i = 0; i < x.size(); ++i) s += static_cast<double>(wt[o * x.size() + i]) * x[i];
    y[o] = s;
  }
  return y;
}

// One segment of kT ids with its mask; `pool` the pooling position.
Vec reference_segment(const Tensors& t, const std::vector<int32_t>& ids, const std::vector<uint8_t>& mask, size_t pool) {
  const std::string m = "text_model.";
  std::vector<Vec> x(kT, Vec(kD));
  for (int p = 0; p < kT; ++p) {
    for (int d = 0; d < kD; ++d) {
      x[p][d] = w(t, m + "embeddings.token_embedding.weight")[static_cast<size_t>(ids[p]) * kD + d] +
                w(t, m + "embeddings.position_embedding.weight")[static_cast<size_t>(p) * kD + d];
    }
  }
  const int dh = kD / kH;
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = m + "encoder.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(kT), k(kT), v(kT);
    for (int i = 0; i < kT; ++i) {
      const Vec h = layer_norm(x[i], w(t, p + "layer_norm1.weight"), w(t, p + "layer_norm1.bias"));
      q[i] = linear(h, w(t, p + "self_attn.q_proj.weight"), &w(t, p + "self_attn.q_proj.bias"), kD);
      k[i] = linear(h, w(t, p + "self_attn.k_proj.weight"), &w(t, p + "self_attn.k_proj.bias"), kD);
      v[i] = linear(h, w(t, p + "self_attn.v_proj.weight"), &w(t, p + "self_attn.v_proj.bias"), kD);
    }
    std::vector<Vec> attn_out(kT, Vec(kD, 0.0));
    for (int head = 0; head < kH; ++head) {
      for (int i = 0; i < kT; ++i) {
        Vec s(kT, -INFINITY);
        double mx = -INFINITY;
        for (int j = 0; j <= i; ++j) {  // causal
          if (!mask[j]) continue;       // padded keys
          double dot = 0;
          for (int d = 0; d < dh; ++d) dot += q[i][head * dh + d] * k[j][head * dh + d];
          s[j] = dot / std::sqrt(static_cast<double>(dh));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (int j = 0; j < kT; ++j) sum += (s[j] = std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx));
        for (int j = 0; j < kT; ++j) {
          for (int d = 0; d < dh; ++d) attn_out[i][head * dh + d] += s[j] / sum * v[j][head * dh + d];
        }
      }
    }
    for (int i = 0; i < kT; ++i) {
      const Vec o = linear(attn_out[i], w(t, p + "self_attn.out_proj.weight"), &w(t, p + "self_attn.out_proj.bias"), kD);
      for (int d = 0; d < kD; ++d) x[i][d] += o[d];
      Vec f = linear(layer_norm(x[i], w(t, p + "layer_norm2.weight"), w(t, p + "layer_norm2.bias")), w(t, p + "mlp.fc1.weight"),
                     &w(t, p + "mlp.fc1.bias"), kF);
      for (double& z : f) z = z / (1.0 + std::exp(-1.702 * z));  // quick_gelu
      const Vec y = linear(f, w(t, p + "mlp.fc2.weight"), &w(t, p + "mlp.fc2.bias"), kD);
      for (int d = 0; d < kD; ++d) x[i][d] += y[d];
    }
  }
  const Vec last = layer_norm(x[pool], w(t, m + "final_layer_norm.weight"), w(t, m + "final_layer_norm.bias"));
  return linear(last, w(t, "text_projection.weight"), nullptr, kC);
}

// text_embeds for ids (with specials), segments of kT as clip_encoder.py, pooling by `legacy_argmax` or first eos.
std::vector<Vec> reference_text(const Tensors& t, const std::vector<int32_t>& ids, bool legacy_argmax, int32_t eos) {
  const int64_t segments = (static_cast<int64_t>(ids.size()) - 1) / kT + 1;
  std::vector<Vec> out;
  for (int64_t s = 0; s < segments; ++s) {
    std::vector<int32_t> seg(kT, 0);
    std::vector<uint8_t> mask(kT, 0);
    for (int i = 0; i < kT; ++i) {
      const size_t src = static_cast<size_t>(s * kT + i);
      if (src < ids.size()) seg[i] = ids[src], mask[i] = 1;
    }
    size_t pool = 0;
    if (legacy_argmax) {
      pool = static_cast<size_t>(std::max_element(seg.begin(), seg.end()) - seg.begin());
    } else {
      const auto it = std::find(seg.begin(), seg.end(), eos);
      pool = it == seg.end() ? 0 : static_cast<size_t>(it - seg.begin());
    }
    out.push_back(reference_segment(t, seg, mask, pool));
  }
  return out;
}

// Largest |ours - reference| over all values, relative to the largest |reference|.
double relative_error(const Embeddings& ours, const std::vector<Vec>& ref) {
  double worst = 0, scale = 0;
  for (size_t r = 0; r < ref.size(); ++r) {
    for (size_t c = 0; c < ref[r].size(); ++c) {
      scale = std::max(scale, std::abs(ref[r][c]));
      worst = std::max(worst, std::abs(static_cast<double>(ours.data[r * ref[r].size() + c]) - ref[r][c]));
    }
  }
  return worst / scale;
}

// Tolerance: float32 ggml (matmul accumulation order depends on the CPU's vector width) against float64, two
// blocks of width 32: the observed error is <= 2.8e-7 of the largest value (5 seeds); 2e-5 leaves ~70x
// for other CPUs while an error in any operation (mask, scale, activation, pooling row) is >1e-2.
constexpr double kTolerance = 2e-5;

// Long enough for 3 segments of 16: 1 + 40 + 1 tokens; the middle segment has neither <|startoftext|> nor
// <|endoftext|>, so the legacy argmax and the first-eos rule pool different rows there.
const std::string kText =
    "The dog is at the door, is the dog at the gate? the dog is 42 at the mat! The cat is at the dog; the dog is at "
    "the cat.";

TEST(ClipText, TextEmbedsEqualFloat64Reference) {
  const Tensors t = random_clip(7);
  const auto model = ClipTextModel::load(write_model(t, 2, "clip_text"));
  EXPECT_EQ(model.width(), kD);
  EXPECT_EQ(model.heads(), kH);
  EXPECT_EQ(model.layers(), kLayers);
  EXPECT_EQ(model.context_length(), kT);
  EXPECT_EQ(model.embed_dim(), kC);
  EXPECT_EQ(model.vision_width(), kDv);
  const auto ids = model.tokenizer().encode(kText);
  ASSERT_EQ(ids.front(), 518);
  ASSERT_EQ(ids.back(), 519);
  ASSERT_GT(ids.size(), 2u * kT);  // three segments
  ASSERT_LE(ids.size(), 3u * kT);
  for (int threads : {1, 2}) {
    const Embeddings e = model.text_embeds(kText, threads);
    ASSERT_EQ(e.rows, 3);
    ASSERT_EQ(e.cols, kC);
    EXPECT_LT(relative_error(e, reference_text(t, ids, true, 519)), kTolerance);
  }
  // one segment, and a text that fills exactly one (16 tokens: no second segment)
  EXPECT_LT(relative_error(model.text_embeds("the dog"), reference_text(t, model.tokenizer().encode("the dog"), true, 519)), kTolerance);
  std::vector<int32_t> sixteen(16, 100);
  sixteen.front() = 518, sixteen.back() = 519;
  const Embeddings one = model.encode_ids(sixteen);
  EXPECT_EQ(one.rows, 1);
  EXPECT_LT(relative_error(one, reference_text(t, sixteen, true, 519)), kTolerance);
  // the pooled row matters: a different pooling rule gives a clearly different answer
  EXPECT_GT(relative_error(model.text_embeds(kText), reference_text(t, ids, false, 519)), 1e-2);
}

TEST(ClipText, NonLegacyEosIdPoolsAtTheFirstEos) {
  const Tensors t = random_clip(8);
  const auto model = ClipTextModel::load(write_model(t, 519, "clip_text_eos"));
  const auto ids = model.tokenizer().encode(kText);
  EXPECT_LT(relative_error(model.text_embeds(kText), reference_text(t, ids, false, 519)), kTolerance);
  EXPECT_GT(relative_error(model.text_embeds(kText), reference_text(t, ids, true, 519)), 1e-2);
}

TEST(ClipText, ImageEmbedsAreVisualProjectionOfPostLayerNorm) {
  const Tensors t = random_clip(9);
  const auto model = ClipTextModel::load(write_model(t, 2, "clip_image"));
  ASSERT_TRUE(model.has_image_projection());
  std::mt19937_64 rng(3);
  std::normal_distribution<float> g;
  const int64_t n = 10;
  std::vector<float> features(static_cast<size_t>(n * kDv));
  for (float& v : features) v = 2.0f * g(rng) + 0.5f;
  const Embeddings e = model.image_embeds({features, n, kDv});
  ASSERT_EQ(e.rows, n);
  ASSERT_EQ(e.cols, kC);
  std::vector<Vec> ref;
  for (int64_t i = 0; i < n; ++i) {
    const Vec x(features.begin() + i * kDv, features.begin() + (i + 1) * kDv);
    ref.push_back(linear(layer_norm(x, w(t, "vision_model.post_layernorm.weight"), w(t, "vision_model.post_layernorm.bias")),
                         w(t, "visual_projection.weight"), nullptr, kC));
  }
  EXPECT_LT(relative_error(e, ref), kTolerance);
}

void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(ClipText, ErrorsNameWhatIsWrong) {
  Tensors t = random_clip(10, /*image_side=*/false);
  const fs::path dir = write_model(t, 2, "clip_text_err");
  const auto text_only = ClipTextModel::load(dir);
  EXPECT_FALSE(text_only.has_image_projection());
  std::vector<float> f(static_cast<size_t>(2 * kDv), 1.0f);
  expect_error([&] { text_only.image_embeds({f, 2, kDv}); }, "no visual_projection");
  expect_error([&] { text_only.encode_ids(std::vector<int32_t>{518, 520, 519}); }, "token id 520 is outside the vocabulary of 520");
  const auto full = ClipTextModel::load(write_model(random_clip(11), 2, "clip_text_err2"));
  expect_error([&] { full.image_embeds({f, 3, 16}); }, "do not match the vision width 24");
  // a model without vocab.json / merges.txt still encodes ids, and says what is missing for text
  fs::remove(dir / "vocab.json");
  const auto no_tokenizer = ClipTextModel::load(dir);
  EXPECT_FALSE(no_tokenizer.has_tokenizer());
  expect_error([&] { no_tokenizer.text_embeds("a dog"); }, "no tokenizer (vocab.json + merges.txt beside the model)");
  // missing and misshapen tensors are named
  Tensors broken = random_clip(12);
  broken.erase("text_model.encoder.layers.1.mlp.fc2.bias");
  write_safetensors(dir / "model.safetensors", broken);
  expect_error([&] { ClipTextModel::load(dir); }, "missing tensor text_model.encoder.layers.1.mlp.fc2.bias");
  broken = random_clip(12);
  broken["text_projection.weight"].shape = {kD, kC};
  write_safetensors(dir / "model.safetensors", broken);
  expect_error([&] { ClipTextModel::load(dir); }, "text_projection.weight has shape [32, 16], expected [C, 32]");
  broken = random_clip(12);
  broken.erase("text_model.embeddings.token_embedding.weight");
  write_safetensors(dir / "model.safetensors", broken);
  expect_error([&] { ClipTextModel::load(dir); }, "no tensor *text_model.embeddings.token_embedding.weight");
}

}  // namespace
}  // namespace vtprune::text
