// libFuzzer: case.json parsing (io::Case::load) and, for cases that load, the reduction they describe.
// The input is case.json; the harness writes every float32 input file it names (plain file names, at most
// 64K values) with the size its shape implies, or one value short when the input's length is odd, so
// that both the size check and everything after it are reached. Anything but a vtprune::Error is a bug.
#include <cstdint>
#include <random>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "vtprune/case_file.h"

namespace {

bool plain_file_name(const std::string& name) {
  if (name.empty() || name.size() > 64 || name == "case.json" || name == "." || name == "..") return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

void write_inputs(const std::filesystem::path& dir, const nlohmann::json& j, size_t input_size) {
  if (!j.is_object() || !j.contains("inputs") || !j["inputs"].is_object()) return;
  std::mt19937 rng(static_cast<uint32_t>(input_size));
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (const auto& [name, spec] : j["inputs"].items()) {
    if (!spec.is_object() || !spec.contains("file") || !spec["file"].is_string() || !spec.contains("shape") ||
        !spec["shape"].is_array()) {
      continue;
    }
    const std::string file = spec["file"].get<std::string>();
    if (!plain_file_name(file)) continue;
    int64_t count = 1;
    bool ok = true;
    for (const auto& d : spec["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > 65536) {
        ok = false;
        break;
      }
      count *= d.get<int64_t>();
      if (count > 65536) ok = false;
    }
    if (!ok) continue;
    if (input_size % 2 == 1 && count > 0) --count;
    std::vector<float> values(static_cast<size_t>(count));
    for (float& v : values) v = unit(rng);
    vtprune::fuzz::write_file(dir / file, reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto dir = vtprune::fuzz::scratch_dir() / "case";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  vtprune::fuzz::write_file(dir / "case.json", data, size);
  try {
    write_inputs(dir, nlohmann::json::parse(std::string_view(reinterpret_cast<const char*>(data), size)), size);
  } catch (const nlohmann::json::exception&) {
    // not JSON: Case::load must say so
  }
  try {
    const auto c = vtprune::io::Case::load(dir);
    const auto& output = c.encoder_output();
    if (output.seq_len() <= 4096) {  // keep each run fast (DivPrune and PruMerge are quadratic)
      const auto reducer = vtprune::make_reducer(c.method(), c.options());
      const auto reduction = reducer->reduce(output, c.budget());
      (void)reduction;
    }
  } catch (const vtprune::Error&) {
  }
  return 0;
}
