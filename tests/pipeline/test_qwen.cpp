// Qwen2.5-VL end to end through libmtmd, on a generated tiny pair in llama.cpp's exact layout
// (`make-test-model --shape qwen2.5-vl`): the answer with `none` equals llama-mtmd-cli's, first-token logits
// equal libmtmd's own helper path, keeping everything through the pruning code equals `none`, every method
// runs or refuses as the family table says, and the taps read through the eval callback equal a brute-force
// computation from the same block's Q and K (with the window order llama.cpp's graph itself uses).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "ggml.h"
#include "gguf.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "test_pair.h"
#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/pipeline.h"

namespace vtprune::pipeline {
namespace {

namespace fs = std::filesystem;

constexpr const char* kQuestion = "What is in the image?";

class QwenVlm : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string log;
    pair_ = test::TestPair::make("qwen2.5-vl", &log);
    ASSERT_NE(pair_, nullptr) << log;
    dir_ = &pair_->dir;
    vlm_ = pair_->vlm.get();
    image_ = &pair_->image;
  }
  static void TearDownTestSuite() { pair_.reset(); }
  static Request request(const std::string& method, Budget budget, int max_tokens = 8) {
    Request r;
    r.images.push_back(*image_);
    r.prompt = kQuestion;
    r.method = method;
    r.budget = budget;
    r.sampling.max_tokens = max_tokens;
    return r;
  }
  // The next-token logits after the prompt (prefill only).
  static std::vector<float> first_logits(const std::string& method, Budget budget, std::vector<std::string> options = {}) {
    Request r = request(method, budget, 0);
    r.options = std::move(options);
    vlm_->run(r);
    return vlm_->session().last_logits();
  }
  static inline std::unique_ptr<test::TestPair> pair_;
  static inline fs::path* dir_ = nullptr;
  static inline Vlm* vlm_ = nullptr;
  static inline std::vector<uint8_t>* image_ = nullptr;
};

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::abs(x));
  return m;
}

TEST_F(QwenVlm, FamilyAndEncoder) {
  EXPECT_EQ(vlm_->family().name, "qwen2.5-vl");
  EXPECT_EQ(vlm_->encoder(), family::Encoder::Mtmd);
  EXPECT_TRUE(vlm_->session().uses_mrope());
  const EncoderInfo info = vlm_->encoder_info();
  EXPECT_FALSE(info.has_cls);
  EXPECT_GT(info.num_layers, 1);
}

