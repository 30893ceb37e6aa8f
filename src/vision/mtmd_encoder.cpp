// libmtmd as an encoder: its own graph and projector, observed through the scheduler's eval callback.
#include "vtprune/mtmd_encoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "model_impl.h"
#include "mtmd.h"
#include "vtprune/gguf_file.h"

namespace vtprune::vision {

namespace {

// ---- libmtmd's log --------------------------------------------------------------------------------------
// libmtmd has one process-wide logger; each encoder's calls run under a LogScope that points this thread's
// lines at that encoder's buffer (recent warnings and errors, quoted in error messages).
struct MtmdLog {
  bool verbose = false;
  std::string errors;
};
thread_local MtmdLog* t_log = nullptr;

void route_log(ggml_log_level level, const char* text, void*) {
  MtmdLog* log = t_log;
  if (!log) return;
  if (log->verbose) std::fputs(text, stderr);
  if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_CONT) {
    log->errors += text;
    if (log->errors.size() > 4096) log->errors.erase(0, log->errors.size() - 4096);
  }
}

class LogScope {
 public:
  explicit LogScope(MtmdLog& log) : previous_(t_log) {
    static std::once_flag once;
    std::call_once(once, [] { mtmd_log_set(route_log, nullptr); });
    t_log = &log;
  }
  ~LogScope() { t_log = previous_; }
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  MtmdLog* previous_;
};

std::string with_log(std::string message, const MtmdLog& log) {
  if (!log.errors.empty()) message += "\nlibmtmd said:\n" + log.errors;
  return message;
}

struct ChunksDeleter {
  void operator()(mtmd_input_chunks* c) const noexcept { mtmd_input_chunks_free(c); }
};
struct ContextDeleter {
  void operator()(mtmd_context* c) const noexcept { mtmd_free(c); }
};
struct BitmapDeleter {
  void operator()(mtmd_bitmap* b) const noexcept { mtmd_bitmap_free(b); }
};

// Copies a tensor the callback sees into floats, honouring strides (a view of a fused tensor) and F16.
std::vector<float> read_any(const ggml_tensor* t) {
  if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_F16) {
    throw Error(std::string("tap tensor ") + t->name + " has type " + ggml_type_name(t->type) + ", expected F32 or F16");
  }
  const size_t elem = ggml_type_size(t->type);
  if (t->nb[0] != elem) throw Error(std::string("tap tensor ") + t->name + " is not contiguous along its rows");
  const int64_t row = t->ne[0], rows = ggml_nrows(t);
  std::vector<uint8_t> raw(static_cast<size_t>(row * rows) * elem);
  if (ggml_is_contiguous(t)) {
    ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
  } else {
    size_t dst = 0;
    for (int64_t i3 = 0; i3 < t->ne[3]; ++i3)
      for (int64_t i2 = 0; i2 < t->ne[2]; ++i2)
        for (int64_t i1 = 0; i1 < t->ne[1]; ++i1) {
          const size_t off = static_cast<size_t>(i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3]);
          ggml_backend_tensor_get(t, raw.data() + dst, off, static_cast<size_t>(row) * elem);
          dst += static_cast<size_t>(row) * elem;
        }
  }
  std::vector<float> out(static_cast<size_t>(row * rows));
  if (t->type == GGML_TYPE_F32) {
    std::memcpy(out.data(), raw.data(), raw.size());
  } else {
    ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t*>(raw.data()), out.data(), static_cast<int64_t>(out.size()));
  }
  return out;
}

// ---- the tap collector ----------------------------------------------------------------------------------
// Armed for one encode with the blocks to tap; asks the scheduler only for those blocks' Q and K, and turns
// each pair into the per-patch received attention as soon as both are read (then drops them).
struct TapCollector {
  struct Wanted {
    int layer = -1;
    bool query = false;
  };
  bool armed = false;
  std::map<std::string, Wanted, std::less<>> names;  // tensor name -> what it is
  std::map<int, std::vector<float>> q, k;            // read, waiting for their pair
  std::map<int, std::vector<float>> received;        // per patch, ViT sequence order
  int heads = 0, head_dim = 0, threads = 1;
  std::string error;                                 // first failure inside the callback (reported after encode)

  void arm(const family::Family& family, const std::vector<int>& layers) {
    names.clear();
    q.clear();
    k.clear();
    received.clear();
    error.clear();
    char buf[128];
    for (int layer : layers) {
      std::snprintf(buf, sizeof(buf), family.query_tensor.c_str(), layer);
      names[buf] = {layer, true};
      std::snprintf(buf, sizeof(buf), family.key_tensor.c_str(), layer);
      names[buf] = {layer, false};
    }
    armed = !layers.empty();
  }

