// Helpers shared by the test suites: where ../shared is, and skipping when it is absent.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace vtprune::test {

// The shared data folder (golden vectors, models, images), or empty when it is not there.
std::filesystem::path shared_dir();
// Path of the built vtprune CLI (for end-to-end tests of the CLI contract).
std::filesystem::path vtprune_binary();
std::filesystem::path source_dir();
// A fresh empty temporary directory, removed at process exit.
std::filesystem::path temp_dir(const std::string& tag);
// Runs a shell command; returns its exit code and fills `output` with stdout+stderr.
int run_command(const std::string& command, std::string* output = nullptr);
// softmax(q k^T / sqrt(d)) over every key, in double: the attention each key receives, mean over heads and
// queries. q, k: [n tokens][h heads][d]. The oracle for every received-attention tap.
std::vector<double> brute_force_received(const std::vector<float>& q, const std::vector<float>& k, int64_t d, int64_t h,
                                         int64_t n);

}  // namespace vtprune::test

// Skips the current test with a clear message when ../shared (or a file inside it) is missing.
#define VTPRUNE_REQUIRE_SHARED(relative)                                                              \
  do {                                                                                                \
    const auto _p = ::vtprune::test::shared_dir() / (relative);                                       \
    if (::vtprune::test::shared_dir().empty() || !std::filesystem::exists(_p)) {                      \
      GTEST_SKIP() << "shared test data not found (" << _p.string()                                   \
                   << "); set VTPRUNE_SHARED_DIR or place ../shared beside the repository";           \
    }                                                                                                 \
  } while (0)