// llama.cpp's own multimodal CLI on the same files, image, prompt and settings: the same chat text and the
// same greedy answer. --jinja: llama-mtmd-cli's default is llama.cpp's built-in template guess (ChatML without
// Qwen's default system message); vtprune renders the file's own Jinja template, as llama-server and
// transformers do. Its JSONL log is read (plain stdout loses pieces at exit): the prompt it formatted
// (`formatted_chat.prompt`, with -v) and the pieces it generated (level "none": a "\n" that ends the prompt,
// then one entry per token).
TEST_F(QwenVlm, NoneAnswersLikeLlamaMtmdCli) {
  const fs::path cli = VTPRUNE_MTMD_CLI;
  ASSERT_TRUE(fs::exists(cli)) << cli;
  constexpr int kTokens = 12;
  const Result ours = vlm_->run(request("none", Budget::all(), kTokens));
  ASSERT_GT(ours.n_generated, 0);
  // llama-mtmd-cli's logger is an asynchronous thread whose queue is not flushed at exit (llama.cpp #22142): on a
  // busy machine the last pieces can be missing. It generates more than compared, and runs again when it still
  // came up short.
  std::string formatted, out;
  std::vector<std::string> pieces;
  for (int attempt = 0; attempt < 5 && pieces.size() < static_cast<size_t>(kTokens) + 2; ++attempt) {
    const std::string cmd = cli.string() + " -m " + (*dir_ / "llm.gguf").string() + " --mmproj " + (*dir_ / "mmproj.gguf").string() +
                            " --image " + (*dir_ / "image.png").string() + " -p '" + kQuestion + "' -n " +
                            std::to_string(kTokens * 8) + " --temp 0 -t 1 -c 2048 --jinja -v --log-jsonl 2>/dev/null";
    ASSERT_EQ(test::run_command(cmd, &out), 0) << cmd << "\n" << out.substr(0, 2000);
    pieces.clear();
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line.front() != '{') continue;
      const auto entry = nlohmann::json::parse(line, nullptr, false);
      if (!entry.is_object() || !entry.contains("msg")) continue;
      const std::string msg = entry["msg"].get<std::string>();
      constexpr std::string_view kFormatted = "formatted_chat.prompt: ";
      if (msg.starts_with(kFormatted)) formatted = msg.substr(kFormatted.size());
      if (entry.value("level", "") == "none") pieces.push_back(msg);
    }
  }
  const std::string text = llm::render_chat(vlm_->session().chat_template(),
                                            std::vector<llm::ChatMessage>{{"user", std::string(mtmd_default_marker()) + kQuestion}});
  EXPECT_EQ(formatted, text + "\n") << "llama-mtmd-cli logs the prompt with a trailing newline";
  ASSERT_GE(pieces.size(), static_cast<size_t>(ours.n_generated) + 2) << out.substr(0, 2000);
  EXPECT_EQ(pieces[0], "\n");  // eval_message's line end before the answer
  // llama-mtmd-cli prints control tokens (<|box_start|>, ...) as text; vtprune's answer leaves them out, as
  // llama-server does by default
  std::string theirs;
  for (int i = 1; i <= ours.n_generated; ++i) {
    const std::string& piece = pieces[static_cast<size_t>(i)];
    if (!(piece.starts_with("<|") && piece.ends_with("|>"))) theirs += piece;
  }
  EXPECT_EQ(ours.answer, theirs);
  if (ours.stop == llm::StopReason::eog) {
    EXPECT_EQ(pieces[static_cast<size_t>(ours.n_generated) + 1], "\n");
  }
  EXPECT_EQ(ours.images.at(0).tokens_in, ours.tokens_kept);
}

// The prompt's chunks as the pipeline builds them for `none`: text tokens, the image on its M-RoPE grid, text.
std::vector<llm::Chunk> none_prompt(const fs::path& dir, llm::Session& session, const std::vector<uint8_t>& image) {
  vision::MtmdEncoder encoder(dir / "mmproj.gguf", family::by_name("qwen2.5-vl"), session.llama_model_handle(), {.threads = 1});
  const std::vector<vision::RgbImage> images = {vision::decode_image(image, "image.png")};
  const std::string text = llm::render_chat(session.chat_template(),
                                            std::vector<llm::ChatMessage>{{"user", std::string(vision::MtmdEncoder::marker()) + kQuestion}});
  const vision::MtmdPrompt prompt = encoder.tokenize(text, images);
  std::vector<llm::Chunk> chunks;
  for (size_t c = 0; c < prompt.chunks().size(); ++c) {
    const vision::MtmdChunk& ch = prompt.chunks()[c];
    if (!ch.image) {
      chunks.push_back(llm::Chunk::from_tokens(ch.tokens));
      continue;
    }
    const vision::EncoderResult e = encoder.encode(prompt, c, {});
    std::vector<int32_t> ys, xs;
    for (int64_t i = 0; i < ch.n_tokens; ++i) {
      ys.push_back(static_cast<int32_t>(i / ch.grid_w));
      xs.push_back(static_cast<int32_t>(i % ch.grid_w));
    }
    chunks.push_back(llm::Chunk::from_grid_embeddings(e.features, ch.n_tokens, ys, xs, ch.n_pos));
  }
  return chunks;
}