  bool on_tensor(ggml_tensor* t, bool ask) {
    if (!armed) return !ask;  // observe nothing; never abort
    const auto it = names.find(std::string_view(t->name));
    if (it == names.end()) return !ask;
    if (ask) return true;
    if (!error.empty()) return true;
    try {
      const Wanted w = it->second;
      if (t->ne[0] != head_dim || t->ne[1] != heads) {
        throw Error(std::string("tap tensor ") + t->name + " is [" + std::to_string(t->ne[0]) + ", " +
                    std::to_string(t->ne[1]) + ", " + std::to_string(t->ne[2]) + "], expected [" +
                    std::to_string(head_dim) + ", " + std::to_string(heads) + ", tokens]");
      }
      (w.query ? q : k)[w.layer] = read_any(t);
      if (q.count(w.layer) && k.count(w.layer)) {
        const auto& qv = q[w.layer];
        const int64_t tokens = static_cast<int64_t>(qv.size()) / (int64_t{heads} * head_dim);
        if (k[w.layer].size() != qv.size()) throw Error("tap on block " + std::to_string(w.layer) + ": Q and K differ in size");
        received[w.layer] = received_attention(qv, k[w.layer], tokens, heads, head_dim,
                                               1.0f / std::sqrt(static_cast<float>(head_dim)), threads);
        q.erase(w.layer);
        k.erase(w.layer);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
    return true;
  }

  static bool callback(ggml_tensor* t, bool ask, void* user) { return static_cast<TapCollector*>(user)->on_tensor(t, ask); }
};

}  // namespace

// ---- received attention, blocked over queries -------------------------------------------------------------

std::vector<float> received_attention(std::span<const float> q, std::span<const float> k, int64_t tokens, int heads,
                                      int head_dim, float scale, int threads) {
  check_threads(threads);
  const int64_t n = tokens, h = heads, d = head_dim;
  if (n < 1 || h < 1 || d < 1 || q.size() != static_cast<size_t>(n * h * d) || k.size() != q.size()) {
    throw Error("received_attention: q / k of " + std::to_string(q.size()) + " / " + std::to_string(k.size()) +
                " floats do not hold " + std::to_string(n) + " tokens x " + std::to_string(h) + " heads x " +
                std::to_string(d));
  }
  // Queries per block: the [n, block, heads] score matrix stays under ~16M floats (64 MiB), and twice that for
  // the softmax.
  const int64_t block = std::clamp<int64_t>((int64_t{1} << 24) / std::max<int64_t>(1, n * h), 1, std::min<int64_t>(n, 256));

  // Rows padded with zeros to a multiple of 16 floats (the dot products do not change): ggml's tiled F32 GEMM
  // (llamafile_sgemm) takes only such rows, the fallback is a dot product per (key, query) pair, ~5x slower for
  // SigLIP's 72-wide heads.
  const int64_t dp = (d + 15) / 16 * 16;
  ContextPtr ctx = make_metadata_context(16, 64);
  ggml_tensor* kt = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, dp, n, h);   // per head: [dp, n] contiguous
  ggml_tensor* qt = ggml_new_tensor_3d(ctx.get(), GGML_TYPE_F32, dp, block, h);
  ggml_tensor* weights = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, 1, block * h);  // 1 per real query, 0 for padding
  for (ggml_tensor* t : {kt, qt, weights}) ggml_set_input(t);
  // K is uploaded once and read by every query block: as an output the allocator never reuses its memory for
  // the block's intermediates (an input alone is freed after its last use in the graph, and the next block
  // would read scores where K was).
  ggml_set_output(kt);
  ggml_tensor* kq = ggml_mul_mat(ctx.get(), kt, qt);                                  // [n_k, block, h]
  ggml_tensor* attn = ggml_soft_max_ext(ctx.get(), kq, nullptr, scale, 0.0f);
  // sum over (query, head) of attn[key, query, head]: one outer product with the weight row
  ggml_tensor* sum = ggml_out_prod(ctx.get(), ggml_reshape_2d(ctx.get(), attn, n, block * h), weights);  // [n, 1]
  ggml_set_output(sum);
  ggml_cgraph* graph = ggml_new_graph_custom(ctx.get(), 64, false);
  ggml_build_forward_expand(graph, sum);

  // On the CPU: Q and K were read back from libmtmd's graph into host memory.
  Compute compute("cpu", 64);

  std::vector<double> total(static_cast<size_t>(n), 0.0);
  std::vector<float> qblock(static_cast<size_t>(block * h * dp)), w(static_cast<size_t>(block * h)), part(static_cast<size_t>(n));
  for (int64_t q0 = 0; q0 < n; q0 += block) {
    const int64_t valid = std::min(block, n - q0);
    std::fill(qblock.begin(), qblock.end(), 0.0f);
    for (int64_t hh = 0; hh < h; ++hh) {
      for (int64_t b = 0; b < valid; ++b) {
        std::memcpy(&qblock[static_cast<size_t>((hh * block + b) * dp)], &q[static_cast<size_t>(((q0 + b) * h + hh) * d)],
                    sizeof(float) * d);
      }
      for (int64_t b = 0; b < block; ++b) w[static_cast<size_t>(hh * block + b)] = b < valid ? 1.0f : 0.0f;
    }
    const auto set_block = [&] {
      ggml_backend_tensor_set(qt, qblock.data(), 0, ggml_nbytes(qt));
      ggml_backend_tensor_set(weights, w.data(), 0, ggml_nbytes(weights));
    };
    if (q0 == 0) {
      compute.run(graph, threads, [&] {
        // [token][head][d] -> [head][token][dp], once: every block reads it
        std::vector<float> buf(static_cast<size_t>(n * h * dp), 0.0f);
        for (int64_t t = 0; t < n; ++t)
          for (int64_t hh = 0; hh < h; ++hh)
            std::memcpy(&buf[static_cast<size_t>((hh * n + t) * dp)], &k[static_cast<size_t>((t * h + hh) * d)], sizeof(float) * d);
        ggml_backend_tensor_set(kt, buf.data(), 0, ggml_nbytes(kt));
        set_block();
      }, "received_attention");
    } else {
      set_block();
      compute.rerun(graph, "received_attention");
    }
    ggml_backend_tensor_get(sum, part.data(), 0, ggml_nbytes(sum));
    for (int64_t i = 0; i < n; ++i) total[static_cast<size_t>(i)] += part[static_cast<size_t>(i)];
  }
  std::vector<float> out(static_cast<size_t>(n));
  const double norm = 1.0 / static_cast<double>(n * h);  // mean over all queries and heads
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<float>(total[static_cast<size_t>(i)] * norm);
  return out;
}

