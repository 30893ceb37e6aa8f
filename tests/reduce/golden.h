// Loading the golden cases of ../shared/golden (official-code outputs) for the tests.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"

namespace vtprune::test {

// Every case directory of one method under ../shared/golden, sorted; empty when ../shared is absent.
inline std::vector<std::filesystem::path> golden_cases(const std::string& method) {
  std::vector<std::filesystem::path> out;
  const auto root = shared_dir() / "golden" / method;
  if (shared_dir().empty() || !std::filesystem::is_directory(root)) return out;
  for (const auto& e : std::filesystem::directory_iterator(root)) {
    if (std::filesystem::exists(e.path() / "case.json")) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace vtprune::test