float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// One batch of embedding rows (text through token_embd, positions set per row) against one decode per chunk
// (text as token batches, libllama spreading their positions over the M-RoPE axes): the same next-token logits
// up to ggml's batch-size-dependent CPU matmul kernels. Some round the activations to F16 before the F16 weight
// product and some do not, so the same row gets ~2^-11 relative error in one split and not in another (a
// text-only prompt split the same way is bit-identical); through this model that is < 2e-3 of the largest
// logit. A wrong position or row moves logits by O(1).
TEST_F(QwenVlm, SingleBatchEqualsOneDecodePerChunk) {
  const std::string llm_path = (*dir_ / "llm.gguf").string();
  llm::Session single(llm_path, {.n_ctx = 2048, .threads = 1});
  llm::Session per_chunk(llm_path, {.n_ctx = 2048, .threads = 1, .text_as_embeddings = false});
  const std::vector<llm::Chunk> prompt = none_prompt(*dir_, single, *image_);
  const llm::PrefillResult a = single.prefill(prompt);
  const llm::PrefillResult b = per_chunk.prefill(prompt);
  EXPECT_TRUE(a.single_batch);
  EXPECT_FALSE(b.single_batch);
  EXPECT_EQ(a.n_tokens, b.n_tokens);
  EXPECT_EQ(a.n_positions, b.n_positions);
  const std::vector<float> la = single.last_logits(), lb = per_chunk.last_logits();
  EXPECT_LE(max_difference(la, lb), 5e-3f * max_abs(lb)) << max_difference(la, lb) << " of " << max_abs(lb);
}

// libmtmd's helper (mtmd_helper_eval_chunks: what llama-mtmd-cli decodes with) on the same prompt: the same
// first-token logits. They differ only by float rounding: libmtmd decodes text and image as separate batches,
// vtprune as one batch of embedding rows, so the matmuls accumulate in other orders (observed ~1e-6 of the
// largest logit on this 2-layer model; 1e-4 leaves room for other CPUs' kernels and still catches any wrong
// position or row, which moves logits by O(1)).
TEST_F(QwenVlm, FirstTokenLogitsEqualLibmtmdHelper) {
  const std::vector<float> ours = first_logits("none", Budget::all());
  llm::Session per_chunk((*dir_ / "llm.gguf").string(), {.n_ctx = 2048, .threads = 1, .text_as_embeddings = false});
  per_chunk.prefill(none_prompt(*dir_, per_chunk, *image_));
  const std::vector<float> ours_per_chunk = per_chunk.last_logits();

  llama_model_params mp = llama_model_default_params();
  llama_model* model = llama_model_load_from_file((*dir_ / "llm.gguf").c_str(), mp);
  ASSERT_NE(model, nullptr);
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 2048;
  cp.n_threads = cp.n_threads_batch = 1;
  llama_context* lctx = llama_init_from_model(model, cp);
  ASSERT_NE(lctx, nullptr);
  mtmd_context_params mparams = mtmd_context_params_default();
  mparams.use_gpu = false;
  mparams.n_threads = 1;
  mparams.print_timings = false;
  mtmd_context* mctx = mtmd_init_from_file((*dir_ / "mmproj.gguf").c_str(), model, mparams);
  ASSERT_NE(mctx, nullptr);

  const vision::RgbImage rgb = vision::decode_image(*image_, "image.png");
  mtmd_bitmap* bitmap = mtmd_bitmap_init(rgb.width, rgb.height, rgb.pixels.data());
  const std::string text = llm::render_chat(vlm_->session().chat_template(),
                                            std::vector<llm::ChatMessage>{{"user", std::string(mtmd_default_marker()) + kQuestion}});
  mtmd_input_chunks* chunks = mtmd_input_chunks_init();
  mtmd_input_text input{text.c_str(), text.size(), true, true};
  const mtmd_bitmap* bitmaps[] = {bitmap};
  ASSERT_EQ(mtmd_tokenize(mctx, chunks, &input, bitmaps, 1), 0);
  llama_pos n_past = 0;
  ASSERT_EQ(mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 2048, true, &n_past), 0);
  const float* logits = llama_get_logits_ith(lctx, -1);
  const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  ASSERT_EQ(static_cast<int>(ours.size()), n_vocab);
  const std::vector<float> theirs(logits, logits + n_vocab);
  // decoded the way libmtmd decodes (one batch per chunk): the same arithmetic, so the same floats
  EXPECT_EQ(ours_per_chunk, theirs) << "max |difference| " << max_difference(ours_per_chunk, theirs);
  // the pipeline's single batch: within ggml's batch-size-dependent rounding (see SingleBatchEqualsOneDecodePerChunk)
  EXPECT_LE(max_difference(ours, theirs), 5e-3f * max_abs(theirs)) << max_difference(ours, theirs) << " of " << max_abs(theirs);

  mtmd_input_chunks_free(chunks);
  mtmd_bitmap_free(bitmap);
  mtmd_free(mctx);
  llama_free(lctx);
  llama_model_free(model);
}