// ---- prompts ----------------------------------------------------------------------------------------------

struct MtmdPrompt::Impl {
  std::unique_ptr<mtmd_input_chunks, ChunksDeleter> chunks;
  std::vector<size_t> index;  // our chunk i -> libmtmd chunk
};

MtmdPrompt::MtmdPrompt() : impl_(std::make_unique<Impl>()) {}
MtmdPrompt::~MtmdPrompt() = default;
MtmdPrompt::MtmdPrompt(MtmdPrompt&&) noexcept = default;
MtmdPrompt& MtmdPrompt::operator=(MtmdPrompt&&) noexcept = default;

// ---- the encoder ------------------------------------------------------------------------------------------

struct MtmdEncoder::Impl {
  std::filesystem::path path;
  const family::Family* family = nullptr;
  family::VisionFacts facts;
  int window_tokens = 0;
  int merge = 1;  // patches per LLM token along each side (the file's scale factor, else the family's)
  MtmdOptions options;
  std::unique_ptr<MtmdLog> log = std::make_unique<MtmdLog>();
  std::unique_ptr<TapCollector> collector = std::make_unique<TapCollector>();  // its address is libmtmd's user data
  std::unique_ptr<mtmd_context, ContextDeleter> ctx;
  bool mrope = false;
};

MtmdEncoder::MtmdEncoder(const std::filesystem::path& mmproj, const family::Family& fam, const llama_model* text_model,
                         const MtmdOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = mmproj;
  m.family = &fam;
  m.options = options;
  m.log->verbose = options.verbose;
  check_threads(options.threads);
  if (text_model == nullptr) throw Error("MtmdEncoder: no text model");
  {
    const io::GgufFile file(mmproj, "mmproj");
    const family::Family& detected = family::detect(file);
    if (&detected != &fam) {
      throw InputError(file.where() + " is a " + detected.name + " file, not " + fam.name);
    }
    if (!fam.check_file) throw Error("family " + fam.name + " has no file check: it is not served by libmtmd");
    m.facts = fam.check_file(file);
  }
  // Qwen2.5-VL's window: 112 px (clip.cpp uses 112 when the file sets none), in merged tokens
  m.merge = m.facts.merge > 0 ? m.facts.merge : fam.geometry.merge;
  if (fam.geometry.window_order) m.window_tokens = 112 / m.facts.patch_size / m.merge;
  m.collector->heads = m.facts.heads;
  m.collector->head_dim = m.facts.head_dim;
  m.collector->threads = options.threads;

  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = options.use_gpu;
  params.print_timings = false;
  params.n_threads = options.threads;
  params.media_marker = mtmd_default_marker();
  params.image_min_tokens = options.image_min_tokens;
  params.image_max_tokens = options.image_max_tokens;
  params.flash_attn_type = static_cast<llama_flash_attn_type>(options.flash_attn);
  params.cb_eval = &TapCollector::callback;
  params.cb_eval_user_data = m.collector.get();
  LogScope scope(*m.log);
  m.ctx.reset(mtmd_init_from_file(mmproj.c_str(), text_model, params));
  if (!m.ctx) throw Error(with_log("libmtmd could not load " + mmproj.string() + " with this LLM", *m.log));
  if (!mtmd_support_vision(m.ctx.get())) throw InputError("mmproj " + mmproj.string() + " has no vision encoder");
  m.mrope = mtmd_decode_use_mrope(m.ctx.get());
  if ((fam.positions == family::Positions::MRopeGrid) != m.mrope) {
    throw InputError("mmproj " + mmproj.string() + " is " + fam.name + " (" +
                     (m.mrope ? "" : "no ") + "M-RoPE in this LLM) but the family expects " +
                     (fam.positions == family::Positions::MRopeGrid ? "M-RoPE" : "1-D positions") +
                     ": do the two files belong together?");
  }
  if (fam.bidirectional_image != mtmd_decode_use_non_causal(m.ctx.get(), nullptr)) {
    throw Error("libmtmd decodes " + fam.name + " images " +
                (fam.bidirectional_image ? "causally" : "without the causal mask") +
                ", but vtprune's family table says otherwise (a different llama.cpp version?)");
  }
}

