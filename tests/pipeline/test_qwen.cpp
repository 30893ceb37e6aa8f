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
#include "mtmd_reference.h"
#include "test_pair.h"
#include "test_support.h"
#include "vtprune/family.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/pipeline.h"

namespace vtprune::pipeline {
namespace {

namespace fs = std::filesystem;

constexpr const char* kQuestion = test::kPairQuestion;
constexpr char kQwenShape[] = "qwen2.5-vl";

class QwenVlm : public test::PairSuite<kQwenShape> {};

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
  const test::MtmdCliRun cli_run = test::run_llama_mtmd_cli(cli, *dir_, kQuestion, kTokens);
  const std::string& formatted = cli_run.formatted;
  const std::vector<std::string>& pieces = cli_run.pieces;
  const std::string& out = cli_run.log;
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

  const std::string text = llm::render_chat(vlm_->session().chat_template(),
                                            std::vector<llm::ChatMessage>{{"user", std::string(mtmd_default_marker()) + kQuestion}});
  const std::vector<float> theirs = test::libmtmd_helper_logits(*dir_, text, vision::decode_image(*image_, "image.png"));
  ASSERT_EQ(ours.size(), theirs.size());
  // decoded the way libmtmd decodes (one batch per chunk): the same arithmetic, so the same floats
  EXPECT_EQ(ours_per_chunk, theirs) << "max |difference| " << max_difference(ours_per_chunk, theirs);
  // the pipeline's single batch: within ggml's batch-size-dependent rounding (see SingleBatchEqualsOneDecodePerChunk)
  EXPECT_LE(max_difference(ours, theirs), 5e-3f * max_abs(theirs)) << max_difference(ours, theirs) << " of " << max_abs(theirs);

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
  test::expect_methods_run_or_refuse_as_the_family_table_says(*vlm_, [](const std::string& method, Budget b) {
    return request(method, b, 1);
  });
}

TEST_F(QwenVlm, BudgetThatRoundsToNoTokenIsTheCallersError) {
  EXPECT_THROW(vlm_->run(request("hiprune", Budget::fraction(0.001), 1)), InputError);
  EXPECT_THROW(vlm_->run(request("prumerge", Budget::tokens(8), 1)), InputError);
}

// ---- taps against brute force ------------------------------------------------------------------------

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
  test::TensorCapture capture;
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
  params.cb_eval = &test::TensorCapture::callback;
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
    const std::vector<double> per_patch = test::brute_force_received(capture.tensors[qn], capture.tensors[kn], shape[0], shape[1], shape[2]);
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
  copy_gguf_with(*dir_ / "mmproj.gguf", bad / "pixtral.gguf", [](gguf_context* g) { gguf_set_val_str(g, "clip.projector_type", "pixtral"); });
  expect_error(bad / "pixtral.gguf", "projector type 'pixtral'");
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
                                       (bad / "pixtral.gguf").string() + " --image " + (*dir_ / "image.png").string() + " -n 1 -t 1",
                                   &out);
  EXPECT_NE(rc, 0);
  EXPECT_NE(out.find("vtprune: error:"), std::string::npos) << out;
  EXPECT_NE(out.find("pixtral"), std::string::npos) << out;
}

}  // namespace
}  // namespace vtprune::pipeline