// Every token kept, through the pruning code's gather and grid positions (and, for the attention methods,
// with taps on): exactly `none`'s computation. HiPrune with its official Qwen registers does NOT keep every
// token at the full budget (a register can land on a buffer token again), so it runs with registers=strict.
TEST_F(QwenVlm, KeepingEverythingThroughThePruningPathEqualsNone) {
  const std::vector<float> none = first_logits("none", Budget::all());
  for (const auto& [method, options] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"random", {}}, {"fastervlm", {}}, {"hiprune", {"registers=strict"}}}) {
    SCOPED_TRACE(method);
    const std::vector<float> all = first_logits(method, Budget::all(), options);
    EXPECT_EQ(all, none);
  }
}

// Each method at every token, about a third and about a ninth: runs (official or adapted) with fewer prompt
// tokens and less KV, or refuses with the family's reason.
TEST_F(QwenVlm, EveryMethodRunsOrRefusesAsTheFamilyTableSays) {
  const Result full = vlm_->run(request("none", Budget::all(), 2));
  const int64_t n = full.tokens_in;
  ASSERT_GT(n, 9);
  for (const MethodInfo& m : methods()) {
    SCOPED_TRACE(m.name);
    const family::Family& fam = vlm_->family();
    const auto rule = std::find_if(fam.methods.begin(), fam.methods.end(), [&](const family::MethodRule& r) { return r.method == m.name; });
    ASSERT_NE(rule, fam.methods.end()) << "every method needs an entry in the qwen2.5-vl family";
    if (rule->support == family::Support::Refused) {
      try {
        vlm_->run(request(m.name, Budget::tokens(n / 3), 1));
        ADD_FAILURE() << "expected a refusal";
      } catch (const InputError& e) {
        EXPECT_NE(std::string(e.what()).find("qwen2.5-vl"), std::string::npos) << e.what();
      }
      continue;
    }
    int64_t last_kept = n + 1, last_prompt = full.n_prompt_tokens + 1, last_kv = full.kv_bytes + 1;
    for (Budget b : {Budget::all(), Budget::fraction(0.334), Budget::fraction(0.112)}) {
      SCOPED_TRACE(b.to_string());
      if (m.budget_use == BudgetUse::Ignored && b.kind != Budget::Kind::All) continue;
      const Result r = vlm_->run(request(m.name, b, 1));
      ASSERT_EQ(r.images.size(), 1u);
      const int64_t budget = b.resolve(n);
      if (m.name == "none" || b.kind == Budget::Kind::All) {
        EXPECT_LE(r.tokens_kept, n);
      } else if (m.budget_use == BudgetUse::Exact && m.name != "hiprune") {
        EXPECT_EQ(r.tokens_kept, budget);
      } else {
        // HiPrune's official Qwen registers may collapse onto buffers (fewer kept, reported); caps / pooling keep
        // at most the budget
        EXPECT_LE(r.tokens_kept, budget);
        EXPECT_GE(r.tokens_kept, 1);
      }
      if (m.budget_use == BudgetUse::Exact) {
        EXPECT_LT(r.tokens_kept, last_kept + (b.kind == Budget::Kind::All ? 1 : 0));
      } else {  // adaptive (DFMR) or pooled: never more than with a larger budget
        EXPECT_LE(r.tokens_kept, last_kept);
      }
      EXPECT_EQ(r.n_prompt_tokens, full.n_prompt_tokens - n + r.tokens_kept);
      EXPECT_LE(r.n_prompt_tokens, last_prompt);
      EXPECT_LE(r.kv_bytes, last_kv);
      last_kept = r.tokens_kept, last_prompt = r.n_prompt_tokens, last_kv = r.kv_bytes;
      if (m.name == "hiprune" && b.kind != Budget::Kind::All) {
        const auto& stats = r.images[0].reduction.stats;
        EXPECT_EQ(r.tokens_kept + static_cast<int64_t>(stats.at("duplicates_collapsed")), budget);
      }
    }
  }
}