MtmdEncoder::~MtmdEncoder() = default;
MtmdEncoder::MtmdEncoder(MtmdEncoder&&) noexcept = default;
MtmdEncoder& MtmdEncoder::operator=(MtmdEncoder&&) noexcept = default;

const family::Family& MtmdEncoder::family() const { return *impl_->family; }
const std::filesystem::path& MtmdEncoder::path() const { return impl_->path; }
int MtmdEncoder::projector_dim() const { return impl_->facts.projector_dim; }
bool MtmdEncoder::uses_mrope() const { return impl_->mrope; }
const char* MtmdEncoder::marker() { return mtmd_default_marker(); }

EncoderInfo MtmdEncoder::info() const {
  EncoderInfo info;
  info.has_cls = impl_->family->geometry.has_cls;
  info.heads = impl_->facts.heads;
  info.num_layers = impl_->facts.layers;
  info.feature_layer = impl_->facts.layers - 1;  // the LLM gets the last block's output (after the merger)
  return info;
}

void MtmdEncoder::check(const Needs& needs) const {
  const Impl& m = *impl_;
  const std::string where = "encoder " + m.path.string() + " (" + m.family->name + ", libmtmd)";
  for (const TapRequest& t : needs.taps) {
    if (t.layer < 0 || t.layer >= m.facts.layers) {
      throw InputError(where + ": tap on block " + std::to_string(t.layer) + " is outside 0.." +
                       std::to_string(m.facts.layers - 1));
    }
    if ((t.cls_attention || t.cls_query) && !m.family->geometry.has_cls) {
      throw InputError(where + ": a method asks for [CLS] attention on block " + std::to_string(t.layer) +
                       ", but this ViT has no CLS token");
    }
    if (t.cls_attention || t.cls_query || t.keys || t.attention) {
      throw InputError(where + ": only received-attention taps are available through libmtmd (block " +
                       std::to_string(t.layer) + " asks for " +
                       (t.keys ? "keys" : t.attention ? "full attention maps" : "the CLS row") + ")");
    }
  }
  if (needs.cls_features) throw InputError(where + ": this ViT has no CLS token (a method asks for its features)");
}

