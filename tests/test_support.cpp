#include "test_support.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sys/wait.h>

namespace vtprune::test {

namespace fs = std::filesystem;

fs::path shared_dir() {
  if (const char* env = std::getenv("VTPRUNE_SHARED_DIR"); env && *env && fs::exists(env)) return fs::path(env);
  return {};
}

fs::path vtprune_binary() {
  if (const char* env = std::getenv("VTPRUNE_BIN"); env && *env) return fs::path(env);
  return fs::path("vtprune");
}

fs::path source_dir() {
  if (const char* env = std::getenv("VTPRUNE_SOURCE_DIR"); env && *env) return fs::path(env);
  return fs::current_path();
}

namespace {
struct TempRoot {
  fs::path path;
  TempRoot() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("vtprune-test-" + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
}  // namespace

fs::path temp_dir(const std::string& tag) {
  static TempRoot root;  // one per test process, removed at exit
  static int counter = 0;
  fs::path p = root.path / (tag + "-" + std::to_string(counter++));
  fs::create_directories(p);
  return p;
}

int run_command(const std::string& command, std::string* output) {
  std::string full = command + " 2>&1";
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buf{};
  std::string out;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace vtprune::test