TEST_F(QwenVlm, BudgetThatRoundsToNoTokenIsTheCallersError) {
  EXPECT_THROW(vlm_->run(request("hiprune", Budget::fraction(0.001), 1)), InputError);
  EXPECT_THROW(vlm_->run(request("prumerge", Budget::tokens(8), 1)), InputError);
}

// ---- taps against brute force ------------------------------------------------------------------------

struct Capture {
  std::map<std::string, std::vector<float>> tensors;  // name -> data (F32, contiguous)
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<int32_t> window_idx;                    // what llama.cpp's graph restores raster order with
  std::vector<std::string> wanted;
  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* c = static_cast<Capture*>(user);
    const bool is_window_gather = t->op == GGML_OP_GET_ROWS && t->src[1] && std::strcmp(t->src[1]->name, "window_idx") == 0;
    const bool named = std::find(c->wanted.begin(), c->wanted.end(), std::string(t->name)) != c->wanted.end();
    if (ask) return named || is_window_gather;
    if (named) {
      std::vector<float> v(static_cast<size_t>(ggml_nelements(t)));
      if (t->type == GGML_TYPE_F32 && ggml_is_contiguous(t)) ggml_backend_tensor_get(t, v.data(), 0, ggml_nbytes(t));
      c->tensors[t->name] = std::move(v);
      c->shapes[t->name] = {t->ne[0], t->ne[1], t->ne[2]};
    }
    if (is_window_gather) {
      c->window_idx.resize(static_cast<size_t>(ggml_nelements(t->src[1])));
      ggml_backend_tensor_get(t->src[1], c->window_idx.data(), 0, ggml_nbytes(t->src[1]));
    }
    return true;
  }
};

// softmax(q k^T / sqrt(d)) over every key, in double: the attention each key receives, mean over heads and queries.
std::vector<double> brute_force_received(const std::vector<float>& q, const std::vector<float>& k, int64_t d, int64_t h, int64_t n) {
  std::vector<double> received(static_cast<size_t>(n), 0.0), logits(static_cast<size_t>(n));
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t head = 0; head < h; ++head) {
    for (int64_t qi = 0; qi < n; ++qi) {
      double mx = -1e300;
      for (int64_t ki = 0; ki < n; ++ki) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += double{q[static_cast<size_t>((qi * h + head) * d + c)]} * k[static_cast<size_t>((ki * h + head) * d + c)];
        logits[static_cast<size_t>(ki)] = dot * scale;
        mx = std::max(mx, logits[static_cast<size_t>(ki)]);
      }
      double sum = 0;
      for (double& l : logits) sum += (l = std::exp(l - mx));
      for (int64_t ki = 0; ki < n; ++ki) received[static_cast<size_t>(ki)] += logits[static_cast<size_t>(ki)] / sum;
    }
  }
  for (double& r : received) r /= static_cast<double>(h * n);
  return received;
}