MtmdPrompt MtmdEncoder::tokenize(const std::string& text, std::span<const RgbImage> images, bool add_special) const {
  const Impl& m = *impl_;
  int markers = 0;
  const std::string marker_text = marker();
  for (size_t at = text.find(marker_text); at != std::string::npos; at = text.find(marker_text, at + marker_text.size())) ++markers;
  if (markers != static_cast<int>(images.size())) {
    throw InputError("the prompt has " + std::to_string(markers) + " image markers but " +
                     std::to_string(images.size()) + " images were given");
  }
  std::vector<std::unique_ptr<mtmd_bitmap, BitmapDeleter>> bitmaps;
  std::vector<const mtmd_bitmap*> raw;
  for (const RgbImage& img : images) {
    if (img.width < 1 || img.height < 1 || img.pixels.size() != static_cast<size_t>(img.width) * img.height * 3) {
      throw InputError("image of " + std::to_string(img.width) + "x" + std::to_string(img.height) + " with " +
                       std::to_string(img.pixels.size()) + " bytes is not RGB");
    }
    bitmaps.emplace_back(mtmd_bitmap_init(static_cast<uint32_t>(img.width), static_cast<uint32_t>(img.height), img.pixels.data()));
    // the image's index as its id: every chunk libmtmd makes of it (an overview and tiles) carries it
    mtmd_bitmap_set_id(bitmaps.back().get(), std::to_string(raw.size()).c_str());
    raw.push_back(bitmaps.back().get());
  }
  MtmdPrompt prompt;
  prompt.impl_->chunks.reset(mtmd_input_chunks_init());
  mtmd_input_text input{text.c_str(), text.size(), add_special, /*parse_special=*/true};
  LogScope scope(*m.log);
  m.log->errors.clear();
  const int32_t rc = mtmd_tokenize(m.ctx.get(), prompt.impl_->chunks.get(), &input, raw.data(), raw.size());
  if (rc != 0) throw InputError(with_log("libmtmd could not tokenise the prompt (code " + std::to_string(rc) + ")", *m.log));
  int last_image = -1, tile = 0;
  const size_t n = mtmd_input_chunks_size(prompt.impl_->chunks.get());
  for (size_t i = 0; i < n; ++i) {
    const mtmd_input_chunk* c = mtmd_input_chunks_get(prompt.impl_->chunks.get(), i);
    MtmdChunk out;
    const auto type = mtmd_input_chunk_get_type(c);
    if (type == MTMD_INPUT_CHUNK_TYPE_TEXT) {
      size_t n_tokens = 0;
      const llama_token* tokens = mtmd_input_chunk_get_tokens_text(c, &n_tokens);
      out.tokens.assign(tokens, tokens + n_tokens);
      out.n_pos = static_cast<int32_t>(n_tokens);
    } else if (type == MTMD_INPUT_CHUNK_TYPE_IMAGE) {
      out.image = true;
      const char* id = mtmd_input_chunk_get_id(c);
      out.image_index = id != nullptr ? std::atoi(id) : -1;
      if (out.image_index < 0 || out.image_index >= static_cast<int>(images.size()) || out.image_index < last_image) {
        throw Error("libmtmd's image chunk " + std::to_string(i) + " does not name one of the " +
                    std::to_string(images.size()) + " images in order (id '" + (id ? id : "") + "')");
      }
      tile = out.image_index == last_image ? tile + 1 : 0;
      last_image = out.image_index;
      out.tile = tile;
      const mtmd_image_tokens* it = mtmd_input_chunk_get_tokens_image(c);
      out.n_tokens = static_cast<int64_t>(mtmd_image_tokens_get_n_tokens(it));
      out.n_pos = mtmd_input_chunk_get_n_pos(c);
      if (m.family->geometry.grid == family::TokenGrid::Square) {
        // a fixed-size square tile (Gemma 3's 16 x 16 pooled grid)
        out.grid_w = out.grid_h = static_cast<int>(std::lround(std::sqrt(static_cast<double>(out.n_tokens))));
      } else {
        // the decoder's grid: where llama.cpp's helper places the last token (row-major, x fastest)
        const mtmd_decoder_pos last = mtmd_image_tokens_get_decoder_pos(it, 0, static_cast<size_t>(out.n_tokens - 1));
        out.grid_w = m.mrope ? static_cast<int>(last.x) + 1 : static_cast<int>(out.n_tokens);
        out.grid_h = m.mrope ? static_cast<int>(last.y) + 1 : 1;
      }
      if (int64_t{out.grid_w} * out.grid_h != out.n_tokens) {
        throw Error("libmtmd's image chunk has " + std::to_string(out.n_tokens) + " tokens on a " +
                    std::to_string(out.grid_h) + "x" + std::to_string(out.grid_w) + " grid");
      }
    } else {
      throw InputError("the prompt produced a non-image media chunk (audio is not supported)");
    }
    prompt.chunks_.push_back(std::move(out));
    prompt.impl_->index.push_back(i);
  }
  return prompt;
}

