// llama.cpp's own answers for a libmtmd family, built from the same pinned source: llama-mtmd-cli's greedy
// answer, libmtmd's helper decode (what llama-mtmd-cli decodes with), the Q / K tensors of chosen ViT blocks as
// the scheduler's eval callback sees them, and a float64 brute force of the attention each key receives.
// Shared by the libmtmd family suites (test_qwen.cpp, test_gemma3.cpp).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include "mtmd-helper.h"
#include "mtmd.h"
#include "test_support.h"
#include "vtprune/llm.h"
#include "vtprune/vision.h"

namespace vtprune::test {

// What llama-mtmd-cli printed: the chat text it formatted and its generated pieces.
struct MtmdCliRun {
  std::string formatted;            // `formatted_chat.prompt` (-v), with llama-mtmd-cli's trailing newline
  std::vector<std::string> pieces;  // "\n" that ends the prompt, then one entry per generated token
  std::string log;                  // the raw output, for failure messages
};

// llama-mtmd-cli on `dir`'s llm.gguf + mmproj.gguf + image.png, greedy, one thread, --jinja (the file's own
// template, as vtprune renders it). Its JSONL log is read (plain stdout loses pieces at exit): llama-mtmd-cli's
// logger is an asynchronous thread whose queue is not flushed at exit (llama.cpp #22142), so on a busy machine the
// last pieces can be missing: it generates more than asked and runs again while it still comes up short.
inline MtmdCliRun run_llama_mtmd_cli(const std::filesystem::path& cli, const std::filesystem::path& dir,
                                     const std::string& question, int tokens, const std::string& extra_args = "") {
  MtmdCliRun run;
  for (int attempt = 0; attempt < 5 && run.pieces.size() < static_cast<size_t>(tokens) + 2; ++attempt) {
    const std::string cmd = cli.string() + " -m " + (dir / "llm.gguf").string() + " --mmproj " + (dir / "mmproj.gguf").string() +
                            " --image " + (dir / "image.png").string() + " -p '" + question + "' -n " +
                            std::to_string(tokens * 8) + " --temp 0 -t 1 -c 2048 --jinja -v --log-jsonl " + extra_args + " 2>/dev/null";
    EXPECT_EQ(run_command(cmd, &run.log), 0) << cmd << "\n" << run.log.substr(0, 2000);
    run.pieces.clear();
    std::istringstream lines(run.log);
    for (std::string line; std::getline(lines, line);) {
      if (line.empty() || line.front() != '{') continue;
      const auto entry = nlohmann::json::parse(line, nullptr, false);
      if (!entry.is_object() || !entry.contains("msg")) continue;
      const std::string msg = entry["msg"].get<std::string>();
      constexpr std::string_view kFormatted = "formatted_chat.prompt: ";
      if (msg.starts_with(kFormatted)) run.formatted = msg.substr(kFormatted.size());
      if (entry.value("level", "") == "none") run.pieces.push_back(msg);
    }
  }
  return run;
}

// A generated piece as llama-mtmd-cli's JSONL log shows it: valid UTF-8 as it is; a piece that is not (a byte
// token of a random model) with each byte replaced by U+FFFD, as its JSON writer does.
inline std::string as_logged(std::string_view piece) {
  size_t i = 0;
  bool valid = true;
  while (i < piece.size() && valid) {
    const auto c = static_cast<unsigned char>(piece[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    valid = len > 0 && i + len <= piece.size();
    for (size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(piece[i + k]) & 0xC0) == 0x80;
    i += len;
  }
  if (valid) return std::string(piece);
  std::string out;
  for (size_t k = 0; k < piece.size(); ++k) out += "\xEF\xBF\xBD";
  return out;
}

// The next-token logits after `text` (with the media marker) and `image`, decoded by libmtmd's helper
// (mtmd_helper_eval_chunks) on a fresh libllama context: llama-mtmd-cli's own prefill.
inline std::vector<float> libmtmd_helper_logits(const std::filesystem::path& dir, const std::string& text,
                                                const vision::RgbImage& image) {
  llama_model_params mp = llama_model_default_params();
  llama_model* model = llama_model_load_from_file((dir / "llm.gguf").c_str(), mp);
  EXPECT_NE(model, nullptr);
  if (!model) return {};
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 2048;
  cp.n_threads = cp.n_threads_batch = 1;
  llama_context* lctx = llama_init_from_model(model, cp);
  mtmd_context_params mparams = mtmd_context_params_default();
  mparams.use_gpu = false;
  mparams.n_threads = 1;
  mparams.print_timings = false;
  mtmd_context* mctx = mtmd_init_from_file((dir / "mmproj.gguf").c_str(), model, mparams);
  EXPECT_NE(mctx, nullptr);
  std::vector<float> out;
  if (lctx && mctx) {
    mtmd_bitmap* bitmap = mtmd_bitmap_init(image.width, image.height, image.pixels.data());
    mtmd_input_chunks* chunks = mtmd_input_chunks_init();
    mtmd_input_text input{text.c_str(), text.size(), true, true};
    const mtmd_bitmap* bitmaps[] = {bitmap};
    EXPECT_EQ(mtmd_tokenize(mctx, chunks, &input, bitmaps, 1), 0);
    llama_pos n_past = 0;
    EXPECT_EQ(mtmd_helper_eval_chunks(mctx, lctx, chunks, 0, 0, 2048, true, &n_past), 0);
    const float* logits = llama_get_logits_ith(lctx, -1);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    if (logits) out.assign(logits, logits + n_vocab);
    mtmd_input_chunks_free(chunks);
    mtmd_bitmap_free(bitmap);
  }
  if (mctx) mtmd_free(mctx);
  if (lctx) llama_free(lctx);
  llama_model_free(model);
  return out;
}

// The LLM-input embeddings libmtmd makes of `image` alone with `mmproj` (no text model): one entry per image chunk
// its tokenizer makes (LLaVA-NeXT: the overview, then the crops), each [tokens x width] row-major (width: the
// projector's output, which libmtmd does not report).
inline std::vector<std::vector<float>> libmtmd_image_embeddings(const std::filesystem::path& mmproj, const vision::RgbImage& image,
                                                                int width) {
  mtmd_context_params params = mtmd_context_params_default();
  params.use_gpu = false;
  params.n_threads = 1;
  params.print_timings = false;
  params.warmup = false;
  mtmd_context* ctx = mtmd_init_from_file(mmproj.c_str(), nullptr, params);
  EXPECT_NE(ctx, nullptr) << mmproj;
  std::vector<std::vector<float>> out;
  if (!ctx) return out;
  mtmd_bitmap* bitmap = mtmd_bitmap_init(image.width, image.height, image.pixels.data());
  mtmd_input_chunks* chunks = mtmd_input_chunks_init();
  mtmd_input_part part{nullptr, bitmap};
  const mtmd_input_part* parts[] = {&part};
  EXPECT_EQ(mtmd_tokenize_from_parts(ctx, chunks, parts, 1, false), 0);
  for (size_t i = 0; i < mtmd_input_chunks_size(chunks); ++i) {
    const mtmd_input_chunk* chunk = mtmd_input_chunks_get(chunks, i);
    if (mtmd_input_chunk_get_type(chunk) != MTMD_INPUT_CHUNK_TYPE_IMAGE) continue;
    EXPECT_EQ(mtmd_encode_chunk(ctx, chunk), 0);
    const float* embd = mtmd_get_output_embd(ctx);
    const size_t n = mtmd_input_chunk_get_n_tokens(chunk);
    out.emplace_back(embd, embd + n * static_cast<size_t>(width));
  }
  mtmd_input_chunks_free(chunks);
  mtmd_bitmap_free(bitmap);
  mtmd_free(ctx);
  return out;
}

// The tensors an encode computes, by name, as the scheduler's eval callback sees them; and the index
// Qwen2.5-VL's graph restores raster order with (the rows of its window_idx gather).
struct TensorCapture {
  std::map<std::string, std::vector<float>> tensors;  // name -> data (F32, contiguous)
  std::map<std::string, std::vector<int64_t>> shapes;
  std::vector<int32_t> window_idx;
  std::vector<std::string> wanted;
  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* c = static_cast<TensorCapture*>(user);
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

}  // namespace vtprune::test
