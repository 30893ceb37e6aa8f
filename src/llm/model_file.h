// What src/llm reads from an LLM GGUF itself, outside libllama: a pre-check of the defects libllama
// asserts on (aborting the process) instead of reporting, and the token-embedding table, so that a prompt
// mixing text and image rows can be decoded as one batch of embeddings. Internal to src/llm.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "ggml.h"

namespace vtprune::llm::detail {

// Where token_embd.weight lies in the file and how to read a row of it.
struct TokenEmbeddingTable {
  std::string path;
  ggml_type type = GGML_TYPE_F32;
  int64_t n_embd = 0;
  int64_t n_vocab = 0;
  uint64_t file_offset = 0;  // of row 0
  size_t row_bytes = 0;

  // Rows for `tokens`, dequantised to F32 exactly as ggml_get_rows does, into out[tokens.size() x n_embd].
  // Throws Error for a token outside the table or a short read.
  void read_rows(std::span<const int32_t> tokens, float* out) const;
};

struct LlmFileFacts {
  std::string architecture;          // general.architecture
  bool has_token_embeddings = false; // token_embd.weight exists and its type can be dequantised
  TokenEmbeddingTable token_embeddings;
};

// Reads the GGUF header of an LLM file (no tensor data) and throws Error, naming the file and the key or
// tensor, for what libllama would abort on rather than report: {arch}.block_count outside 1..512
// (LLAMA_MAX_LAYERS), and tensors of integer or F64 type (no matmul kernel takes them as weights).
// An unreadable header is left to libllama, which reports it as a load failure.
LlmFileFacts inspect_llm_file(const std::string& path);

}  // namespace vtprune::llm::detail