EncoderResult MtmdEncoder::encode(const MtmdPrompt& prompt, size_t chunk, const Needs& needs) {
  Impl& m = *impl_;
  if (chunk >= prompt.chunks().size() || !prompt.chunks()[chunk].image) {
    throw Error("MtmdEncoder::encode: chunk " + std::to_string(chunk) + " is not an image chunk");
  }
  check(needs);
  const MtmdChunk& c = prompt.chunks()[chunk];
  const mtmd_input_chunk* raw = mtmd_input_chunks_get(prompt.impl_->chunks.get(), prompt.impl_->index[chunk]);
  std::vector<int> layers;
  for (const TapRequest& t : needs.taps) layers.push_back(t.layer);

  LogScope scope(*m.log);
  m.log->errors.clear();
  m.collector->arm(*m.family, layers);
  const auto start = std::chrono::steady_clock::now();
  const int32_t rc = mtmd_encode_chunk(m.ctx.get(), raw);
  const auto stop = std::chrono::steady_clock::now();
  m.collector->armed = false;
  if (rc != 0) throw Error(with_log("libmtmd failed to encode image " + std::to_string(c.image_index + 1) + " (code " + std::to_string(rc) + ")", *m.log));
  if (!m.collector->error.empty()) throw Error("encoder " + m.path.string() + ": " + m.collector->error);

  EncoderResult result;
  result.info = info();
  result.info.grid = Grid{c.grid_h, c.grid_w};
  const int unit = m.merge * m.merge;
  result.info.queries = c.n_tokens * unit + (m.family->geometry.has_cls ? 1 : 0);
  result.dim = m.facts.projector_dim;
  result.encode_ms = std::chrono::duration<double, std::milli>(stop - start).count();
  const float* embd = mtmd_get_output_embd(m.ctx.get());
  if (embd == nullptr) throw Error("libmtmd returned no embeddings for image " + std::to_string(c.image_index + 1));
  result.features.assign(embd, embd + static_cast<size_t>(c.n_tokens) * static_cast<size_t>(result.dim));
  for (size_t i = 0; i < result.features.size(); ++i) {
    if (!std::isfinite(result.features[i])) {
      throw Error("encoder " + m.path.string() + ": embedding of token " + std::to_string(i / static_cast<size_t>(result.dim)) +
                  " of image " + std::to_string(c.image_index + 1) + " is not finite");
    }
  }
  result.projected_features = true;
  result.projected_dim = result.dim;

  for (const TapRequest& t : needs.taps) {
    const auto it = m.collector->received.find(t.layer);
    if (it == m.collector->received.end()) {
      char q[128], k[128];
      std::snprintf(q, sizeof(q), m.family->query_tensor.c_str(), t.layer);
      std::snprintf(k, sizeof(k), m.family->key_tensor.c_str(), t.layer);
      throw Error("encoder " + m.path.string() + ": libmtmd's graph never produced " + q + " / " + k +
                  " (does this llama.cpp name the tensors differently?)");
    }
    std::vector<float> per_patch = it->second;
    if (static_cast<int64_t>(per_patch.size()) != result.info.queries) {
      throw Error("encoder " + m.path.string() + ": block " + std::to_string(t.layer) + " has " +
                  std::to_string(per_patch.size()) + " tokens, expected " + std::to_string(result.info.queries));
    }
    // per patch (ViT order) -> per LLM token: mean over each merge unit, then window order -> raster
    std::vector<float> per_token;
    if (unit == 1) {
      per_token = std::move(per_patch);
    } else if (m.family->geometry.units == family::UnitLayout::RasterBlocks) {
      per_token = family::block_mean(per_patch, c.grid_h, c.grid_w, m.merge);
    } else {
      per_token = family::merge_unit_mean(per_patch, unit);
    }
    if (m.family->geometry.window_order) per_token = family::window_to_raster(per_token, c.grid_h, c.grid_w, m.window_tokens);
    EncoderResult::Tap tap;
    tap.layer = t.layer;
    tap.received = std::move(per_token);
    result.taps.push_back(std::move(tap));
  }
  return result;
}

}  // namespace vtprune::vision
