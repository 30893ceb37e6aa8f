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
#include "vtprune/devices.h"
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

Chunk Chunk::from_grid_embeddings(std::vector<float> rows, int64_t n_rows, std::vector<int32_t> grid_y,
                                  std::vector<int32_t> grid_x, int32_t span) {
  Chunk c = from_embeddings(std::move(rows), n_rows);
  c.grid_y = std::move(grid_y);
  c.grid_x = std::move(grid_x);
  c.span = span;
  return c;
}

namespace {

// One KV cell's identity: a token id, or row `row` of an embeddings chunk (by key), and its position values
// (t, y, x; 1-D positions and text under M-RoPE have y = x = t).
struct KvRow {
  int32_t token = -1;  // >= 0: a token row
  int32_t chunk = -1;  // embeddings: index into the owner's key list (-1: unkeyed, never equal to anything)
  int32_t row = 0;
  int32_t t = 0, y = 0, x = 0;
};

bool same_row(const KvRow& a, const std::vector<std::string>& a_keys, const KvRow& b, const std::vector<std::string>& b_keys) {
  if (a.t != b.t || a.y != b.y || a.x != b.x || a.token != b.token) return false;
  if (a.token >= 0) return true;
  return a.chunk >= 0 && b.chunk >= 0 && a.row == b.row &&
         a_keys[static_cast<size_t>(a.chunk)] == b_keys[static_cast<size_t>(b.chunk)];
}

}  // namespace

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
  int n_sections = 1;               // position values per embedding row: 4 under M-RoPE

  // What seq 0 of the KV cache holds, row by row, for prefix reuse: the last prompt, then the generated tokens
  // decoded after it. Cleared whenever the cache's content is not known exactly (a failed decode).
  std::vector<KvRow> kv_rows;
  std::vector<std::string> kv_keys;  // keys of the embedding chunks kv_rows refers to

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

  // Decodes `n` rows (token ids, or embedding rows of n_embd floats) in pieces of at most n_batch. `positions`
  // holds n_sections x n values, section-major (llama.cpp's M-RoPE layout: all t, then all y, all x, all z);
  // token batches take one section (libllama spreads a token's position over the M-RoPE axes itself). Logits
  // are requested only for the very last row when `want_logits`.
  void decode(std::span<const int32_t> tokens, std::span<const float> embd, int n, int32_t n_embd,
              std::span<const int32_t> positions, int sections, bool want_logits, size_t chunk_index,
              Chunk::Kind kind) {
    const int n_batch = static_cast<int>(llama_n_batch(ctx.get()));
    detail::Batch batch(std::min(n, n_batch), embd.empty() ? 0 : n_embd, sections);
    for (int offset = 0; offset < n; offset += n_batch) {
      const int count = std::min(n_batch, n - offset);
      llama_batch& b = batch.view(count);
      if (!tokens.empty()) std::copy_n(tokens.begin() + offset, count, b.token);
      if (!embd.empty()) {
        std::memcpy(b.embd, embd.data() + static_cast<size_t>(offset) * n_embd, sizeof(float) * count * n_embd);
      }
      for (int sec = 0; sec < sections; ++sec) {
        std::copy_n(positions.begin() + static_cast<ptrdiff_t>(sec) * n + offset, count, b.pos + sec * count);
      }
      if (want_logits && offset + count == n) b.logits[count - 1] = 1;
      detail::LogSink::Scope scope(*log);
      log->clear();
      const int32_t rc = llama_decode(ctx.get(), b);
      if (rc != 0) {
        throw Error(with_log("llama_decode failed (code " + std::to_string(rc) + ") on prompt chunk " +
                                 std::to_string(chunk_index) + " (" + kind_name(kind) + ", rows " +
                                 std::to_string(offset) + ".." + std::to_string(offset + count - 1) + ", position " +
                                 std::to_string(positions[static_cast<size_t>(offset)]) + ") of model " + path,
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
    ctx_params.flash_attn_type = static_cast<llama_flash_attn_type>(params.flash_attn);
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
  if (!params.rpc_servers.empty()) add_rpc_servers(params.rpc_servers);
  llama_model_params model_params = llama_model_default_params();
  model_params.n_gpu_layers = params.n_gpu_layers;
  llama_model* loaded = llama_model_load_from_file(model_path.c_str(), model_params);
  if (loaded == nullptr) {
    throw Error(with_log("cannot load LLM model " + model_path + " (not a GGUF model libllama can read?)", *s.log));
  }
  s.model = std::shared_ptr<llama_model>(loaded, detail::ModelDeleter{});
  s.vocab = llama_model_get_vocab(s.model.get());

  // These architectures' input layer is the token_embd lookup alone (no scaling, no extra inputs: see
  // build_inp_embd in src/models/{llama,qwen2,qwen2vl}.cpp), so a looked-up row is what the model itself would
  // compute for that token.
  s.token_embeddings = facts.token_embeddings;
  s.n_sections = llama_model_rope_type(s.model.get()) == LLAMA_ROPE_TYPE_MROPE ||
                         llama_model_rope_type(s.model.get()) == LLAMA_ROPE_TYPE_IMROPE
                     ? 4
                     : 1;
  const bool plain_input = facts.architecture == "llama" || facts.architecture == "qwen2" ||
                           facts.architecture == "qwen2vl";
  s.text_as_embeddings = params.text_as_embeddings && plain_input &&
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
  s.n_sections = from.n_sections;
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
bool Session::uses_mrope() const { return impl_->n_sections == 4; }
const llama_model* Session::llama_model_handle() const { return impl_->model.get(); }

ChatTemplate Session::chat_template() const {
  const Impl& s = *impl_;
  ChatTemplate t;
  if (const char* source = llama_model_chat_template(s.model.get(), nullptr)) t.source = source;
  // Token texts with special = true, as common_chat_templates_init reads them (empty when the vocab lacks one).
  const auto text_of = [&](llama_token token) {
    if (token == LLAMA_TOKEN_NULL) return std::string();
    std::string piece(64, '\0');
    int32_t n = llama_token_to_piece(s.vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, true);
    if (n < 0) {
      piece.resize(static_cast<size_t>(-n));
      n = llama_token_to_piece(s.vocab, token, piece.data(), static_cast<int32_t>(piece.size()), 0, true);
    }
    piece.resize(static_cast<size_t>(std::max(0, n)));
    return piece;
  };
  t.bos = text_of(llama_vocab_bos(s.vocab));
  t.eos = text_of(llama_vocab_eos(s.vocab));
  t.add_bos = llama_vocab_get_add_bos(s.vocab);
  t.add_eos = llama_vocab_get_add_eos(s.vocab);
  return t;
}

std::vector<float> Session::embed_tokens(std::span<const int32_t> tokens) const {
  const Impl& s = *impl_;
  if (!s.text_as_embeddings && !(s.token_embeddings.n_vocab > 0 && s.token_embeddings.n_embd == n_embd_inp())) {
    throw Error(s.path + ": its input layer is not a plain token_embd lookup vtprune can read");
  }
  std::vector<float> rows(tokens.size() * static_cast<size_t>(n_embd_inp()));
  s.token_embeddings.read_rows(tokens, rows.data());
  return rows;
}

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

namespace {
// Causal attention off for one decode (restored after it, even when it throws), as mtmd-helper's
// scope_non_causal does.
class CausalScope {
 public:
  CausalScope(llama_context* ctx, bool causal) : ctx_(causal ? nullptr : ctx) {
    if (ctx_) llama_set_causal_attn(ctx_, false);
  }
  ~CausalScope() {
    if (ctx_) llama_set_causal_attn(ctx_, true);
  }
  CausalScope(const CausalScope&) = delete;
  CausalScope& operator=(const CausalScope&) = delete;

 private:
  llama_context* ctx_;
};
}  // namespace

PrefillResult Session::prefill(std::span<const Chunk> prompt, bool reuse_prefix) {
  Impl& s = *impl_;
  const auto start = Clock::now();
  const int n_embd = n_embd_inp();
  const int n_vocab_tokens = n_vocab();
  const int n_sections = s.n_sections;

  // Tokenise and validate every chunk before touching the KV cache.
  std::vector<std::vector<int32_t>> chunk_tokens(prompt.size());
  std::vector<int> chunk_rows(prompt.size(), 0), chunk_p0(prompt.size(), 0);
  int64_t total = 0, total_text = 0, total_embd = 0, positions = 0;
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
        if (chunk.non_causal && chunk.n_rows > n_batch()) {
          throw InputError("prompt chunk " + std::to_string(i) + ": " + std::to_string(chunk.n_rows) +
                           " image rows must be decoded in one non-causal batch, but the batch holds " +
                           std::to_string(n_batch()) + "; raise n_batch or keep fewer image tokens");
        }
        if (chunk.on_grid()) {
          if (n_sections != 4) {
            throw Error("prompt chunk " + std::to_string(i) + ": grid positions need an M-RoPE model, " + s.path +
                        " uses 1-D positions");
          }
          const auto rows = static_cast<size_t>(chunk.n_rows);
          if (chunk.grid_y.size() != rows || chunk.grid_x.size() != rows || chunk.span < 1) {
            throw Error("prompt chunk " + std::to_string(i) + ": " + std::to_string(chunk.n_rows) + " rows but " +
                        std::to_string(chunk.grid_y.size()) + " / " + std::to_string(chunk.grid_x.size()) +
                        " grid positions (span " + std::to_string(chunk.span) + ")");
          }
          for (size_t r = 0; r < rows; ++r) {
            if (chunk.grid_y[r] < 0 || chunk.grid_x[r] < 0 || chunk.grid_y[r] >= chunk.span || chunk.grid_x[r] >= chunk.span) {
              throw Error("prompt chunk " + std::to_string(i) + ": row " + std::to_string(r) + " sits at grid (" +
                          std::to_string(chunk.grid_y[r]) + ", " + std::to_string(chunk.grid_x[r]) +
                          "), outside its span " + std::to_string(chunk.span));
            }
          }
        }
        break;
    }
    const int64_t n = chunk.kind == Chunk::Kind::embeddings ? chunk.n_rows
                                                            : static_cast<int64_t>(chunk_tokens[i].size());
    chunk_rows[i] = static_cast<int>(n);
    chunk_p0[i] = static_cast<int>(positions);
    positions += chunk.on_grid() ? chunk.span : n;
    (chunk.kind == Chunk::Kind::embeddings ? total_embd : total_text) += n;
    total += n;
  }
  if (total == 0) throw InputError("empty prompt: no tokens and no embeddings to decode");
  if (total > n_ctx()) {
    throw InputError("prompt is " + std::to_string(total) + " tokens (" + std::to_string(total_text) + " text tokens + " +
                std::to_string(total_embd) + " embedding rows) but the context of " + s.path + " holds " +
                std::to_string(n_ctx()) + "; raise n_ctx or keep fewer image tokens");
  }
  // Every row's identity and positions, as a fresh prefill decodes them, and where each chunk's rows begin.
  std::vector<KvRow> rows;
  rows.reserve(static_cast<size_t>(total));
  std::vector<std::string> keys;
  std::vector<size_t> chunk_row0(prompt.size(), 0);
  for (size_t i = 0; i < prompt.size(); ++i) {
    const Chunk& chunk = prompt[i];
    chunk_row0[i] = rows.size();
    int32_t key = -1;
    if (chunk.kind == Chunk::Kind::embeddings && !chunk.key.empty()) {
      keys.push_back(chunk.key);
      key = static_cast<int32_t>(keys.size() - 1);
    }
    const int p0 = chunk_p0[i];
    for (int r = 0; r < chunk_rows[i]; ++r) {
      KvRow row;
      if (chunk.kind == Chunk::Kind::embeddings) {
        row.chunk = key;
        row.row = r;
        if (chunk.on_grid()) {
          row.t = p0;
          row.y = p0 + chunk.grid_y[static_cast<size_t>(r)];
          row.x = p0 + chunk.grid_x[static_cast<size_t>(r)];
        } else {
          row.t = row.y = row.x = p0 + r;
        }
      } else {
        row.token = chunk_tokens[i][static_cast<size_t>(r)];
        row.t = row.y = row.x = p0 + r;
      }
      rows.push_back(row);
    }
  }
  const auto chunk_of_row = [&](size_t row) {
    size_t c = 0;
    while (c + 1 < prompt.size() && chunk_row0[c + 1] <= row) ++c;
    return c;
  };

  // Prefix reuse: the leading rows equal to what the cache holds stay there.
  size_t n_keep = 0;
  if (reuse_prefix && !s.kv_rows.empty()) {
    const size_t limit = std::min(s.kv_rows.size(), rows.size());
    while (n_keep < limit && same_row(s.kv_rows[n_keep], s.kv_keys, rows[n_keep], keys)) ++n_keep;
    n_keep = std::min(n_keep, rows.size() - 1);  // the last row is decoded again: its logits are needed
    // an embeddings chunk is kept whole or not at all
    const size_t c = chunk_of_row(n_keep);
    if (prompt[c].kind == Chunk::Kind::embeddings && n_keep > chunk_row0[c]) n_keep = chunk_row0[c];
    // every cached row after the kept ones must sit at a later position, so that removing positions past the
    // last kept row removes exactly them (true for every prompt: positions never decrease along a prompt)
    if (n_keep > 0 && n_keep < s.kv_rows.size() && s.kv_rows[n_keep].t <= s.kv_rows[n_keep - 1].t) n_keep = 0;
  }
  s.kv_rows.clear();  // unknown until this prefill has succeeded
  s.kv_keys.clear();
  llama_memory_t memory = llama_get_memory(s.ctx.get());
  if (n_keep > 0 && !llama_memory_seq_rm(memory, 0, rows[n_keep - 1].t + 1, -1)) n_keep = 0;
  if (n_keep == 0) llama_memory_clear(memory, /*data=*/true);

  // What is left to decode: rows [n_keep, total), chunk by chunk.
  const auto first_row = [&](size_t i) { return std::max(chunk_row0[i], n_keep); };
  const auto end_row = [&](size_t i) { return chunk_row0[i] + static_cast<size_t>(chunk_rows[i]); };
  int64_t left_text = 0, left_embd = 0;
  size_t last_nonempty = 0;
  for (size_t i = 0; i < prompt.size(); ++i) {
    const size_t n = end_row(i) > first_row(i) ? end_row(i) - first_row(i) : 0;
    (prompt[i].kind == Chunk::Kind::embeddings ? left_embd : left_text) += static_cast<int64_t>(n);
    if (n > 0) last_nonempty = i;
  }
  // Position values of rows [begin, end), section-major over `sections` (1, or 4 for M-RoPE embeddings).
  const auto positions_of = [&](size_t begin, size_t end, int sections) {
    const size_t n = end - begin;
    std::vector<int32_t> pos(n * static_cast<size_t>(sections), 0);
    for (size_t r = 0; r < n; ++r) {
      const KvRow& row = rows[begin + r];
      pos[r] = row.t;
      if (sections == 4) {
        pos[n + r] = row.y;
        pos[2 * n + r] = row.x;
      }
    }
    return pos;
  };

  PrefillResult result;
  result.n_reused = static_cast<int>(n_keep);
  const bool any_non_causal = std::any_of(prompt.begin(), prompt.end(), [](const Chunk& c) { return c.non_causal; });
  if (s.text_as_embeddings && left_embd > 0 && left_text > 0 && !any_non_causal) {
    // One batch: every row left becomes an embedding row (text through the token_embd table).
    const auto decode_start = Clock::now();
    const size_t n_left = static_cast<size_t>(left_embd + left_text);
    std::vector<float> embd(n_left * static_cast<size_t>(n_embd));
    size_t at = 0;
    for (size_t i = 0; i < prompt.size(); ++i) {
      const size_t b = first_row(i), e = end_row(i);
      if (e <= b) continue;
      const size_t offset = b - chunk_row0[i];
      float* dst = embd.data() + at * static_cast<size_t>(n_embd);
      if (prompt[i].kind == Chunk::Kind::embeddings) {
        std::copy_n(prompt[i].embeddings.begin() + static_cast<ptrdiff_t>(offset * static_cast<size_t>(n_embd)),
                    (e - b) * static_cast<size_t>(n_embd), dst);
      } else {
        s.token_embeddings.read_rows(std::span<const int32_t>(chunk_tokens[i]).subspan(offset, e - b), dst);
      }
      at += e - b;
    }
    const std::vector<int32_t> pos = positions_of(n_keep, rows.size(), n_sections);
    s.decode({}, embd, static_cast<int>(n_left), n_embd, pos, n_sections, /*want_logits=*/true, chunk_of_row(n_keep),
             Chunk::Kind::embeddings);
    result.chunks.push_back({Chunk::Kind::embeddings, static_cast<int>(n_left), ms_between(decode_start, Clock::now())});
    result.single_batch = true;
  }
  for (size_t i = 0; i < prompt.size() && !result.single_batch; ++i) {
    const Chunk& chunk = prompt[i];
    const size_t b = first_row(i), e = end_row(i);
    const int n = e > b ? static_cast<int>(e - b) : 0;
    ChunkTiming timing{chunk.kind, n, 0.0};
    const auto chunk_start = Clock::now();
    if (n > 0) {
      const bool want_logits = i == last_nonempty;
      const size_t offset = b - chunk_row0[i];
      if (chunk.kind == Chunk::Kind::embeddings) {
        const std::vector<int32_t> pos = positions_of(b, e, n_sections);
        const CausalScope scope(s.ctx.get(), !chunk.non_causal);
        s.decode({}, std::span<const float>(chunk.embeddings).subspan(offset * static_cast<size_t>(n_embd)), n, n_embd,
                 pos, n_sections, want_logits, i, chunk.kind);
      } else {  // token batches carry one position per token: libllama spreads it over the M-RoPE axes
        const std::vector<int32_t> pos = positions_of(b, e, 1);
        s.decode(std::span<const int32_t>(chunk_tokens[i]).subspan(offset), {}, n, 0, pos, 1, want_logits, i, chunk.kind);
      }
    }
    timing.ms = ms_between(chunk_start, Clock::now());
    result.chunks.push_back(timing);
  }
  result.n_tokens = static_cast<int>(total);
  result.n_positions = static_cast<int>(positions);
  result.ms = ms_between(start, Clock::now());
  result.kv_bytes = static_cast<int64_t>(llama_state_seq_get_size(s.ctx.get(), 0));
  s.kv_rows = std::move(rows);
  s.kv_keys = std::move(keys);
  return result;
}

std::vector<float> Session::last_logits() const {
  const float* logits = llama_get_logits_ith(impl_->ctx.get(), -1);
  if (logits == nullptr) throw Error("no logits available: run prefill() or generate() first");
  return std::vector<float>(logits, logits + n_vocab());
}

namespace {

detail::SamplerPtr make_sampler(const SamplingParams& sampling, const llama_vocab* vocab) {
  const int n_vocab = llama_vocab_n_tokens(vocab);
  const auto finite_in = [](float v, float lo, float hi) { return std::isfinite(v) && v >= lo && v <= hi; };
  if (!std::isfinite(sampling.temperature) || !(sampling.top_p > 0.0f && sampling.top_p <= 1.0f) ||
      !finite_in(sampling.frequency_penalty, -2.0f, 2.0f) || !finite_in(sampling.presence_penalty, -2.0f, 2.0f) ||
      sampling.top_logprobs > 20) {
    throw Error("invalid sampling parameters: temperature " + std::to_string(sampling.temperature) + " (finite), top_p " +
                std::to_string(sampling.top_p) + " (in (0, 1]), frequency_penalty " +
                std::to_string(sampling.frequency_penalty) + " and presence_penalty " +
                std::to_string(sampling.presence_penalty) + " (in [-2, 2]), top_logprobs " +
                std::to_string(sampling.top_logprobs) + " (at most 20)");
  }
  std::vector<llama_logit_bias> biases;
  for (const auto& [token, bias] : sampling.logit_bias) {
    if (token < 0 || token >= n_vocab || !std::isfinite(bias)) {
      throw InputError("logit_bias: token " + std::to_string(token) + " is outside the vocabulary (" +
                       std::to_string(n_vocab) + " tokens) or its bias is not finite");
    }
    biases.push_back({token, bias});
  }
  for (const std::string& stop : sampling.stop) {
    if (stop.empty()) throw InputError("an empty stop string would end every generation before it starts");
  }
  llama_sampler_chain_params chain_params = llama_sampler_chain_default_params();
  detail::SamplerPtr chain(llama_sampler_chain_init(chain_params));
  // llama.cpp's order: logit bias, penalties, then truncate (top-p), temperature, draw (or the greedy pick).
  if (!biases.empty()) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_logit_bias(n_vocab, static_cast<int32_t>(biases.size()), biases.data()));
  }
  if (sampling.frequency_penalty != 0.0f || sampling.presence_penalty != 0.0f) {
    // every generated token counts (the window is the whole generation); no repetition penalty (1.0)
    llama_sampler_chain_add(chain.get(), llama_sampler_init_penalties(n_vocab, std::max(1, sampling.max_tokens), 1.0f,
                                                                      sampling.frequency_penalty, sampling.presence_penalty));
  }
  if (sampling.temperature <= 0.0f) {
    llama_sampler_chain_add(chain.get(), llama_sampler_init_greedy());
  } else {
    if (sampling.top_p < 1.0f) llama_sampler_chain_add(chain.get(), llama_sampler_init_top_p(sampling.top_p, 1));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_temp(sampling.temperature));
    llama_sampler_chain_add(chain.get(), llama_sampler_init_dist(sampling.seed));
  }
  return chain;
}

// The log-softmax of the model's logits at the last position: the sampled token's value and the `top` best.
TokenLogprob logprob_of(llama_context* ctx, int n_vocab, int32_t token, int top) {
  const float* logits = llama_get_logits_ith(ctx, -1);
  TokenLogprob lp;
  lp.token = token;
  if (logits == nullptr) return lp;
  float max_logit = logits[0];
  for (int i = 1; i < n_vocab; ++i) max_logit = std::max(max_logit, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max_logit);
  const double log_z = max_logit + std::log(sum);
  lp.logprob = static_cast<float>(logits[token] - log_z);
  if (top > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(n_vocab));
    for (int i = 0; i < n_vocab; ++i) ids[static_cast<size_t>(i)] = i;
    const auto k = static_cast<ptrdiff_t>(std::min(top, n_vocab));
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (ptrdiff_t i = 0; i < k; ++i) lp.top.emplace_back(ids[static_cast<size_t>(i)], static_cast<float>(logits[ids[static_cast<size_t>(i)]] - log_z));
  }
  return lp;
}