TEST_F(QwenVlm, TapsEqualBruteForceFromTheSameBlocksQueryAndKey) {
  const fs::path llm_path = *dir_ / "llm.gguf", mmproj_path = *dir_ / "mmproj.gguf";
  llama_model_params mp = llama_model_default_params();
  llama_model* model = llama_model_load_from_file(llm_path.c_str(), mp);
  ASSERT_NE(model, nullptr);
  const family::Family& fam = family::by_name("qwen2.5-vl");
  vision::MtmdEncoder encoder(mmproj_path, fam, model, {.threads = 1});
  const EncoderInfo info = encoder.info();
  const std::vector<vision::RgbImage> images = {vision::decode_image(*image_, "image.png")};
  const std::string text = std::string(vision::MtmdEncoder::marker()) + kQuestion;
  const vision::MtmdPrompt prompt = encoder.tokenize(text, images);
  size_t image_chunk = 0;
  while (!prompt.chunks()[image_chunk].image) ++image_chunk;
  const vision::MtmdChunk& chunk = prompt.chunks()[image_chunk];
  Needs needs;
  for (int layer : {1, info.num_layers - 1}) needs.add({.layer = layer, .received = true});
  const vision::EncoderResult ours = encoder.encode(prompt, image_chunk, needs);
  ASSERT_EQ(ours.taps.size(), 2u);

  // The same encode, observed by this test alone: Q / K of both blocks and llama.cpp's own window index.
  Capture capture;
  char name[64];
  for (int layer : {1, info.num_layers - 1}) {
    std::snprintf(name, sizeof name, "Qcur_rope-%d", layer);
    capture.wanted.push_back(name);
    std::snprintf(name, sizeof name, "Kcur_rope-%d", layer);
    capture.wanted.push_back(name);
  }
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = false;
  params.n_threads = 1;
  params.print_timings = false;
  params.cb_eval = &Capture::callback;
  params.cb_eval_user_data = &capture;
  mtmd_context* mctx = mtmd_init_from_file(mmproj_path.c_str(), model, params);
  ASSERT_NE(mctx, nullptr);
  mtmd_bitmap* bitmap = mtmd_bitmap_init(images[0].width, images[0].height, images[0].pixels.data());
  mtmd_input_chunks* chunks = mtmd_input_chunks_init();
  mtmd_input_text input{text.c_str(), text.size(), true, true};
  const mtmd_bitmap* bitmaps[] = {bitmap};
  ASSERT_EQ(mtmd_tokenize(mctx, chunks, &input, bitmaps, 1), 0);
  capture.tensors.clear();  // the warm-up encode at load time
  capture.window_idx.clear();
  ASSERT_EQ(mtmd_encode_chunk(mctx, mtmd_input_chunks_get(chunks, image_chunk)), 0);

  // llama.cpp's window order is the one vtprune reorders with
  const std::vector<int32_t> window = family::window_positions(chunk.grid_h, chunk.grid_w, 112 / 14 / 2);
  ASSERT_EQ(capture.window_idx.size(), window.size());
  EXPECT_EQ(capture.window_idx, window);
  // and the windows are not trivial on this image (it spans several of them)
  bool identity = true;
  for (size_t i = 0; i < window.size(); ++i) identity = identity && window[i] == static_cast<int32_t>(i);
  EXPECT_FALSE(identity);

  for (size_t ti = 0; ti < ours.taps.size(); ++ti) {
    const int layer = ours.taps[ti].layer;
    SCOPED_TRACE(layer);
    std::snprintf(name, sizeof name, "Qcur_rope-%d", layer);
    const std::string qn = name;
    std::snprintf(name, sizeof name, "Kcur_rope-%d", layer);
    const std::string kn = name;
    ASSERT_TRUE(capture.tensors.count(qn) && capture.tensors.count(kn));
    const auto& shape = capture.shapes[qn];
    const std::vector<double> per_patch = brute_force_received(capture.tensors[qn], capture.tensors[kn], shape[0], shape[1], shape[2]);
    // per merged token: mean of its 4 consecutive patches; then raster order through llama.cpp's own index
    const int64_t n_tokens = shape[2] / 4;
    ASSERT_EQ(n_tokens, chunk.n_tokens);
    std::vector<double> expected(static_cast<size_t>(n_tokens));
    for (int64_t r = 0; r < n_tokens; ++r) {
      const int64_t w = capture.window_idx[static_cast<size_t>(r)];
      double s = 0;
      for (int i = 0; i < 4; ++i) s += per_patch[static_cast<size_t>(w * 4 + i)];
      expected[static_cast<size_t>(r)] = s / 4;
    }
    const auto& got = ours.taps[ti].received;
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      // float32 softmax and sums over ~250 keys against float64: 1e-5 relative (float32 rounding of the
      // scores and exp is ~1e-7 each; a wrong key, query or order is off by O(1))
      EXPECT_NEAR(got[i], expected[i], 1e-5 * expected[i] + 1e-9) << i;
    }
  }
  mtmd_input_chunks_free(chunks);
  mtmd_bitmap_free(bitmap);
  mtmd_free(mctx);
  llama_model_free(model);
}

}  // namespace
}  // namespace vtprune::pipeline


