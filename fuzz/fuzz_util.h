// Shared by the libFuzzer harnesses: a per-process scratch directory (the loaders under test read files),
// and writing the fuzz input to a file in it.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace vtprune::fuzz {

// $VTPRUNE_FUZZ_SCRATCH or /dev/shm (tmpfs: fast, no disk wear) or the temp dir, one folder per process.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    std::filesystem::path base = std::filesystem::temp_directory_path();
    if (const char* env = std::getenv("VTPRUNE_FUZZ_SCRATCH"); env && *env) {
      base = env;
    } else if (std::filesystem::is_directory("/dev/shm")) {
      base = "/dev/shm";
    }
    auto d = base / ("vtprune-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& file, const uint8_t* data, size_t size) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", file.c_str());
    std::abort();
  }
}

}  // namespace vtprune::fuzz
