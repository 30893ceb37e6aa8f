#include "test_support.h"

#include <algorithm>
#include <array>
#include <cmath>
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

std::vector<double> brute_force_received(const std::vector<float>& q, const std::vector<float>& k, int64_t d, int64_t h,
                                         int64_t n) {
  std::vector<double> received(static_cast<size_t>(n), 0.0), logits(static_cast<size_t>(n));
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t head = 0; head < h; ++head) {
    for (int64_t qi = 0; qi < n; ++qi) {
      double mx = -1e300;
      for (int64_t ki = 0; ki < n; ++ki) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c)
          dot += double{q[static_cast<size_t>((qi * h + head) * d + c)]} * k[static_cast<size_t>((ki * h + head) * d + c)];
        logits[static_cast<size_t>(ki)] = dot * scale;
        mx = std::max(mx, logits[static_cast<size_t>(ki)]);
      }
      double sum = 0;
      for (double& l : logits) sum += (l = std::exp(l - mx));
      for (int64_t ki = 0; ki < n; ++ki) received[static_cast<size_t>(ki)] += logits[static_cast<size_t>(ki)] / sum;
    }
  }
  for (double& r : received) r /= static_cast<double>(h * n);
  return received;
}

}  // namespace vtprune::test