namespace vtprune::pipeline {
namespace {

// A copy of `from` with one metadata change, written with ggml's own GGUF writer.
void copy_gguf_with(const fs::path& from, const fs::path& to, const std::function<void(gguf_context*)>& edit) {
  ggml_context* data = nullptr;
  gguf_init_params params{};
  params.no_alloc = false;
  params.ctx = &data;
  gguf_context* in = gguf_init_from_file(from.c_str(), params);
  ASSERT_NE(in, nullptr);
  gguf_context* out = gguf_init_empty();
  gguf_set_kv(out, in);
  edit(out);
  for (int64_t i = 0; i < gguf_get_n_tensors(in); ++i) gguf_add_tensor(out, ggml_get_tensor(data, gguf_get_tensor_name(in, i)));
  ASSERT_TRUE(gguf_write_to_file(out, to.c_str(), false));
  gguf_free(out);
  gguf_free(in);
  ggml_free(data);
}

// What libmtmd would assert on (and so abort the process with) is one clear error from vtprune's own check of
// the file first; a projector type without a family entry is refused by name.
TEST_F(QwenVlm, BadMmprojFilesAreOneClearError) {
  const fs::path bad = test::temp_dir("qwen-bad");
  const auto load = [&](const fs::path& mmproj) {
    VlmParams p;
    p.llm_path = (*dir_ / "llm.gguf").string();
    p.mmproj_path = mmproj.string();
    p.threads = 1;
    p.n_ctx = 512;
    Vlm vlm(p);
  };
  const auto expect_error = [&](const fs::path& mmproj, const std::string& needle) {
    try {
      load(mmproj);
      ADD_FAILURE() << mmproj << " loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  // a projector type vtprune has no geometry for (libmtmd knows it)
  copy_gguf_with(*dir_ / "mmproj.gguf", bad / "gemma3.gguf", [](gguf_context* g) { gguf_set_val_str(g, "clip.projector_type", "gemma3"); });
  expect_error(bad / "gemma3.gguf", "projector type 'gemma3'");
  // metadata that disagrees with the tensors: libmtmd would build a graph with mismatched shapes
  copy_gguf_with(*dir_ / "mmproj.gguf", bad / "ff.gguf", [](gguf_context* g) { gguf_set_val_u32(g, "clip.vision.feed_forward_length", 96); });
  expect_error(bad / "ff.gguf", "v.blk.0.ffn_gate.weight");
  // absurd sizes
  copy_gguf_with(*dir_ / "mmproj.gguf", bad / "heads.gguf", [](gguf_context* g) { gguf_set_val_u32(g, "clip.vision.attention.head_count", 0); });
  expect_error(bad / "heads.gguf", "head_count");
  // truncated: the tensor data ends early
  {
    std::ifstream in(*dir_ / "mmproj.gguf", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(bad / "truncated.gguf", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  expect_error(bad / "truncated.gguf", "truncated");
  // the CLI: one line and a non-zero exit
  std::string out;
  const int rc = test::run_command(test::vtprune_binary().string() + " run -m " + (*dir_ / "llm.gguf").string() + " --mmproj " +
                                       (bad / "gemma3.gguf").string() + " --image " + (*dir_ / "image.png").string() + " -n 1 -t 1",
                                   &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("vtprune: error:"), std::string::npos) << out;
  EXPECT_NE(out.find("gemma3"), std::string::npos) << out;
}

}  // namespace
}  // namespace vtprune::pipeline
