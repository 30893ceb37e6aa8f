// Writes a GGUF file of generated (random or constant) tensors one tensor at a time, so that a multi-GB test
// model never sits in memory: the header first (gguf_write_to_file with only_meta), then each tensor's data
// generated, encoded (F32 / F16 / BF16 / any ggml quantisation) and appended block by block.
//
// Header-only so that the test-model writers of vtprune_llm (random LLMs) and vtprune_vision (random mmproj
// files) share it without either library linking the other; it needs only ggml + gguf.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "vtprune/reduce.h"  // vtprune::Error

namespace vtprune::io {

// One tensor of a generated file. Values are `mean` plus uniform noise of standard deviation `stddev`
// (stddev 0: every value is `mean`).
struct GeneratedTensor {
  std::string name;
  ggml_type type = GGML_TYPE_F32;
  std::array<int64_t, 4> ne{1, 1, 1, 1};  // ggml order: ne[0] is the contiguous (input) dimension
  float mean = 0.0f;
  float stddev = 0.0f;
  // Row ranges [first, last) over ne[1] (ne[2] = ne[3] = 1) written as zeros: e.g. embedding rows of token ids no
  // tokenizer produces, so that a random model with tied embeddings never samples them.
  std::vector<std::pair<int64_t, int64_t>> zero_rows;
};

namespace gguf_stream_detail {

// splitmix64: fast, seedable per tensor, so tensors can be generated block by block deterministically.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float symmetric() { return static_cast<float>(next() >> 40) * (2.0f / 16777216.0f) - 1.0f; }
};

struct FileCloser {
  void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};

inline void write_bytes(std::FILE* file, const void* data, size_t size, const std::string& path,
                        const std::string& what) {
  if (size > 0 && std::fwrite(data, 1, size, file) != size) {
    throw Error("write failed for " + path + " (" + what + "): disk full?");
  }
}

}  // namespace gguf_stream_detail

// Adds `tensors` to `gguf` (whose metadata the caller has set) and writes the file. Tensor i draws from
// splitmix64 seeded with (seed, i): the same seed gives the same bytes. header_only: stop after the header
// (metadata + tensor table): gguf_init_from_file(no_alloc) reads it, no model loader can load it; for
// checking the layout of a multi-GB shape without writing its data. Throws Error naming `path`.
inline void write_generated_gguf(gguf_context* gguf, const std::vector<GeneratedTensor>& tensors,
                                 const std::filesystem::path& path, uint64_t seed, bool header_only) {
  using namespace gguf_stream_detail;
  const std::string where = path.string();
  // Tensor descriptors only (no_alloc): the data is generated and appended one tensor at a time.
  ggml_init_params meta_params{ggml_tensor_overhead() * (tensors.size() + 1), nullptr, /*no_alloc=*/true};
  std::unique_ptr<ggml_context, decltype(&ggml_free)> meta(ggml_init(meta_params), &ggml_free);
  if (!meta) throw Error("ggml_init failed while preparing " + where);
  for (const GeneratedTensor& spec : tensors) {
    int n_dims = 4;
    while (n_dims > 1 && spec.ne[n_dims - 1] == 1) --n_dims;
    if (spec.ne[0] % ggml_blck_size(spec.type) != 0) {
      throw Error(where + ": tensor " + spec.name + " has rows of " + std::to_string(spec.ne[0]) +
                  " values, not a multiple of " + std::to_string(ggml_blck_size(spec.type)) + " as " +
                  ggml_type_name(spec.type) + " needs");
    }
    ggml_tensor* t = ggml_new_tensor(meta.get(), spec.type, n_dims, spec.ne.data());
    ggml_set_name(t, spec.name.c_str());
    gguf_add_tensor(gguf, t);
  }

  const std::filesystem::path parent = path.parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  if (!gguf_write_to_file(gguf, path.c_str(), /*only_meta=*/true)) throw Error("cannot write GGUF header to " + where);
  if (header_only) return;
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path.c_str(), "ab"));
  if (!file) throw Error("cannot reopen " + where + " to append tensor data");

  const size_t alignment = gguf_get_alignment(gguf);
  const std::vector<char> zeros(alignment, 0);
  std::vector<float> values;
  std::vector<char> encoded;
  for (size_t index = 0; index < tensors.size(); ++index) {
    const GeneratedTensor& spec = tensors[index];
    const int64_t row_len = spec.ne[0];
    const int64_t n_rows = spec.ne[1] * spec.ne[2] * spec.ne[3];
    const float amplitude = spec.stddev * std::sqrt(3.0f);  // uniform[-a, a] has std a / sqrt(3)
    SplitMix64 rng{seed * 0x100000001B3ull + index * 0x9E3779B97F4A7C15ull + 1};
    // About 4M floats per block: bounded memory whatever the shape.
    const int64_t rows_per_block = std::max<int64_t>(1, (int64_t{1} << 22) / row_len);
    size_t written = 0;
    for (int64_t row0 = 0; row0 < n_rows; row0 += rows_per_block) {
      const int64_t rows = std::min(rows_per_block, n_rows - row0);
      const size_t n = static_cast<size_t>(rows * row_len);
      values.resize(n);
      if (spec.stddev == 0.0f) {
        std::fill(values.begin(), values.end(), spec.mean);
      } else {
        for (float& x : values) x = spec.mean + amplitude * rng.symmetric();
      }
      for (const auto& [first, last] : spec.zero_rows) {
        const int64_t lo = std::max(first, row0), hi = std::min(last, row0 + rows);
        if (lo < hi) std::fill(values.begin() + (lo - row0) * row_len, values.begin() + (hi - row0) * row_len, 0.0f);
      }
      const size_t bytes = ggml_row_size(spec.type, row_len) * static_cast<size_t>(rows);
      if (spec.type == GGML_TYPE_F32) {
        write_bytes(file.get(), values.data(), bytes, where, spec.name);
      } else {
        encoded.resize(bytes);
        if (spec.type == GGML_TYPE_F16) {
          ggml_fp32_to_fp16_row(values.data(), reinterpret_cast<ggml_fp16_t*>(encoded.data()), static_cast<int64_t>(n));
        } else if (spec.type == GGML_TYPE_BF16) {
          ggml_fp32_to_bf16_row(values.data(), reinterpret_cast<ggml_bf16_t*>(encoded.data()), static_cast<int64_t>(n));
        } else {
          ggml_quantize_chunk(spec.type, values.data(), encoded.data(), 0, rows, row_len, nullptr);
        }
        write_bytes(file.get(), encoded.data(), bytes, where, spec.name);
      }
      written += bytes;
    }
    const size_t padded = (written + alignment - 1) / alignment * alignment;
    write_bytes(file.get(), zeros.data(), padded - written, where, spec.name + " padding");
  }
  if (std::fflush(file.get()) != 0) throw Error("write failed for " + where);
}

}  // namespace vtprune::io
