// libFuzzer: safetensors header parsing and the timm / CLIP weight loaders on a file holding the input
// (config.json fixed beside it so that small widths are valid). Anything but a vtprune::Error is a bug.
#include <cstdint>

#include "fuzz_util.h"
#include "vtprune/vision.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = vtprune::fuzz::scratch_dir();
  static const bool config_written = [&] {
    const std::string config = R"({"model_args": {"num_heads": 2}, "vision_config": {"num_attention_heads": 2}})";
    vtprune::fuzz::write_file(dir / "config.json", reinterpret_cast<const uint8_t*>(config.data()), config.size());
    return true;
  }();
  (void)config_written;
  vtprune::fuzz::write_file(dir / "model.safetensors", data, size);
  try {
    auto model = vtprune::vision::VisionModel::from_safetensors_timm(dir);
  } catch (const vtprune::Error&) {
  }
  try {
    auto model = vtprune::vision::VisionModel::from_safetensors_clip(dir);
  } catch (const vtprune::Error&) {
  }
  return 0;
}
