// Small model files for the hardening tests and the fuzzers' seed corpus: a tiny timm ViT as safetensors
// (written entry by entry, so tests can corrupt any part), and helpers to truncate or patch bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace vtprune::hardening {

struct SafetensorsEntry {
  std::string name;
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // raw little-endian data; its size sets data_offsets
};

// A tiny timm ViT: width 8 (2 heads of 4, so config.json must say num_heads 2), `depth` blocks, a
// grid x grid patch grid of patch-pixel patches (image = grid * patch), FFN ff, `classes` classes.
struct TinyTimmShape {
  int dim = 8, heads = 2, depth = 2, grid = 2, patch = 4, ff = 16, classes = 3;
};
std::vector<SafetensorsEntry> tiny_timm_entries(const TinyTimmShape& shape = {}, uint32_t seed = 1);
// F32 bytes for `count` deterministic small values.
std::vector<uint8_t> random_f32_bytes(int64_t count, uint32_t seed);

// The JSON header for `entries`, offsets laid out back to back in entry order.
std::string safetensors_header(const std::vector<SafetensorsEntry>& entries);
// 8-byte length + header + data. `header` overrides the generated one when not empty.
void write_safetensors(const std::filesystem::path& file, const std::vector<SafetensorsEntry>& entries,
                       const std::string& header = "");
// dir/config.json with timm's model_args.num_heads (and CLIP's vision_config.num_attention_heads).
void write_timm_config(const std::filesystem::path& dir, int heads);

std::vector<uint8_t> read_bytes(const std::filesystem::path& file);
void write_bytes(const std::filesystem::path& file, const std::vector<uint8_t>& bytes);

}  // namespace vtprune::hardening
