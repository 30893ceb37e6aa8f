// Writes the fuzzers' seed corpora into OUT/<harness>/: small valid (and a few almost valid) inputs of
// each format, generated rather than stored, so they always match the current writers.
//   make_seeds OUT
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#include "hardening/model_files.h"
#include "vtprune/case_file.h"
#include "vtprune/reduce.h"
#include "vtprune/vision.h"

namespace fs = std::filesystem;
using namespace vtprune;

namespace {

void append(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* bytes = static_cast<const uint8_t*>(data);
  out->insert(out->end(), bytes, bytes + size);
}

std::vector<uint8_t> pixels(int w, int h, int channels) {
  std::vector<uint8_t> p(static_cast<size_t>(w) * h * channels);
  for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(i * 37 + 11);
  return p;
}

void image_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  int n = 0;
  const auto save = [&](const std::vector<uint8_t>& bytes, const char* ext) {
    hardening::write_bytes(dir / ("seed" + std::to_string(n++) + ext), bytes);
  };
  for (const auto& [w, h, c] : std::vector<std::array<int, 3>>{{1, 1, 3}, {7, 5, 3}, {9, 4, 1}, {6, 6, 4}, {33, 17, 2}}) {
    const auto p = pixels(w, h, c);
    std::vector<uint8_t> out;
    stbi_write_png_to_func(append, &out, w, h, c, p.data(), w * c);
    save(out, ".png");
    out.clear();
    stbi_write_bmp_to_func(append, &out, w, h, c, p.data());
    save(out, ".bmp");
    out.clear();
    stbi_write_jpg_to_func(append, &out, w, h, c, p.data(), 80);
    save(out, ".jpg");
  }
}

void safetensors_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  hardening::write_safetensors(dir / "tiny_timm.safetensors", hardening::tiny_timm_entries());
  hardening::TinyTimmShape headless;
  headless.classes = 0;
  headless.depth = 1;
  hardening::write_safetensors(dir / "tiny_timm_headless.safetensors", hardening::tiny_timm_entries(headless));
  hardening::write_safetensors(dir / "one_tensor.safetensors", {{"pos_embed", "F16", {1, 5, 2}, std::vector<uint8_t>(20)}});
}

void gguf_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  vision::MmprojShape s;
  s.n_layer = 2, s.n_embd = 8, s.n_ff = 16, s.n_head = 2, s.image_size = 28, s.patch_size = 14, s.proj_out = 8;
  vision::write_test_mmproj(dir / "tiny_f32.gguf", s, 1, vision::WeightType::F32);
  vision::write_test_mmproj(dir / "tiny_f16.gguf", s, 2, vision::WeightType::F16);
  s.n_layer = 1;
  vision::write_test_mmproj(dir / "one_block.gguf", s, 3, vision::WeightType::F16);
}

void case_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  for (const MethodInfo& m : methods()) {
    io::SyntheticCaseSpec spec;
    spec.method = m.name;
    spec.grid = {4, 4};
    spec.heads = 2;
    spec.dim = 8;
    spec.budget = Budget::tokens(4);
    const fs::path tmp = dir / ("tmp-" + m.name);
    io::write_synthetic_case(spec, tmp);
    fs::copy_file(tmp / "case.json", dir / (m.name + ".json"), fs::copy_options::overwrite_existing);
    fs::remove_all(tmp);
  }
}

void chat_seeds(const fs::path& dir) {
  fs::create_directories(dir);
  const auto p = pixels(4, 4, 3);
  std::vector<uint8_t> png;
  stbi_write_png_to_func(append, &png, 4, 4, 3, p.data(), 12);
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string b64;
  for (size_t i = 0; i < png.size(); i += 3) {
    const uint32_t v = (uint32_t{png[i]} << 16) | (i + 1 < png.size() ? uint32_t{png[i + 1]} << 8 : 0) |
                       (i + 2 < png.size() ? png[i + 2] : 0);
    b64 += kAlphabet[(v >> 18) & 63];
    b64 += kAlphabet[(v >> 12) & 63];
    b64 += i + 1 < png.size() ? kAlphabet[(v >> 6) & 63] : '=';
    b64 += i + 2 < png.size() ? kAlphabet[v & 63] : '=';
  }
  const std::vector<std::string> bodies = {
      R"({"model":"vtprune","messages":[{"role":"user","content":"Hello"}]})",
      R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,)" + b64 +
          R"("}},{"type":"text","text":"What is this?"}]}],"max_tokens":16,"temperature":0.5,"top_p":0.9,"seed":3,)"
          R"("stream":true,"stream_options":{"include_usage":true},"vtprune":{"method":"hiprune","budget":64,)"
          R"("options":{"alpha":0.1},"scope":"per_image"}})",
      R"({"messages":[{"role":"user","content":"hi"}],"vtprune":{"method":"prumerge_plus","budget":"25%","options":["k_nn=8"],"scope":"total"}})",
      R"({"messages":[{"role":"user","content":"hi"}],"vtprune":{"method":"visionzip","budget":0.25}})",
      R"({"messages":[{"role":"system","content":"x"},{"role":"user","content":"y"}],"n":2,"stop":["a"]})",
  };
  for (size_t i = 0; i < bodies.size(); ++i) {
    hardening::write_bytes(dir / ("body" + std::to_string(i) + ".json"),
                           std::vector<uint8_t>(bodies[i].begin(), bodies[i].end()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT\n");
    return 2;
  }
  const fs::path out = argv[1];
  image_seeds(out / "fuzz_image");
  safetensors_seeds(out / "fuzz_safetensors");
  gguf_seeds(out / "fuzz_gguf");
  case_seeds(out / "fuzz_case");
  chat_seeds(out / "fuzz_chat_request");
  std::printf("seeds written to %s\n", out.c_str());
  return 0;
}
