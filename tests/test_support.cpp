#include "test_support.h"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sys/wait.h>

namespace vtprune::test {

namespace fs = std::filesystem;

namespace {
// The environment variable if set, else the value compiled in by tests/CMakeLists.txt.
std::string setting(const char* name, const char* compiled_in) {
  if (const char* env = std::getenv(name); env && *env) return env;
  return compiled_in;
}
}  // namespace

fs::path shared_dir() {
  const fs::path p = setting("VTPRUNE_SHARED_DIR", VTPRUNE_DEFAULT_SHARED_DIR);
  std::error_code ec;
  return fs::is_directory(p, ec) ? fs::weakly_canonical(p) : fs::path{};
}

fs::path vtprune_binary() { return setting("VTPRUNE_BIN", VTPRUNE_DEFAULT_BIN); }

fs::path source_dir() { return setting("VTPRUNE_SOURCE_DIR", VTPRUNE_DEFAULT_SOURCE_DIR); }

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
