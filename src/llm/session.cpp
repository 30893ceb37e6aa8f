// Session: model + context lifetime, mixed token / embedding prefill, sampling, streaming, KV accounting.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>

#include "llama_handles.h"
#include "model_file.h"
#include "vtprune/llm.h"

namespace vtprune::llm {

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string with_log(std::string message, const detail::LogSink& log) {
  const std::string details = log.recent_errors();
  if (!details.empty()) message += "\nlibllama said:\n" + details;
  return message;
}

const char* kind_name(Chunk::Kind kind) {
  switch (kind) {
    case Chunk::Kind::text: return "text";
    case Chunk::Kind::tokens: return "tokens";
    case Chunk::Kind::embeddings: return "embeddings";
  }
  return "?";
}

}  // namespace

Chunk Chunk::from_text(std::string text) {
  Chunk c;
  c.kind = Kind::text;
  c.text = std::move(text);
  return c;
}

Chunk Chunk::from_tokens(std::vector<int32_t> tokens) {
  Chunk c;
  c.kind = Kind::tokens;
  c.n_rows = static_cast<int64_t>(tokens.size());
  c.tokens = std::move(tokens);
  return c;
}

Chunk Chunk::from_embeddings(std::vector<float> rows, int64_t n_rows) {
  Chunk c;
  c.kind = Kind::embeddings;
  c.embeddings = std::move(rows);
  c.n_rows = n_rows;
  return c;
}

struct Session::Impl {
  std::string path;
  SessionParams params;
  std::shared_ptr<void> backend;
  std::unique_ptr<detail::LogSink> log;  // this session's libllama lines (see LogSink::Scope)
  std::shared_ptr<llama_model> model;  // read-only once loaded: shared by Session::share()
  detail::ContextPtr ctx;
  const llama_vocab* vocab = nullptr;
  ggml_type type_k = GGML_TYPE_F16;
  ggml_type type_v = GGML_TYPE_F16;
  int n_ctx = 0;  // enforced context: the requested n_ctx (libllama pads its KV allocation, e.g. to 256)
  detail::TokenEmbeddingTable token_embeddings;
  bool text_as_embeddings = false;  // decode mixed prompts as one batch of embedding rows

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() {
    // Free llama objects while our sink still receives their log lines.
    if (!log) return;
    detail::LogSink::Scope scope(*log);
    ctx.reset();
    model.reset();
  }

  // Decodes `n` positions starting at `pos0`, in pieces of at most n_batch. `fill(batch, offset, count)`
  // writes tokens or embeddings; logits are requested only for the very last position when `want_logits`.
  template <typename Fill>
  void decode(int n, int pos0, int32_t n_embd, bool want_logits, size_t chunk_index, Chunk::Kind kind,
              Fill&& fill) {
    const int n_batch = static_cast<int>(llama_n_batch(ctx.get()));
    detail::Batch batch(std::min(n, n_batch), n_embd);
    llama_batch& b = batch.get();
    for (int offset = 0; offset < n; offset += n_batch) {
      const int count = std::min(n_batch, n - offset);
      fill(b, offset, count);
      for (int i = 0; i < count; ++i) {
        b.pos[i] = pos0 + offset + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 0;
      }
      if (want_logits && offset + count == n) b.logits[count - 1] = 1;
      b.n_tokens = count;
      detail::LogSink::Scope scope(*log);
      log->clear();
      const int32_t rc = llama_decode(ctx.get(), b);
      if (rc != 0) {
        throw Error(with_log("llama_decode failed (code " + std::to_string(rc) + ") on prompt chunk " +
                                 std::to_string(chunk_index) + " (" + kind_name(kind) + ", positions " +
                                 std::to_string(pos0 + offset) + ".." + std::to_string(pos0 + offset + count - 1) +
                                 ") of model " + path,
                             *log));
      }
      // Decodes are asynchronous on some backends and perf counters are settled lazily: wait here so the
      // wall-clock time of this chunk is its own.
      llama_synchronize(ctx.get());
    }
  }

