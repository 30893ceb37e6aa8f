// `vtprune make-test-model`: a random-weight GGUF pair (llm.gguf + mmproj.gguf) with the exact tensor layout and
// metadata of llama.cpp's conversion of LLaVA-1.5 or Qwen2.5-VL, plus a generated test image. Speed does not depend on
// weight values, so these are what tests, benchmarks and the demo run on.
#include <cmath>
#include <cstdio>

#include "commands.h"
#include "vtprune/llm.h"
#include "vtprune/text.h"
#include "vtprune/vision.h"

namespace vtprune::cli {
namespace {

// The vision tower that goes with each LLM shape: tiny keeps LLaVA-1.5's geometry (24 layers, of which 23
// are stored, 336 px, 14 px patches -> 576 tokens) at a tiny width; the others are CLIP ViT-L/14-336.
vision::MmprojShape mmproj_shape(const std::string& shape, int llm_width) {
  vision::MmprojShape s;  // CLIP ViT-L/14-336 defaults
  if (shape == "tiny" || shape == "llava-next") {
    s.n_embd = 64;
    s.n_ff = 128;
    s.n_head = 4;
  }
  if (shape == "llava-next" || shape == "llava-next-7b") s.anyres_pinpoints = vision::llava_next_pinpoints();
  s.proj_out = llm_width;
  return s;
}

// A test scene: a sky-to-ground gradient, a red disc, a green square and a blue stripe (positions relative to
// the height, so a wide image keeps a round disc and a square square).
vision::RgbImage test_scene(int width, int height) {
  vision::RgbImage img;
  img.width = width;
  img.height = height;
  img.pixels.resize(static_cast<size_t>(width) * height * 3);
  const double aspect = static_cast<double>(width) / height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double fy = static_cast<double>(y) / height, fx = static_cast<double>(x) / height;
      double r = 120 + 100 * fy, g = 170 + 50 * fy, b = 235 - 140 * fy;
      if (std::hypot(fx - 0.32, fy - 0.35) < 0.16) r = 220, g = 40, b = 40;
      if (fx > aspect - 0.42 && fx < aspect - 0.14 && fy > 0.52 && fy < 0.80) r = 40, g = 170, b = 60;
      if (fy > 0.88) r = 40, g = 60, b = 200;
      uint8_t* p = &img.pixels[(static_cast<size_t>(y) * width + x) * 3];
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
    bool mmproj_only = false, header_only = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "make-test-model", "Write a random-weight llm.gguf + mmproj.gguf pair (LLaVA-1.5, LLaVA-NeXT, Qwen2.5-VL, Gemma 3 or SmolVLM layout) and image.png");
  cmd->add_option("--out", a->out, "output directory")->required();
  cmd->add_option("--shape", a->shape, "tiny | tinyllama | llava-7b (LLaVA-1.5) | llava-next | llava-next-7b (LLaVA-NeXT) | qwen2.5-vl | qwen2.5-vl-3b (Qwen2.5-VL) | gemma3 | gemma3-4b (Gemma 3) | smolvlm (Idefics3 / SmolVLM)")
      ->capture_default_str();
  cmd->add_option("--type", a->type, "LLM weight type: f32 | f16 | q8_0 | q4_0")->capture_default_str();
  cmd->add_option("--mmproj-type", a->mmproj_type, "mmproj weight matrices: f32 | f16 | bf16 | q8_0")->capture_default_str();
  cmd->add_flag("--mmproj-only", a->mmproj_only, "write only mmproj.gguf and image.png (keep an existing llm.gguf)");
  cmd->add_flag("--header-only", a->header_only,
                "libmtmd shapes (Qwen2.5-VL, Gemma 3, SmolVLM): write only the GGUF headers (metadata + tensor table, no weights), to inspect a "
                "multi-GB layout without writing it; no loader can run such files");
  cmd->add_option("--seed", a->seed, "random seed")->capture_default_str();
  cmd->callback([a, &action] {
    action = [a] {
      const llm::TestLlmShape llm_shape = llm::test_llm_shape(a->shape);
      const llm::WeightType type = llm::parse_weight_type(a->type);
      const vision::WeightType mmproj_type = vision::parse_mmproj_weight_type(a->mmproj_type);
      std::filesystem::create_directories(a->out);
      const auto dir = std::filesystem::path(a->out);
      const auto llm_path = (dir / "llm.gguf").string();
      if (llm_shape.arch == llm::TestLlmArch::gemma3 || llm_shape.arch == llm::TestLlmArch::smolvlm) {
        // Gemma 3 squashes every image to its fixed square input (896 px; 448 px in the tiny shape), SmolVLM
        // resizes it to a 1024 px longest edge and tiles it (2 x 2 tiles of 512 px + the overview): a 4:3 picture
        // shows either.
        vision::SiglipMmprojShape vshape = vision::siglip_mmproj_shape(a->shape);
        vshape.proj_out = llm_shape.n_embd;
        if (a->header_only) {
          vision::write_test_mmproj_siglip_header(dir / "mmproj.gguf", vshape, mmproj_type);
          if (!a->mmproj_only) llm::write_test_llm_header(llm_path, llm_shape, type);
        } else {
          vision::write_test_mmproj_siglip(dir / "mmproj.gguf", vshape, a->seed, mmproj_type);
          if (!a->mmproj_only) llm::write_test_llm(llm_path, llm_shape, a->seed, type);
        }
        vision::save_png(dir / "image.png", a->shape == "gemma3-4b" ? test_scene(1024, 768) : test_scene(512, 384));
      } else if (llm_shape.arch == llm::TestLlmArch::qwen2vl) {
        // Qwen2.5-VL keeps each image's own size (rounded to 28 px): a non-square picture several 112-px
        // attention windows wide and tall, so window order matters (252x196 -> a 9x7 merged grid, 3x2 windows);
        // the 3B shape gets the benchmark's 1024x768.
        const bool tiny = a->shape == "qwen2.5-vl";
        vision::Qwen25VlMmprojShape vshape = vision::qwen25vl_mmproj_shape(a->shape);
        vshape.proj_out = llm_shape.n_embd;
        if (a->header_only) {
          vision::write_test_mmproj_qwen25vl_header(dir / "mmproj.gguf", vshape, mmproj_type);
          if (!a->mmproj_only) llm::write_test_llm_header(llm_path, llm_shape, type);
        } else {
          vision::write_test_mmproj_qwen25vl(dir / "mmproj.gguf", vshape, a->seed, mmproj_type);
          if (!a->mmproj_only) llm::write_test_llm(llm_path, llm_shape, a->seed, type);
        }
        vision::save_png(dir / "image.png", tiny ? test_scene(252, 196) : test_scene(1024, 768));
      } else {
        if (a->header_only) throw Error("--header-only is for the libmtmd shapes (qwen2.5-vl, qwen2.5-vl-3b, gemma3, gemma3-4b, smolvlm)");
        const vision::MmprojShape vshape = mmproj_shape(a->shape, llm_shape.n_embd);
        vision::write_test_mmproj(dir / "mmproj.gguf", vshape, a->seed, mmproj_type);
        if (!a->mmproj_only) llm::write_test_llm(llm_path, llm_shape, a->seed, type);
        // LLaVA-NeXT: a 2:1 picture fits 672 x 336 (the overview + 2 x 1 crops = 1728 tokens); the 7B shape gets the
        // benchmark's 1024 x 768, which fits 672 x 672 (the overview + 2 x 2 crops = 2880 tokens).
        vision::save_png(dir / "image.png", a->shape == "llava-next"      ? test_scene(640, 320)
                                            : a->shape == "llava-next-7b" ? test_scene(1024, 768)
                                                                          : test_scene(vshape.image_size, vshape.image_size));
        // A small random CLIP text tower whose image side takes this tower's features: CDPruner's official
        // relevance (--clip-text DIR/clip) runs on the pair.
        const text::RandomClipShape clip{.context = 77, .vision_width = vshape.n_embd};
        text::write_clip_checkpoint(dir / "clip", text::random_clip_tensors(clip, a->seed), clip);
      }
      const bool llava = llm_shape.arch == llm::TestLlmArch::llama;
      std::printf("wrote %s/{%smmproj.gguf, image.png%s} (%s, LLM %s, mmproj %s%s)\n", a->out.c_str(),
                  a->mmproj_only ? "" : "llm.gguf, ", llava ? ", clip/" : "", a->shape.c_str(), a->type.c_str(),
                  a->mmproj_type.c_str(), a->header_only ? ", headers only" : "");
      return 0;
    };
  });
}

}  // namespace vtprune::cli
