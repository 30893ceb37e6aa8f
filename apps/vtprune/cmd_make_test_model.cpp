// `vtprune make-test-model`: a random-weight LLaVA-1.5-shaped GGUF pair (llm.gguf + mmproj.gguf) with the exact
// tensor layout and metadata of llama.cpp's conversion, plus a generated test image. Speed does not depend on
// weight values, so these are what tests, benchmarks and the demo run on.
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "vtprune/llm.h"
#include "vtprune/vision.h"

namespace vtprune::cli {
namespace {

// The vision tower that goes with each LLM shape: tiny keeps LLaVA-1.5's geometry (24 layers, of which 23
// are stored, 336 px, 14 px patches -> 576 tokens) at a tiny width; the others are CLIP ViT-L/14-336.
vision::MmprojShape mmproj_shape(const std::string& shape, int llm_width) {
  vision::MmprojShape s;  // CLIP ViT-L/14-336 defaults
  if (shape == "tiny") {
    s.n_embd = 64;
    s.n_ff = 128;
    s.n_head = 4;
  }
  s.proj_out = llm_width;
  return s;
}

// A 336x336 test scene: a sky-to-ground gradient, a red disc, a green square and a blue stripe.
vision::RgbImage test_scene(int size) {
  vision::RgbImage img;
  img.width = img.height = size;
  img.pixels.resize(static_cast<size_t>(size) * size * 3);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const double fy = static_cast<double>(y) / size, fx = static_cast<double>(x) / size;
      double r = 120 + 100 * fy, g = 170 + 50 * fy, b = 235 - 140 * fy;
      if (std::hypot(fx - 0.32, fy - 0.35) < 0.16) r = 220, g = 40, b = 40;
      if (fx > 0.58 && fx < 0.86 && fy > 0.52 && fy < 0.80) r = 40, g = 170, b = 60;
      if (fy > 0.88) r = 40, g = 60, b = 200;
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * size + x) * 3];
      p[0] = static_cast<uint8_t>(r), p[1] = static_cast<uint8_t>(g), p[2] = static_cast<uint8_t>(b);
    }
  }
  return img;
}

}  // namespace

void add_make_test_model(CLI::App& app, Action& action) {
  struct Args {
    std::string out, shape = "tiny", type = "f16", mmproj_type = "f16";
    uint64_t seed = 0;
    bool mmproj_only = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("make-test-model", "Write a random-weight LLaVA-1.5-shaped llm.gguf + mmproj.gguf pair and image.png");
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_option("--shape", a->shape, "tiny | tinyllama | llava-7b")->capture_default_str();
  cmd->add_option("--type", a->type, "LLM weight type: f32 | f16 | q8_0 | q4_0")->capture_default_str();
  cmd->add_option("--mmproj-type", a->mmproj_type, "mmproj weight matrices: f32 | f16 | bf16 | q8_0")->capture_default_str();
  cmd->add_flag("--mmproj-only", a->mmproj_only, "write only mmproj.gguf and image.png (keep an existing llm.gguf)");
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->callback([a, &action] {
    action = [a] {
      const llm::TestLlmShape llm_shape = llm::test_llm_shape(a->shape);
      const llm::WeightType type = llm::parse_weight_type(a->type);
      const vision::WeightType mmproj_type = vision::parse_mmproj_weight_type(a->mmproj_type);
      std::filesystem::create_directories(a->out);
      const auto dir = std::filesystem::path(a->out);
      const vision::MmprojShape vshape = mmproj_shape(a->shape, llm_shape.n_embd);
      vision::write_test_mmproj(dir / "mmproj.gguf", vshape, a->seed, mmproj_type);
      if (!a->mmproj_only) llm::write_test_llm((dir / "llm.gguf").string(), llm_shape, a->seed, type);
      vision::save_png(dir / "image.png", test_scene(vshape.image_size));
      std::printf("wrote %s/{%smmproj.gguf, image.png} (%s, LLM %s, mmproj %s)\n", a->out.c_str(),
                  a->mmproj_only ? "" : "llm.gguf, ", a->shape.c_str(), a->type.c_str(), a->mmproj_type.c_str());
      return 0;
    };
  });
}

}  // namespace vtprune::cli