  // A fresh context on `model` (its own KV cache and compute buffers); call under a LogSink::Scope.
  void create_context() {
    const int threads = params.threads > 0 ? params.threads
                                           : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    llama_context_params ctx_params = llama_context_default_params();
    ctx_params.n_ctx = static_cast<uint32_t>(params.n_ctx);
    uint32_t n_batch = static_cast<uint32_t>(params.n_batch);
    if (params.n_ctx > 0) n_batch = std::min(n_batch, static_cast<uint32_t>(params.n_ctx));
    ctx_params.n_batch = n_batch;
    ctx_params.n_ubatch = n_batch;  // one image = one physical batch when n_batch >= its tokens
    ctx_params.n_seq_max = 1;
    ctx_params.n_threads = threads;
    ctx_params.n_threads_batch = threads;
    ctx_params.no_perf = false;
    type_k = ctx_params.type_k;
    type_v = ctx_params.type_v;
    log->clear();
    ctx.reset(llama_init_from_model(model.get(), ctx_params));
    if (!ctx) {
      throw Error(with_log("cannot create a libllama context for " + path + " (n_ctx " +
                               std::to_string(params.n_ctx) + ", n_batch " + std::to_string(n_batch) + ")",
                           *log));
    }
    const int allocated = static_cast<int>(llama_n_ctx(ctx.get()));
    n_ctx = params.n_ctx > 0 ? std::min(params.n_ctx, allocated) : allocated;
  }

  int64_t kv_bytes_per_token() const {
    const llama_model* m = model.get();
    const int64_t head_dim = llama_model_n_embd(m) / std::max(1, llama_model_n_head(m));
    const int64_t n_embd_k_gqa = head_dim * llama_model_n_head_kv(m);
    return static_cast<int64_t>(llama_model_n_layer(m)) * n_embd_k_gqa *
           static_cast<int64_t>(ggml_type_size(type_k) + ggml_type_size(type_v));
  }
};

Session::Session(const std::string& model_path, const SessionParams& params) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = model_path;
  s.params = params;
  if (params.n_ctx < 0 || params.n_batch < 1 || params.threads < 0) {
    throw Error("invalid session parameters for " + model_path + ": n_ctx " + std::to_string(params.n_ctx) +
                " (>= 0), n_batch " + std::to_string(params.n_batch) + " (>= 1), threads " +
                std::to_string(params.threads) + " (>= 0)");
  }
  s.backend = detail::acquire_backend();
  s.log = std::make_unique<detail::LogSink>(params.verbose);
  detail::LogSink::Scope log_scope(*s.log);

  std::error_code ec;
  if (!std::filesystem::is_regular_file(model_path, ec)) {
    throw Error("LLM model file not found: " + model_path);
  }
  const detail::LlmFileFacts facts = detail::inspect_llm_file(model_path);
  llama_model_params model_params = llama_model_default_params();
  llama_model* loaded = llama_model_load_from_file(model_path.c_str(), model_params);
  if (loaded == nullptr) {
    throw Error(with_log("cannot load LLM model " + model_path + " (not a GGUF model libllama can read?)", *s.log));
  }
  s.model = std::shared_ptr<llama_model>(loaded, detail::ModelDeleter{});
  s.vocab = llama_model_get_vocab(s.model.get());

  // The llama architecture's input layer is the token_embd lookup alone (no scaling, no extra inputs), so
  // a looked-up row is what the model itself would compute for that token.
  s.token_embeddings = facts.token_embeddings;
  s.text_as_embeddings = params.text_as_embeddings && facts.architecture == "llama" &&
                         facts.has_token_embeddings &&
                         s.token_embeddings.n_embd == llama_model_n_embd_inp(s.model.get()) &&
                         s.token_embeddings.n_vocab == llama_vocab_n_tokens(s.vocab);
  s.create_context();
}

