#include "vtprune/gguf_file.h"

#include "ggml.h"
#include "gguf.h"

namespace vtprune::io {

namespace {

std::string shape_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

std::vector<int64_t> trimmed(std::vector<int64_t> ne) {
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  return ne;
}

}  // namespace

void GgufFile::Free::operator()(gguf_context* g) const noexcept { gguf_free(g); }

GgufFile::GgufFile(const std::filesystem::path& path, std::string kind) : path_(path), kind_(std::move(kind)) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(where() + ": file not found");
  const uintmax_t file_size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(where() + ": cannot read (" + ec.message() + ")");
  gguf_init_params params{};
  params.no_alloc = true;
  params.ctx = nullptr;
  gguf_.reset(gguf_init_from_file(path.c_str(), params));
  if (!gguf_) throw Error(where() + ": not a readable GGUF file (bad magic, version or header)");
  const int64_t n = gguf_get_n_tensors(gguf_.get());
  const uint64_t data = gguf_get_data_offset(gguf_.get());
  tensors_.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    GgufTensorInfo t;
    t.name = gguf_get_tensor_name(gguf_.get(), i);
    t.type = gguf_get_tensor_type(gguf_.get(), i);
    const int64_t* ne = gguf_get_tensor_ne(gguf_.get(), i);
    t.ne = trimmed(std::vector<int64_t>(ne, ne + GGML_MAX_DIMS));
    t.offset = data + gguf_get_tensor_offset(gguf_.get(), i);
    t.bytes = gguf_get_tensor_size(gguf_.get(), i);
    if (t.offset > file_size || t.bytes > file_size - t.offset) {
      throw Error(where() + ": tensor " + t.name + " (" + std::to_string(t.bytes) + " bytes at " +
                  std::to_string(t.offset) + ") lies beyond the end of the " + std::to_string(file_size) +
                  "-byte file (truncated?)");
    }
    tensors_.push_back(std::move(t));
  }
}

GgufFile::~GgufFile() = default;
GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;

int64_t GgufFile::key_id(std::string_view key, bool required) const {
  const int64_t id = gguf_find_key(gguf_.get(), std::string(key).c_str());
  if (id < 0 && required) throw Error(where() + ": missing metadata key " + std::string(key));
  return id;
}

bool GgufFile::has(std::string_view key) const { return key_id(key, false) >= 0; }

std::optional<std::string> GgufFile::find_str(std::string_view key) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return std::nullopt;
  if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_STRING) {
    throw Error(where() + ": metadata key " + std::string(key) + " is not a string");
  }
  return std::string(gguf_get_val_str(gguf_.get(), id));
}

std::string GgufFile::str(std::string_view key) const {
  key_id(key, true);
  return *find_str(key);
}

std::optional<uint32_t> GgufFile::find_u32(std::string_view key) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return std::nullopt;
  const auto type = gguf_get_kv_type(gguf_.get(), id);
  if (type == GGUF_TYPE_UINT32) return gguf_get_val_u32(gguf_.get(), id);
  if (type == GGUF_TYPE_INT32 && gguf_get_val_i32(gguf_.get(), id) >= 0) {
    return static_cast<uint32_t>(gguf_get_val_i32(gguf_.get(), id));
  }
  throw Error(where() + ": metadata key " + std::string(key) + " has type " + gguf_type_name(type) +
              ", expected a non-negative u32");
}

std::optional<int64_t> GgufFile::find_int(std::string_view key) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return std::nullopt;
  const gguf_context* g = gguf_.get();
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
    default:
      throw Error(where() + ": metadata key " + std::string(key) + " has type " + gguf_type_name(gguf_get_kv_type(g, id)) +
                  ", expected an integer");
  }
}

uint32_t GgufFile::u32(std::string_view key) const {
  key_id(key, true);
  return *find_u32(key);
}

int GgufFile::size(std::string_view key, int64_t max) const {
  const uint32_t v = u32(key);
  if (v < 1 || v > max) {
    throw Error(where() + ": metadata " + std::string(key) + " = " + std::to_string(v) + " is outside 1.." +
                std::to_string(max));
  }
  return static_cast<int>(v);
}

float GgufFile::f32(std::string_view key) const {
  const int64_t id = key_id(key, true);
  if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32) {
    throw Error(where() + ": metadata key " + std::string(key) + " is not f32");
  }
  return gguf_get_val_f32(gguf_.get(), id);
}

bool GgufFile::boolean(std::string_view key, bool fallback) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return fallback;
  if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_BOOL) {
    throw Error(where() + ": metadata key " + std::string(key) + " is not a bool");
  }
  return gguf_get_val_bool(gguf_.get(), id);
}

std::vector<int64_t> GgufFile::ints(std::string_view key) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return {};
  if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_ARRAY) {
    throw Error(where() + ": metadata key " + std::string(key) + " is not an array");
  }
  const auto type = gguf_get_arr_type(gguf_.get(), id);
  const size_t n = gguf_get_arr_n(gguf_.get(), id);
  const void* data = gguf_get_arr_data(gguf_.get(), id);
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    switch (type) {
      case GGUF_TYPE_INT32: out[i] = static_cast<const int32_t*>(data)[i]; break;
      case GGUF_TYPE_UINT32: out[i] = static_cast<const uint32_t*>(data)[i]; break;
      case GGUF_TYPE_INT64: out[i] = static_cast<const int64_t*>(data)[i]; break;
      default:
        throw Error(where() + ": metadata key " + std::string(key) + " is an array of " + gguf_type_name(type) +
                    ", expected integers");
    }
  }
  return out;
}

std::vector<float> GgufFile::floats(std::string_view key) const {
  const int64_t id = key_id(key, false);
  if (id < 0) return {};
  if (gguf_get_kv_type(gguf_.get(), id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(gguf_.get(), id) != GGUF_TYPE_FLOAT32) {
    throw Error(where() + ": metadata key " + std::string(key) + " is not an array of f32");
  }
  const auto* data = static_cast<const float*>(gguf_get_arr_data(gguf_.get(), id));
  return std::vector<float>(data, data + gguf_get_arr_n(gguf_.get(), id));
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const GgufTensorInfo& GgufFile::tensor(std::string_view name, std::vector<int64_t> ne) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) throw Error(where() + ": missing tensor " + std::string(name));
  if (t->ne != trimmed(ne)) {
    throw Error(where() + ": tensor " + std::string(name) + " has shape " + shape_text(t->ne) + ", expected " +
                shape_text(trimmed(ne)));
  }
  return *t;
}

}  // namespace vtprune::io
