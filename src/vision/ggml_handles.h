// Owning handles for ggml / gguf objects: every one is released by its destructor, never by hand.
#pragma once

#include <memory>

// ggml's headers trip -Wshadow (ggml_backend_graph_copy names both a struct and a function).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "gguf.h"
#pragma GCC diagnostic pop

namespace vtprune::vision {

struct GgmlContextDeleter {
  void operator()(ggml_context* ctx) const { ggml_free(ctx); }
};
struct GgmlBackendDeleter {
  void operator()(ggml_backend* backend) const { ggml_backend_free(backend); }
};
struct GgmlBufferDeleter {
  void operator()(ggml_backend_buffer* buffer) const { ggml_backend_buffer_free(buffer); }
};
struct GgmlGallocrDeleter {
  void operator()(ggml_gallocr* allocator) const { ggml_gallocr_free(allocator); }
};
struct GgufContextDeleter {
  void operator()(gguf_context* ctx) const { gguf_free(ctx); }
};

using ContextPtr = std::unique_ptr<ggml_context, GgmlContextDeleter>;
using BackendPtr = std::unique_ptr<ggml_backend, GgmlBackendDeleter>;
using BufferPtr = std::unique_ptr<ggml_backend_buffer, GgmlBufferDeleter>;
using GallocrPtr = std::unique_ptr<ggml_gallocr, GgmlGallocrDeleter>;
using GgufPtr = std::unique_ptr<gguf_context, GgufContextDeleter>;

// A ggml context that only holds tensor and graph metadata (data lives in backend buffers).
ContextPtr make_metadata_context(size_t max_tensors, size_t graph_nodes = 0);

}  // namespace vtprune::vision