Session Session::share() const {
  const Impl& from = *impl_;
  Session shared(std::make_unique<Impl>());
  Impl& s = *shared.impl_;
  s.path = from.path;
  s.params = from.params;
  s.backend = from.backend;
  s.log = std::make_unique<detail::LogSink>(from.params.verbose);
  detail::LogSink::Scope log_scope(*s.log);
  s.model = from.model;
  s.vocab = from.vocab;
  s.token_embeddings = from.token_embeddings;
  s.text_as_embeddings = from.text_as_embeddings;
  s.create_context();
  return shared;
}

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const std::string& Session::model_path() const { return impl_->path; }
int Session::n_embd_inp() const { return llama_model_n_embd_inp(impl_->model.get()); }
int Session::n_embd() const { return llama_model_n_embd(impl_->model.get()); }
int Session::n_layer() const { return llama_model_n_layer(impl_->model.get()); }
int Session::n_head() const { return llama_model_n_head(impl_->model.get()); }
int Session::n_head_kv() const { return llama_model_n_head_kv(impl_->model.get()); }
int Session::n_vocab() const { return llama_vocab_n_tokens(impl_->vocab); }
int Session::n_ctx() const { return impl_->n_ctx; }
int Session::n_batch() const { return static_cast<int>(llama_n_batch(impl_->ctx.get())); }
int32_t Session::bos() const { return llama_vocab_bos(impl_->vocab); }
int32_t Session::eos() const { return llama_vocab_eos(impl_->vocab); }
int64_t Session::kv_bytes_per_token() const { return impl_->kv_bytes_per_token(); }
bool Session::decodes_text_as_embeddings() const { return impl_->text_as_embeddings; }

std::vector<int32_t> Session::tokenize(std::string_view text, bool add_special) const {
  std::vector<llama_token> tokens(text.size() + 2);
  auto run = [&] {
    return llama_tokenize(impl_->vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                          static_cast<int32_t>(tokens.size()), add_special, /*parse_special=*/false);
  };
  int32_t n = run();
  if (n < 0) {
    if (n == INT32_MIN) throw Error("text too long to tokenise (" + std::to_string(text.size()) + " bytes)");
    tokens.resize(static_cast<size_t>(-n));
    n = run();
  }
  if (n < 0) throw Error("tokenisation failed for a text of " + std::to_string(text.size()) + " bytes");
  tokens.resize(static_cast<size_t>(n));
  return tokens;
}

std::string Session::token_to_piece(int32_t token) const {
  std::string piece(32, '\0');
  int32_t n = llama_token_to_piece(impl_->vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, false);
  if (n < 0) {
    piece.resize(static_cast<size_t>(-n));
    n = llama_token_to_piece(impl_->vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, false);
  }
  piece.resize(static_cast<size_t>(std::max(0, n)));
  return piece;
}

std::string Session::detokenize(std::span<const int32_t> tokens) const {
  std::string text;
  for (int32_t t : tokens) text += token_to_piece(t);
  return text;
}

