// GGUF headers in tests: read a file's header (no tensor data) and compare its tensor table (names, ggml shapes
// without trailing 1s, types) with the table a converter would write.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"

namespace vtprune::test {

struct GgufFree {
  void operator()(gguf_context* g) const { gguf_free(g); }
};
using Gguf = std::unique_ptr<gguf_context, GgufFree>;

inline Gguf read_header(const std::string& path) {
  gguf_init_params params{/*no_alloc=*/true, nullptr};
  Gguf g(gguf_init_from_file(path.c_str(), params));
  EXPECT_TRUE(g) << path;
  return g;
}

struct TensorInfo {
  std::vector<int64_t> ne;
  ggml_type type;
  bool operator==(const TensorInfo&) const = default;
};

inline std::map<std::string, TensorInfo> tensor_table(const Gguf& g) {
  std::map<std::string, TensorInfo> out;
  for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
    const int64_t* ne = gguf_get_tensor_ne(g.get(), i);
    std::vector<int64_t> shape(ne, ne + GGML_MAX_DIMS);
    while (shape.size() > 1 && shape.back() == 1) shape.pop_back();
    out[gguf_get_tensor_name(g.get(), i)] = {shape, gguf_get_tensor_type(g.get(), i)};
  }
  return out;
}

inline void expect_tables_equal(const std::map<std::string, TensorInfo>& got, const std::map<std::string, TensorInfo>& want) {
  EXPECT_EQ(got.size(), want.size());
  for (const auto& [name, info] : want) {
    const auto it = got.find(name);
    if (it == got.end()) {
      ADD_FAILURE() << "missing tensor " << name;
      continue;
    }
    EXPECT_EQ(it->second.ne, info.ne) << name;
    EXPECT_EQ(it->second.type, info.type) << name << ": " << ggml_type_name(it->second.type);
  }
  for (const auto& [name, info] : got) EXPECT_TRUE(want.count(name)) << "unexpected tensor " << name;
}

}  // namespace vtprune::test
