// inspect_llm_file / TokenEmbeddingTable: GGUF header checks and token_embd rows, read without libllama.
#include "model_file.h"

#include <cstring>
#include <fstream>
#include <string>

#include <optional>

#include "llama_handles.h"
#include "vtprune/gguf_file.h"
#include "vtprune/reduce.h"  // Error

namespace vtprune::llm::detail {

namespace {

constexpr int64_t kMaxLayers = 512;  // LLAMA_MAX_LAYERS (src/llama-hparams.h): libllama asserts beyond it

// Weight types no ggml matmul / get_rows kernel accepts: loading succeeds, the first decode aborts.
bool is_unusable_weight_type(ggml_type type) {
  return type == GGML_TYPE_I8 || type == GGML_TYPE_I16 || type == GGML_TYPE_I32 || type == GGML_TYPE_I64 ||
         type == GGML_TYPE_F64;
}

}  // namespace

void TokenEmbeddingTable::read_rows(std::span<const int32_t> tokens, float* out) const {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + " to read token_embd.weight");
  const auto* traits = ggml_get_type_traits(type);
  std::vector<char> row(row_bytes);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || t >= n_vocab) {
      throw Error("token id " + std::to_string(t) + " is outside token_embd.weight of " + path + " (" +
                  std::to_string(n_vocab) + " rows)");
    }
    in.seekg(static_cast<std::streamoff>(file_offset + row_bytes * static_cast<uint64_t>(t)));
    in.read(row.data(), static_cast<std::streamsize>(row_bytes));
    if (!in) throw Error("short read of token_embd.weight row " + std::to_string(t) + " in " + path);
    float* dst = out + i * static_cast<size_t>(n_embd);
    if (type == GGML_TYPE_F32) {
      std::memcpy(dst, row.data(), row_bytes);
    } else {
      traits->to_float(row.data(), dst, n_embd);
    }
  }
}

LlmFileFacts inspect_llm_file(const std::string& path) {
  std::optional<io::GgufFile> file;
  try {
    file.emplace(path, "LLM model");
  } catch (const Error&) {
    return {};  // libllama reports an unreadable header as a load failure, with its own words
  }
  LlmFileFacts facts;
  facts.architecture = file->find_str("general.architecture").value_or("");
  if (!facts.architecture.empty()) {
    const std::string key = facts.architecture + ".block_count";
    if (const std::optional<int64_t> block_count = file->find_int(key)) {
      if (*block_count < 1 || *block_count > kMaxLayers) {
        throw Error("LLM model " + path + ": " + key + " is " + std::to_string(*block_count) + ", outside 1.." +
                    std::to_string(kMaxLayers) + " (corrupt or unsupported file)");
      }
    }
  }
  for (const io::GgufTensorInfo& t : file->tensors()) {
    const auto type = static_cast<ggml_type>(t.type);
    if (is_unusable_weight_type(type)) {
      throw Error("LLM model " + path + ": tensor " + t.name + " has type " + ggml_type_name(type) +
                  ", which no weight kernel takes (expected a float or quantised type)");
    }
  }
  const io::GgufTensorInfo* embd = file->find_tensor("token_embd.weight");
  if (embd != nullptr && embd->ne.size() == 2) {
    TokenEmbeddingTable& table = facts.token_embeddings;
    table.path = path;
    table.type = static_cast<ggml_type>(embd->type);
    table.n_embd = embd->ne[0];
    table.n_vocab = embd->ne[1];
    table.row_bytes = ggml_row_size(table.type, embd->ne[0]);
    table.file_offset = embd->offset;
    facts.has_token_embeddings = table.type == GGML_TYPE_F32 || ggml_get_type_traits(table.type)->to_float != nullptr;
  }
  return facts;
}

}  // namespace vtprune::llm::detail
