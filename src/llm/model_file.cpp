// inspect_llm_file / TokenEmbeddingTable: GGUF header checks and token_embd rows, read without libllama.
#include "model_file.h"

#include <cstring>
#include <fstream>
#include <string>

#include "llama_handles.h"
#include "vtprune/reduce.h"  // Error

namespace vtprune::llm::detail {

namespace {

constexpr int64_t kMaxLayers = 512;  // LLAMA_MAX_LAYERS (src/llama-hparams.h): libllama asserts beyond it

bool is_integer_key(gguf_type type) {
  switch (type) {
    case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
    case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64:
      return true;
    default:
      return false;
  }
}

int64_t integer_value(const gguf_context* g, int64_t id) {
  switch (gguf_get_kv_type(g, id)) {
    case GGUF_TYPE_UINT8: return gguf_get_val_u8(g, id);
    case GGUF_TYPE_INT8: return gguf_get_val_i8(g, id);
    case GGUF_TYPE_UINT16: return gguf_get_val_u16(g, id);
    case GGUF_TYPE_INT16: return gguf_get_val_i16(g, id);
    case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
    case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
    case GGUF_TYPE_UINT64: {
      const uint64_t v = gguf_get_val_u64(g, id);
      return v > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(v);
    }
    case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
    default: return 0;
  }
}

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
  ggml_context* meta_raw = nullptr;
  gguf_init_params params{/*no_alloc=*/true, &meta_raw};
  GgufContextPtr gguf(gguf_init_from_file(path.c_str(), params));
  GgmlContextPtr meta(meta_raw);
  LlmFileFacts facts;
  if (!gguf || !meta) return facts;  // libllama reports an unreadable header as a load failure

  const int64_t arch_id = gguf_find_key(gguf.get(), "general.architecture");
  if (arch_id >= 0 && gguf_get_kv_type(gguf.get(), arch_id) == GGUF_TYPE_STRING) {
    facts.architecture = gguf_get_val_str(gguf.get(), arch_id);
  }
  if (!facts.architecture.empty()) {
    const std::string key = facts.architecture + ".block_count";
    const int64_t id = gguf_find_key(gguf.get(), key.c_str());
    if (id >= 0 && is_integer_key(gguf_get_kv_type(gguf.get(), id))) {
      const int64_t block_count = integer_value(gguf.get(), id);
      if (block_count < 1 || block_count > kMaxLayers) {
        throw Error("LLM model " + path + ": " + key + " is " + std::to_string(block_count) +
                    ", outside 1.." + std::to_string(kMaxLayers) + " (corrupt or unsupported file)");
      }
    }
  }

  const int64_t n_tensors = gguf_get_n_tensors(gguf.get());
  for (int64_t i = 0; i < n_tensors; ++i) {
    const ggml_type type = gguf_get_tensor_type(gguf.get(), i);
    if (is_unusable_weight_type(type)) {
      throw Error("LLM model " + path + ": tensor " + gguf_get_tensor_name(gguf.get(), i) + " has type " +
                  ggml_type_name(type) + ", which no weight kernel takes (expected a float or quantised type)");
    }
  }

  const char* embd_name = "token_embd.weight";
  const int64_t embd_id = gguf_find_tensor(gguf.get(), embd_name);
  const ggml_tensor* embd = ggml_get_tensor(meta.get(), embd_name);
  if (embd_id >= 0 && embd != nullptr && ggml_n_dims(embd) == 2) {
    TokenEmbeddingTable& table = facts.token_embeddings;
    table.path = path;
    table.type = embd->type;
    table.n_embd = embd->ne[0];
    table.n_vocab = embd->ne[1];
    table.row_bytes = ggml_row_size(embd->type, embd->ne[0]);
    table.file_offset = gguf_get_data_offset(gguf.get()) + gguf_get_tensor_offset(gguf.get(), embd_id);
    facts.has_token_embeddings =
        embd->type == GGML_TYPE_F32 || ggml_get_type_traits(embd->type)->to_float != nullptr;
  }
  return facts;
}

}  // namespace vtprune::llm::detail
