// Encoder cost of each method's taps against the plain encoder, on one mmproj (default: a random CLIP
// ViT-L/14-336 written on first use to $TMPDIR; VTPRUNE_BENCH_MMPROJ=FILE for your own). Benchmarks are
// interleaved by Google Benchmark's repetitions, so the ratios come from one run on one machine state:
//   build/bin/bench_encoder --benchmark_repetitions=7 --benchmark_report_aggregates_only=true
// Threads: VTPRUNE_BENCH_THREADS (default 1).
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "vtprune/reduce.h"
#include "vtprune/vision.h"

namespace {

namespace fs = std::filesystem;
using namespace vtprune;

fs::path mmproj_path() {
  if (const char* env = std::getenv("VTPRUNE_BENCH_MMPROJ")) return env;
  const fs::path file = fs::temp_directory_path() / "vtprune-bench-clip-l336-mmproj.gguf";
  if (!fs::exists(file)) vision::write_test_mmproj(file, vision::MmprojShape{}, 1, vision::WeightType::F16);
  return file;
}

int threads() {
  const char* env = std::getenv("VTPRUNE_BENCH_THREADS");
  return env ? std::max(1, std::atoi(env)) : 1;
}

struct Fixture {
  vision::VisionModel model;
  vision::VisionModel model_f16;
  vision::Image image;
  static Fixture& get() {
    static Fixture f{vision::VisionModel::from_mmproj(mmproj_path()),
                     vision::VisionModel::from_mmproj(mmproj_path(), {.f16_attention = true}), {}};
    if (f.image.data.empty()) {
      const int side = 400;  // preprocess resizes to the model's input size
      vision::RgbImage rgb{side, side, std::vector<uint8_t>(static_cast<size_t>(side) * side * 3)};
      for (size_t i = 0; i < rgb.pixels.size(); ++i) rgb.pixels[i] = static_cast<uint8_t>((i * 37) % 251);
      f.image = vision::preprocess(rgb, f.model.preprocess_recipe());
    }
    return f;
  }
};

// `method` "none": the plain encoder; otherwise the taps the method asks for (`option`: one key=value or "").
void BM_Encode(benchmark::State& state, const char* method, const char* option, bool f16_attention) {
  Fixture& f = Fixture::get();
  vision::VisionModel& model = f16_attention ? f.model_f16 : f.model;
  std::vector<std::string> options;
  if (*option) options.emplace_back(option);
  const Needs needs = std::string(method) == "none" ? Needs{} : make_reducer(method, options)->needs(model.info());
  for (auto _ : state) {
    auto result = model.encode(f.image, needs, {.threads = threads()});
    benchmark::DoNotOptimize(result.features.data());
  }
}

BENCHMARK_CAPTURE(BM_Encode, no_taps, "none", "", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, no_taps_f16_attention, "none", "", true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, hiprune_taps, "hiprune", "", false)->Unit(benchmark::kMillisecond);
// llama.cpp's mmproj files do not store the last layer PruMerge taps by default: the last stored one.
BENCHMARK_CAPTURE(BM_Encode, prumerge_taps, "prumerge", "layer=-2", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, visionzip_taps, "visionzip", "", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Encode, fastervlm_taps, "fastervlm", "", false)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
