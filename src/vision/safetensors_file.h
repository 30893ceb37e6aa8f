// safetensors files (8-byte little-endian header length, JSON header, raw data): the validated reader every
// safetensors loader uses (timm and CLIP vision towers, the CLIP text tower in src/text).
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model_impl.h"

namespace vtprune::vision {

struct TensorEntry {
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // relative to the data section
  uint64_t end = 0;
};

inline size_t dtype_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F16" || dtype == "BF16") return 2;
  return 0;
}

inline ggml_type dtype_to_ggml(const std::string& dtype) {
  if (dtype == "F32") return GGML_TYPE_F32;
  if (dtype == "F16") return GGML_TYPE_F16;
  return GGML_TYPE_BF16;
}

// A safetensors file: validated header, tensors read on demand.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code ec;
    const uint64_t file_size = std::filesystem::file_size(path_, ec);
    if (ec) throw Error("safetensors " + path_.string() + ": cannot read (" + ec.message() + ")");
    in_.open(path_, std::ios::binary);
    if (!in_) throw Error("safetensors " + path_.string() + ": cannot open");
    uint8_t len_bytes[8] = {};
    if (file_size < 8 || !in_.read(reinterpret_cast<char*>(len_bytes), 8)) {
      throw Error("safetensors " + path_.string() + ": file too short for a header");
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len == 0 || header_len > (uint64_t{100} << 20) || header_len > file_size - 8) {
      throw Error("safetensors " + path_.string() + ": header length " + std::to_string(header_len) +
                  " is impossible for a file of " + std::to_string(file_size) + " bytes");
    }
    std::string header(header_len, '\0');
    if (!in_.read(header.data(), static_cast<std::streamsize>(header_len))) {
      throw Error("safetensors " + path_.string() + ": truncated header");
    }
    data_start_ = 8 + header_len;
    const uint64_t data_size = file_size - data_start_;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(header);
    } catch (const std::exception& e) {
      throw Error("safetensors " + path_.string() + ": header is not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object()) throw Error("safetensors " + path_.string() + ": header is not a JSON object");
    for (const auto& [name, v] : j.items()) {
      if (name == "__metadata__") continue;
      const std::string where = "safetensors " + path_.string() + ": tensor " + name;
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
        throw Error(where + " lacks dtype / shape / data_offsets");
      }
      TensorEntry e;
      // Integers only: nlohmann converts a float such as 2e88 to an integer type with undefined behaviour.
      const auto all_integers = [](const nlohmann::json& a) {
        return a.is_array() && std::all_of(a.begin(), a.end(), [](const nlohmann::json& x) { return x.is_number_integer(); });
      };
      if (!all_integers(v.at("shape")) || !all_integers(v.at("data_offsets"))) throw Error(where + " has a malformed entry");
      try {
        e.dtype = v.at("dtype").get<std::string>();
        e.shape = v.at("shape").get<std::vector<int64_t>>();
        const auto offsets = v.at("data_offsets").get<std::vector<uint64_t>>();
        if (offsets.size() != 2) throw Error("");
        e.begin = offsets[0];
        e.end = offsets[1];
      } catch (const std::exception&) {
        throw Error(where + " has a malformed entry");
      }
      uint64_t count = 1;
      for (int64_t d : e.shape) {
        // Overflow-checked: a wrapped product could match small data_offsets.
        if (d < 0 || d > (int64_t{1} << 40) || __builtin_mul_overflow(count, static_cast<uint64_t>(d), &count)) {
          throw Error(where + " has an invalid shape " + shape_string(e.shape));
        }
      }
      const size_t elem = dtype_size(e.dtype);
      if (elem != 0 && (e.end < e.begin || e.end - e.begin != count * elem)) {
        throw Error(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                    ") do not match shape " + shape_string(e.shape) + " of " + e.dtype);
      }
      if (e.end > data_size) {
        throw Error(where + ": data ends at " + std::to_string(e.end) + " beyond the " + std::to_string(data_size) +
                    "-byte data section (truncated file?)");
      }
      entries_.emplace(name, std::move(e));
    }
  }

  const std::filesystem::path& path() const { return path_; }
  bool contains(const std::string& name) const { return entries_.count(name) != 0; }
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }

  const std::vector<int64_t>& shape_of(const std::string& name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) throw Error("safetensors " + path_.string() + ": missing tensor " + name);
    return it->second.shape;
  }

  // The entry, checked against the expected shape and a float dtype.
  const TensorEntry& require(const std::string& name, const std::vector<int64_t>& shape) const {
    const auto it = entries_.find(name);
    if (it == entries_.end()) throw Error("safetensors " + path_.string() + ": missing tensor " + name);
    const TensorEntry& e = it->second;
    if (dtype_size(e.dtype) == 0) {
      throw Error("safetensors " + path_.string() + ": tensor " + name + " has dtype " + e.dtype +
                  ", expected F32, F16 or BF16");
    }
    if (e.shape != shape) {
      throw Error("safetensors " + path_.string() + ": tensor " + name + " has shape " + shape_string(e.shape) +
                  ", expected " + shape_string(shape));
    }
    return e;
  }

  void read(const TensorEntry& e, uint64_t offset, void* dst, size_t bytes) {
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(data_start_ + e.begin + offset));
    if (!in_.read(static_cast<char*>(dst), static_cast<std::streamsize>(bytes))) {
      throw Error("safetensors " + path_.string() + ": read failed (truncated file?)");
    }
  }

 private:
  std::filesystem::path path_;
  std::ifstream in_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorEntry> entries_;
};

// Adds tensor `name` (or the element range [first, first + count) of it) to the builder. Vectors and
// embeddings are always stored as F32; matrices keep the file's dtype.
inline ggml_tensor* add_tensor(WeightBuilder& builder, const std::shared_ptr<SafetensorsFile>& file, const std::string& name,
                        const std::vector<int64_t>& file_shape, std::initializer_list<int64_t> ne, bool keep_dtype,
                        const std::string& ggml_name, uint64_t first_element = 0) {
  const TensorEntry& e = file->require(name, file_shape);
  const ggml_type src = dtype_to_ggml(e.dtype);
  const ggml_type dst_type = keep_dtype ? src : GGML_TYPE_F32;
  const size_t elem = dtype_size(e.dtype);
  return builder.add(ggml_name, dst_type, ne, [file, e, src, dst_type, elem, first_element](void* dst, size_t bytes) {
    const size_t count = bytes / ggml_type_size(dst_type);
    if (src == dst_type) {
      file->read(e, first_element * elem, dst, bytes);
    } else {
      std::vector<uint8_t> raw(count * elem);
      file->read(e, first_element * elem, raw.data(), raw.size());
      convert_to_f32(src, raw.data(), static_cast<float*>(dst), count);
    }
  });
}

}  // namespace vtprune::vision
