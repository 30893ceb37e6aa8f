#include "model_files.h"

#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace vtprune::hardening {

std::vector<uint8_t> random_f32_bytes(int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.3f);
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * sizeof(float));
  for (int64_t i = 0; i < count; ++i) {
    const float v = normal(rng);
    std::memcpy(&bytes[static_cast<size_t>(i) * sizeof(float)], &v, sizeof(float));
  }
  return bytes;
}

std::vector<SafetensorsEntry> tiny_timm_entries(const TinyTimmShape& s, uint32_t seed) {
  const int64_t D = s.dim, F = s.ff, P = s.patch, T = int64_t{s.grid} * s.grid + 1, C = s.classes;
  std::vector<SafetensorsEntry> entries;
  const auto add = [&](std::string name, std::vector<int64_t> shape) {
    int64_t count = 1;
    for (int64_t d : shape) count *= d;
    entries.push_back({std::move(name), "F32", std::move(shape), random_f32_bytes(count, seed++)});
  };
  add("patch_embed.proj.weight", {D, 3, P, P});
  add("patch_embed.proj.bias", {D});
  add("cls_token", {1, 1, D});
  add("pos_embed", {1, T, D});
  for (int il = 0; il < s.depth; ++il) {
    const std::string p = "blocks." + std::to_string(il) + ".";
    add(p + "norm1.weight", {D});
    add(p + "norm1.bias", {D});
    add(p + "attn.qkv.weight", {3 * D, D});
    add(p + "attn.qkv.bias", {3 * D});
    add(p + "attn.proj.weight", {D, D});
    add(p + "attn.proj.bias", {D});
    add(p + "norm2.weight", {D});
    add(p + "norm2.bias", {D});
    add(p + "mlp.fc1.weight", {F, D});
    add(p + "mlp.fc1.bias", {F});
    add(p + "mlp.fc2.weight", {D, F});
    add(p + "mlp.fc2.bias", {D});
  }
  add("norm.weight", {D});
  add("norm.bias", {D});
  if (C > 0) {
    add("head.weight", {C, D});
    add("head.bias", {C});
  }
  return entries;
}

std::string safetensors_header(const std::vector<SafetensorsEntry>& entries) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const auto& e : entries) {
    header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  return header.dump();
}

void write_safetensors(const std::filesystem::path& file, const std::vector<SafetensorsEntry>& entries,
                       const std::string& header) {
  const std::string h = header.empty() ? safetensors_header(entries) : header;
  std::vector<uint8_t> bytes(8);
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  bytes.insert(bytes.end(), h.begin(), h.end());
  for (const auto& e : entries) bytes.insert(bytes.end(), e.bytes.begin(), e.bytes.end());
  write_bytes(file, bytes);
}

void write_timm_config(const std::filesystem::path& dir, int heads) {
  const nlohmann::json config = {{"model_args", {{"num_heads", heads}}},
                                 {"vision_config", {{"num_attention_heads", heads}}}};
  std::ofstream(dir / "config.json") << config.dump();
}

std::vector<uint8_t> read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + file.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::filesystem::path& file, const std::vector<uint8_t>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

}  // namespace vtprune::hardening
