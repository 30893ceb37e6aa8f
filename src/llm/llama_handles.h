// RAII for every libllama / ggml / gguf handle the llm module touches, the process-wide backend guard and
// the log sink. Internal to src/llm.
#pragma once

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"

namespace vtprune::llm::detail {

struct ModelDeleter {
  void operator()(llama_model* p) const noexcept { llama_model_free(p); }
};
struct ContextDeleter {
  void operator()(llama_context* p) const noexcept { llama_free(p); }
};
struct SamplerDeleter {
  void operator()(llama_sampler* p) const noexcept { llama_sampler_free(p); }
};
struct GgmlContextDeleter {
  void operator()(ggml_context* p) const noexcept { ggml_free(p); }
};
struct GgufContextDeleter {
  void operator()(gguf_context* p) const noexcept { gguf_free(p); }
};
using ModelPtr = std::unique_ptr<llama_model, ModelDeleter>;
using ContextPtr = std::unique_ptr<llama_context, ContextDeleter>;
using SamplerPtr = std::unique_ptr<llama_sampler, SamplerDeleter>;
using GgmlContextPtr = std::unique_ptr<ggml_context, GgmlContextDeleter>;
using GgufContextPtr = std::unique_ptr<gguf_context, GgufContextDeleter>;

// A llama_batch over vectors this object owns, for one sequence (seq 0): token ids or embedding rows, and
// `n_sections` position values per row (4 for M-RoPE embeddings, laid out section-major as libllama reads
// them; llama_batch_init cannot allocate that, it gives one position per row).
class Batch {
 public:
  Batch(int32_t capacity, int32_t n_embd, int n_sections)
      : token_(n_embd == 0 ? static_cast<size_t>(capacity) : 0),
        embd_(static_cast<size_t>(capacity) * static_cast<size_t>(n_embd)),
        pos_(static_cast<size_t>(capacity) * static_cast<size_t>(n_sections)),
        n_seq_id_(static_cast<size_t>(capacity), 1),
        seq_ids_(static_cast<size_t>(capacity) + 1, seq0_.data()),
        logits_(static_cast<size_t>(capacity), 0) {
    seq_ids_.back() = nullptr;
  }
  Batch(const Batch&) = delete;
  Batch& operator=(const Batch&) = delete;

  // The batch for the next `count` rows (<= capacity): caller fills token or embd, and pos as n_sections
  // blocks of `count` values; logits are reset to "none".
  llama_batch& view(int32_t count) {
    std::fill(logits_.begin(), logits_.end(), 0);
    batch_ = llama_batch{
        count,
        token_.empty() ? nullptr : token_.data(),
        embd_.empty() ? nullptr : embd_.data(),
        pos_.data(),
        n_seq_id_.data(),
        seq_ids_.data(),
        logits_.data(),
    };
    return batch_;
  }

 private:
  std::vector<llama_token> token_;
  std::vector<float> embd_;
  std::vector<llama_pos> pos_;
  std::vector<int32_t> n_seq_id_;
  std::array<llama_seq_id, 1> seq0_{0};
  std::vector<llama_seq_id*> seq_ids_;
  std::vector<int8_t> logits_;
  llama_batch batch_{};
};

// llama_backend_init once while any holder lives, llama_backend_free when the last one goes.
std::shared_ptr<void> acquire_backend();

// Receives libllama's and ggml's log lines (llama_log_set covers both). Quiet by default: the recent
// warnings / errors are kept so that a failure can quote them; verbose also echoes everything to stderr.
//
// libllama has one process-wide logger. It is pointed at a router that hands each line to the sink whose
// Scope is active on the logging thread, so sessions used concurrently (a server's slots) never see each
// other's lines; a line logged outside any scope is dropped.
class LogSink {
 public:
  explicit LogSink(bool verbose) : verbose_(verbose) {}
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  // While a Scope lives, this thread's libllama / ggml lines go to `sink`. Scopes nest.
  class Scope {
   public:
    explicit Scope(LogSink& sink);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    LogSink* previous_;
  };

  // Recent warning / error text (at most a few KB), trimmed.
  std::string recent_errors() const;
  void clear() { errors_.clear(); }

 private:
  static void route(ggml_log_level level, const char* text, void* user_data);
  void receive(ggml_log_level level, const char* text);
  bool verbose_;
  ggml_log_level last_level_ = GGML_LOG_LEVEL_INFO;
  std::string errors_;
};

}  // namespace vtprune::llm::detail