PrefillResult Session::prefill(std::span<const Chunk> prompt) {
  Impl& s = *impl_;
  const auto start = Clock::now();
  const int n_embd = n_embd_inp();
  const int n_vocab_tokens = n_vocab();

  // Tokenise and validate every chunk before touching the KV cache.
  std::vector<std::vector<int32_t>> chunk_tokens(prompt.size());
  std::vector<int> chunk_positions(prompt.size(), 0);
  int64_t total = 0, total_text = 0, total_embd = 0;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const Chunk& chunk = prompt[i];
    switch (chunk.kind) {
      case Chunk::Kind::text:
        // BOS (add_special) only for the very first chunk, as LLaVA and mtmd do.
        chunk_tokens[i] = tokenize(chunk.text, /*add_special=*/i == 0);
        break;
      case Chunk::Kind::tokens:
        for (int32_t t : chunk.tokens) {
          if (t < 0 || t >= n_vocab_tokens) {
            throw InputError("prompt chunk " + std::to_string(i) + ": token id " + std::to_string(t) +
                        " is outside the vocabulary of " + s.path + " (" + std::to_string(n_vocab_tokens) + ")");
          }
        }
        chunk_tokens[i] = chunk.tokens;
        break;
      case Chunk::Kind::embeddings:
        if (chunk.n_rows <= 0 || chunk.embeddings.size() != static_cast<size_t>(chunk.n_rows) * n_embd) {
          const int64_t width = chunk.n_rows > 0 ? static_cast<int64_t>(chunk.embeddings.size()) / chunk.n_rows : 0;
          throw Error("prompt chunk " + std::to_string(i) + ": embeddings are " + std::to_string(chunk.n_rows) +
                      " rows x " + std::to_string(width) + " (" + std::to_string(chunk.embeddings.size()) +
                      " floats), but " + s.path + " takes input embeddings of width n_embd_inp = " +
                      std::to_string(n_embd) + " (does the projector match this LLM?)");
        }
        break;
    }
    const int64_t n = chunk.kind == Chunk::Kind::embeddings ? chunk.n_rows
                                                            : static_cast<int64_t>(chunk_tokens[i].size());
    chunk_positions[i] = static_cast<int>(n);
    (chunk.kind == Chunk::Kind::embeddings ? total_embd : total_text) += n;
    total += n;
  }
  if (total == 0) throw InputError("empty prompt: no tokens and no embeddings to decode");
  if (total > n_ctx()) {
    throw InputError("prompt is " + std::to_string(total) + " positions (" + std::to_string(total_text) + " text tokens + " +
                std::to_string(total_embd) + " embedding rows) but the context of " + s.path + " holds " +
                std::to_string(n_ctx()) + "; raise n_ctx or keep fewer image tokens");
  }
  size_t last_nonempty = 0;
  for (size_t i = 0; i < prompt.size(); ++i)
    if (chunk_positions[i] > 0) last_nonempty = i;

  llama_memory_clear(llama_get_memory(s.ctx.get()), /*data=*/true);

  PrefillResult result;
  int pos = 0;
  if (s.text_as_embeddings && total_embd > 0 && total_text > 0) {
    // One batch: every chunk becomes embedding rows (text through the token_embd table).
    const auto decode_start = Clock::now();
    std::vector<float> rows(static_cast<size_t>(total) * n_embd);
    size_t row = 0;
    for (size_t i = 0; i < prompt.size(); ++i) {
      float* dst = rows.data() + row * n_embd;
      if (prompt[i].kind == Chunk::Kind::embeddings) {
        std::copy(prompt[i].embeddings.begin(), prompt[i].embeddings.end(), dst);
      } else {
        s.token_embeddings.read_rows(chunk_tokens[i], dst);
      }
      row += static_cast<size_t>(chunk_positions[i]);
    }
    s.decode(static_cast<int>(total), 0, n_embd, /*want_logits=*/true, 0, Chunk::Kind::embeddings,
             [&](llama_batch& b, int offset, int count) {
               std::memcpy(b.embd, rows.data() + static_cast<size_t>(offset) * n_embd,
                           sizeof(float) * count * n_embd);
             });
    result.chunks.push_back({Chunk::Kind::embeddings, static_cast<int>(total), ms_between(decode_start, Clock::now())});
    result.single_batch = true;
    pos = static_cast<int>(total);
  }
  for (size_t i = 0; i < prompt.size() && !result.single_batch; ++i) {
    const Chunk& chunk = prompt[i];
    const int n = chunk_positions[i];
    ChunkTiming timing{chunk.kind, n, 0.0};
    const auto chunk_start = Clock::now();
    if (n > 0) {
      const bool want_logits = i == last_nonempty;
      if (chunk.kind == Chunk::Kind::embeddings) {
        const float* rows = chunk.embeddings.data();
        s.decode(n, pos, n_embd, want_logits, i, chunk.kind, [&](llama_batch& b, int offset, int count) {
          std::memcpy(b.embd, rows + static_cast<size_t>(offset) * n_embd, sizeof(float) * count * n_embd);
        });
      } else {
        const std::vector<int32_t>& tokens = chunk_tokens[i];
        s.decode(n, pos, 0, want_logits, i, chunk.kind, [&](llama_batch& b, int offset, int count) {
          std::copy_n(tokens.begin() + offset, count, b.token);
        });
      }
    }
    timing.ms = ms_between(chunk_start, Clock::now());
    result.chunks.push_back(timing);
    pos += n;
  }
  result.n_tokens = pos;
  result.ms = ms_between(start, Clock::now());
  result.kv_bytes = static_cast<int64_t>(llama_state_seq_get_size(s.ctx.get(), 0));
  return result;
}