// Finds stop strings in generated text and decides how much of it may be released: text that could still turn
// out to be the start of a stop string is held back.
class StopScanner {
 public:
  explicit StopScanner(const std::vector<std::string>& stops) : stops_(stops) {}
  // The earliest occurrence of any stop string starting at or after `from`: (position, which), or npos.
  std::pair<size_t, size_t> find(std::string_view text, size_t from) const {
    std::pair<size_t, size_t> best{std::string_view::npos, 0};
    for (size_t i = 0; i < stops_.size(); ++i) {
      const size_t at = text.find(stops_[i], from);
      if (at < best.first) best = {at, i};
    }
    return best;
  }
  // How much of `text` can be released: all of it but the longest suffix that is a proper prefix of a stop string.
  size_t releasable(std::string_view text) const {
    size_t hold = 0;
    for (const std::string& stop : stops_) {
      for (size_t k = std::min(stop.size() - 1, text.size()); k > hold; --k) {
        if (text.ends_with(std::string_view(stop).substr(0, k))) {
          hold = k;
          break;
        }
      }
    }
    return text.size() - hold;
  }
  const std::string& stop(size_t i) const { return stops_[i]; }

 private:
  const std::vector<std::string>& stops_;
};

}  // namespace

GenerationResult Session::generate(std::span<const Chunk> prompt, const SamplingParams& sampling,
                                   const PieceCallback& on_piece, bool reuse_prefix) {
  Impl& s = *impl_;
  detail::SamplerPtr sampler = make_sampler(sampling, s.vocab);
  const auto start = Clock::now();
  PrefillResult prefilled = prefill(prompt, reuse_prefix);

  GenerationResult result;
  result.n_prompt_tokens = prefilled.n_tokens;
  result.n_cached_tokens = prefilled.n_reused;
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
  const int n_vocab_tokens = n_vocab();
  const StopScanner stops(sampling.stop);
  std::string text;           // everything generated so far
  size_t released = 0;        // bytes of `text` handed to on_piece
  std::vector<size_t> token_start;  // offset in `text` where each token with a logprob entry begins
  const auto release = [&](size_t end) {
    if (end > released) {
      if (on_piece) on_piece(std::string_view(text).substr(released, end - released));
      released = end;
    }
  };
  int pos = prefilled.n_positions;
  int cells = prefilled.n_tokens;
  int n_decoded = 0;
  double decode_ms = 0.0;
  for (;;) {
    if (llama_vocab_is_eog(s.vocab, token)) {
      result.stop = StopReason::eog;
      break;
    }
    result.tokens.push_back(token);
    const std::string piece = token_to_piece(token);
    if (sampling.top_logprobs >= 0) {
      TokenLogprob lp = logprob_of(s.ctx.get(), n_vocab_tokens, token, sampling.top_logprobs);
      lp.piece = piece;
      result.logprobs.push_back(std::move(lp));
      token_start.push_back(text.size());
    }
    text += piece;
    if (!sampling.stop.empty()) {
      const auto [at, which] = stops.find(text, released);
      if (at != std::string::npos) {
        text.resize(at);
        release(at);
        result.stop = StopReason::stop_sequence;
        result.stop_sequence = stops.stop(which);
        // tokens whose text lies wholly after the cut are not part of the answer
        while (!token_start.empty() && token_start.back() >= at) {
          token_start.pop_back();
          result.logprobs.pop_back();
        }
        break;
      }
      release(stops.releasable(text));
    } else {
      release(text.size());
    }
    if (static_cast<int>(result.tokens.size()) >= sampling.max_tokens) {
      result.stop = StopReason::max_tokens;
      break;
    }
    if (cells >= context) {
      result.stop = StopReason::context_full;
      break;
    }
    const auto step_start = Clock::now();
    const int32_t t = token;
    try {
      s.decode(std::span<const int32_t>(&t, 1), {}, 1, 0, std::span<const int32_t>(&pos, 1), 1, /*want_logits=*/true,
               prompt.size(), Chunk::Kind::tokens);
    } catch (...) {
      s.kv_rows.clear();  // what the cache holds is no longer known
      s.kv_keys.clear();
      throw;
    }
    s.kv_rows.push_back(KvRow{.token = t, .chunk = -1, .row = 0, .t = pos, .y = pos, .x = pos});
    token = llama_sampler_sample(sampler.get(), s.ctx.get(), -1);
    decode_ms += ms_between(step_start, Clock::now());
    ++pos;
    ++cells;
    ++n_decoded;
  }
  if (result.stop != StopReason::stop_sequence) release(text.size());
  result.text = std::move(text);
  result.n_generated = static_cast<int>(result.tokens.size());
  result.decode_ms = decode_ms;
  result.decode_tok_s = decode_ms > 0.0 ? 1000.0 * n_decoded / decode_ms : 0.0;
  return result;
}

}  // namespace vtprune::llm
