// A random CLIP checkpoint in Hugging Face's layout (see text.h: write_random_clip).
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "vtprune/text.h"

namespace vtprune::text {
namespace {

namespace fs = std::filesystem;

void write_f32_safetensors(const fs::path& path, const ClipTensors& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = t.data.size() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  const std::string h = header.dump();
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xFF));
  out << h;
  for (const auto& [name, t] : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * 4));
  if (!out) throw Error("cannot write " + path.string());
}

std::string utf8_2(int cp) {  // code points below U+0800 (all bytes_to_unicode needs)
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

}  // namespace

void write_random_clip_tokenizer(const fs::path& dir) {
  // GPT-2's bytes_to_unicode order: printable bytes first, the others as U+0100 + n
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  std::vector<std::string> chars;
  for (int b : bs) chars.push_back(utf8_2(b));
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) chars.push_back(utf8_2(next++));
  }
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (const auto& c : chars) vocab[c] = id++;
  for (const auto& c : chars) vocab[c + "</w>"] = id++;
  const std::vector<std::pair<std::string, std::string>> merges = {{"t", "h"}, {"th", "e</w>"}, {"o", "g</w>"}, {"d", "og</w>"},
                                                                   {"i", "s</w>"}, {"a", "t</w>"}};
  std::ofstream m(dir / "merges.txt");
  m << "#version: 0.2\n";
  for (const auto& [a, b] : merges) {
    m << a << " " << b << "\n";
    vocab[a + b] = id++;
  }
  vocab["<|startoftext|>"] = id++;
  vocab["<|endoftext|>"] = id++;
  std::ofstream(dir / "vocab.json") << vocab.dump();
}

ClipTensors random_clip_tensors(const RandomClipShape& s, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g;
  ClipTensors t;
  auto put = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    ClipTensor x{shape, std::vector<float>(static_cast<size_t>(n))};
    for (float& v : x.data) v = offset + scale * g(rng);
    t[name] = std::move(x);
  };
  const int64_t d = s.width, f = s.ffn;
  put("text_model.embeddings.token_embedding.weight", {kRandomClipVocab, d}, 1.0f);
  put("text_model.embeddings.position_embedding.weight", {s.context, d}, 0.5f);
  for (int l = 0; l < s.layers; ++l) {
    const std::string p = "text_model.encoder.layers." + std::to_string(l) + ".";
    put(p + "layer_norm1.weight", {d}, 0.1f, 1.0f);
    put(p + "layer_norm1.bias", {d}, 0.1f);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      put(p + "self_attn." + proj + ".weight", {d, d}, 0.25f);
      put(p + "self_attn." + proj + ".bias", {d}, 0.1f);
    }
    put(p + "layer_norm2.weight", {d}, 0.1f, 1.0f);
    put(p + "layer_norm2.bias", {d}, 0.1f);
    put(p + "mlp.fc1.weight", {f, d}, 0.25f);
    put(p + "mlp.fc1.bias", {f}, 0.1f);
    put(p + "mlp.fc2.weight", {d, f}, 0.15f);
    put(p + "mlp.fc2.bias", {d}, 0.1f);
  }
  put("text_model.final_layer_norm.weight", {d}, 0.1f, 1.0f);
  put("text_model.final_layer_norm.bias", {d}, 0.1f);
  put("text_projection.weight", {s.embed, d}, 0.2f);
  if (s.vision_width > 0) {
    put("vision_model.post_layernorm.weight", {s.vision_width}, 0.1f, 1.0f);
    put("vision_model.post_layernorm.bias", {s.vision_width}, 0.1f);
    put("visual_projection.weight", {s.embed, s.vision_width}, 0.2f);
  }
  return t;
}

void write_clip_checkpoint(const fs::path& dir, const ClipTensors& tensors, const RandomClipShape& s) {
  fs::create_directories(dir);
  write_f32_safetensors(dir / "model.safetensors", tensors);
  write_random_clip_tokenizer(dir);
  const nlohmann::json config = {
      {"text_config", {{"num_attention_heads", s.heads}, {"layer_norm_eps", 1e-5}, {"hidden_act", "quick_gelu"}, {"eos_token_id", s.eos_token_id}}},
      {"vision_config", {{"layer_norm_eps", 1e-5}}}};
  std::ofstream(dir / "config.json") << config.dump();
}

}  // namespace vtprune::text