std::vector<float> Session::last_logits() const {
  const float* logits = llama_get_logits_ith(impl_->ctx.get(), -1);
  if (logits == nullptr) throw Error("no logits available: run prefill() or generate() first");
  return std::vector<float>(logits, logits + n_vocab());
}

namespace {

detail::SamplerPtr make_sampler(const SamplingParams& sampling) {
  if (!std::isfinite(sampling.temperature) || !(sampling.top_p > 0.0f && sampling.top_p <= 1.0f)) {
    throw Error("invalid sampling parameters: temperature " + std::to_string(sampling.temperature) +
                " (finite), top_p " + std::to_string(sampling.top_p) + " (in (0, 1])");
  }
  llama_sampler_chain_params chain_params = llama_sampler_chain_default_params();
  detail::SamplerPtr chain(llama_sampler_chain_init(chain_params));
  if (sampling.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
  } else {
    // llama.cpp's order: truncate (top-p), then temperature, then draw.
    if (sampling.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(sampling.top_p, 1));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(sampling.temperature));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(sampling.seed));
  }
  return chain;
}

}  // namespace

GenerationResult Session::generate(std::span<const Chunk> prompt, const SamplingParams& sampling,
                                   const PieceCallback& on_piece) {
  Impl& s = *impl_;
  detail::SamplerPtr sampler = make_sampler(sampling);
  const auto start = Clock::now();
  PrefillResult prefilled = prefill(prompt);

  GenerationResult result;
  result.n_prompt_tokens = prefilled.n_tokens;
  result.prefill_ms = prefilled.ms;
  result.chunks = std::move(prefilled.chunks);
  result.kv_bytes = prefilled.kv_bytes;
  result.kv_bytes_analytic = s.kv_bytes_per_token() * prefilled.n_tokens;
  if (sampling.max_tokens <= 0) {
    result.stop = StopReason::max_tokens;
    return result;
  }

  llama_token token = llama_sampler_sample(sampler.get(), s.ctx.get(), -1);
  result.ttft_ms = ms_between(start, Clock::now());

  const int context = n_ctx();
  int pos = prefilled.n_tokens;
  int n_decoded = 0;
  double decode_ms = 0.0;
  for (;;) {
    if (llama_vocab_is_eog(s.vocab, token)) {
      result.stop = StopReason::eog;
      break;
    }
    result.tokens.push_back(token);
    const std::string piece = token_to_piece(token);
    result.text += piece;
    if (on_piece) on_piece(piece);
    if (static_cast<int>(result.tokens.size()) >= sampling.max_tokens) {
      result.stop = StopReason::max_tokens;
      break;
    }
    if (pos >= context) {
      result.stop = StopReason::context_full;
      break;
    }
    const auto step_start = Clock::now();
    const int32_t t = token;
    s.decode(1, pos, 0, /*want_logits=*/true, prompt.size(), Chunk::Kind::tokens,
             [t](llama_batch& b, int, int) { b.token[0] = t; });
    token = llama_sampler_sample(sampler.get(), s.ctx.get(), -1);
    decode_ms += ms_between(step_start, Clock::now());
    ++pos;
    ++n_decoded;
  }
  result.n_generated = static_cast<int>(result.tokens.size());
  result.decode_ms = decode_ms;
  result.decode_tok_s = decode_ms > 0.0 ? 1000.0 * n_decoded / decode_ms : 0.0;
  return result;
}

}  // namespace vtprune::llm
