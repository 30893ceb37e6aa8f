// libFuzzer: GGUF metadata and tensor validation of the mmproj loader on a file holding the input.
// Anything but a vtprune::Error is a bug.
#include <cstdint>

#include "fuzz_util.h"
#include "vtprune/vision.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto file = vtprune::fuzz::scratch_dir() / "mmproj.gguf";
  vtprune::fuzz::write_file(file, data, size);
  try {
    auto model = vtprune::vision::VisionModel::from_mmproj(file);
  } catch (const vtprune::Error&) {
  }
  return 0;
}
