// A GGUF file's header (metadata + tensor table, no tensor data), read with ggml's own parser and checked
// before libllama or libmtmd sees the file: both abort the process (GGML_ASSERT) on some malformed files where
// vtprune must report one clear error instead. Every getter throws Error naming the file and the key, tensor or
// shape involved.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/reduce.h"  // vtprune::Error

struct gguf_context;

namespace vtprune::io {

struct GgufTensorInfo {
  std::string name;
  int type = 0;                // ggml_type
  std::vector<int64_t> ne;     // ggml order, trailing 1s removed
  uint64_t offset = 0;         // of the data in the file
  uint64_t bytes = 0;
};

class GgufFile {
 public:
  // `kind` names the file in messages ("mmproj", "LLM"). Throws Error when the file is missing, is not GGUF,
  // or a tensor's data lies beyond the end of the file (the parser does not check that without the data).
  GgufFile(const std::filesystem::path& path, std::string kind);
  ~GgufFile();
  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;

  const std::filesystem::path& path() const { return path_; }
  std::string where() const { return kind_ + " " + path_.string(); }

  bool has(std::string_view key) const;
  std::string str(std::string_view key) const;
  std::optional<std::string> find_str(std::string_view key) const;
  uint32_t u32(std::string_view key) const;  // UINT32, or a non-negative INT32
  std::optional<uint32_t> find_u32(std::string_view key) const;
  // Any integer scalar type (u8 .. i64; u64 above INT64_MAX saturates); nullopt when absent.
  std::optional<int64_t> find_int(std::string_view key) const;
  // A size key checked to lie in 1..max before any arithmetic uses it.
  int size(std::string_view key, int64_t max) const;
  float f32(std::string_view key) const;
  bool boolean(std::string_view key, bool fallback) const;
  std::vector<int64_t> ints(std::string_view key) const;  // an array of integers (empty when absent)
  std::vector<float> floats(std::string_view key) const;  // an array of F32 (empty when absent)
  int64_t tensor_count() const { return static_cast<int64_t>(tensors_.size()); }

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The tensor, checked to have exactly the ggml shape `ne` (trailing 1s ignored).
  const GgufTensorInfo& tensor(std::string_view name, std::vector<int64_t> ne) const;

  gguf_context* raw() const { return gguf_.get(); }

 private:
  struct Free {
    void operator()(gguf_context* g) const noexcept;
  };
  std::filesystem::path path_;
  std::string kind_;
  std::unique_ptr<gguf_context, Free> gguf_;
  std::vector<GgufTensorInfo> tensors_;
  int64_t key_id(std::string_view key, bool required) const;
};

}  // namespace vtprune::io
