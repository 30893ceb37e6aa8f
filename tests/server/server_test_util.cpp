#include "server_test_util.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "gguf.h"
#include "vtprune/llm.h"
#include "vtprune/vision.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wshadow"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

extern char** environ;

namespace vtprune::test {

namespace fs = std::filesystem;

const TinyModel& tiny_model() {
  static const TinyModel model = [] {
    const fs::path dir = temp_dir("server-tiny-model");
    std::string output;
    const std::string command = vtprune_binary().string() + " make-test-model --shape tiny --out " + dir.string();
    if (run_command(command, &output) != 0 || !fs::exists(dir / "llm.gguf") || !fs::exists(dir / "mmproj.gguf")) {
      // The CLI has no make-test-model (yet): write the same pair with the library writers.
      const llm::TestLlmShape shape = llm::test_llm_shape("tiny");
      llm::write_test_llm((dir / "llm.gguf").string(), shape, /*seed=*/0, llm::WeightType::f16);
      vision::MmprojShape vision_shape;  // LLaVA-1.5 geometry (336 px, 14 px patches: 576 tokens) at tiny width
      vision_shape.n_embd = 64;
      vision_shape.n_ff = 128;
      vision_shape.n_head = 4;
      vision_shape.proj_out = shape.n_embd;
      vision::write_test_mmproj(dir / "mmproj.gguf", vision_shape, /*seed=*/0, vision::WeightType::F16);
    }
    return TinyModel{dir / "llm.gguf", dir / "mmproj.gguf"};
  }();
  return model;
}

std::filesystem::path poisoned_mmproj() {
  static const fs::path path = [] {
    const fs::path out = temp_dir("poisoned") / "mmproj.gguf";
    fs::copy_file(tiny_model().mmproj, out);
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context* ctx = gguf_init_from_file(out.c_str(), params);
    EXPECT_NE(ctx, nullptr);
    const int64_t id = gguf_find_tensor(ctx, "v.patch_embd.weight");
    EXPECT_GE(id, 0);
    const size_t offset = gguf_get_data_offset(ctx) + gguf_get_tensor_offset(ctx, id);
    const size_t bytes = gguf_get_tensor_size(ctx, id);
    const ggml_type type = gguf_get_tensor_type(ctx, id);
    gguf_free(ctx);
    std::vector<uint8_t> nan(bytes);
    if (type == GGML_TYPE_F32) {
      for (size_t i = 0; i + 4 <= bytes; i += 4) std::memcpy(&nan[i], "\x00\x00\xc0\x7f", 4);
    } else {  // F16 (and BF16: 0x7fc0 is a NaN there too)
      for (size_t i = 0; i + 2 <= bytes; i += 2) std::memcpy(&nan[i], type == GGML_TYPE_F16 ? "\x00\x7e" : "\xc0\x7f", 2);
    }
    std::fstream file(out, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(offset));
    file.write(reinterpret_cast<const char*>(nan.data()), static_cast<std::streamsize>(nan.size()));
    return out;
  }();
  return path;
}

namespace {

std::vector<uint8_t> random_rgb(int width, int height, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> rgb(static_cast<size_t>(width) * height * 3);
  // smooth gradients plus noise: realistic enough for the encoder, compressible for PNG
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &rgb[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / std::max(1, width - 1));
      p[1] = static_cast<uint8_t>(y * 255 / std::max(1, height - 1));
      p[2] = static_cast<uint8_t>(rng() & 0x3F);
    }
  }
  return rgb;
}

void append_bytes(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* bytes = static_cast<const uint8_t*>(data);
  out->insert(out->end(), bytes, bytes + size);
}

}  // namespace

std::vector<uint8_t> png_image(int width, int height, uint32_t seed) {
  const auto rgb = random_rgb(width, height, seed);
  std::vector<uint8_t> out;
  stbi_write_png_to_func(append_bytes, &out, width, height, 3, rgb.data(), width * 3);
  return out;
}

std::vector<uint8_t> jpeg_image(int width, int height, uint32_t seed) {
  const auto rgb = random_rgb(width, height, seed);
  std::vector<uint8_t> out;
  stbi_write_jpg_to_func(append_bytes, &out, width, height, 3, rgb.data(), 90);
  return out;
}

std::vector<uint8_t> bmp_image(int width, int height, uint32_t seed) {
  const auto rgb = random_rgb(width, height, seed);
  std::vector<uint8_t> out;
  stbi_write_bmp_to_func(append_bytes, &out, width, height, 3, rgb.data());
  return out;
}

std::vector<uint8_t> png_header_only(uint32_t width, uint32_t height) {
  std::vector<uint8_t> b = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  for (const uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<uint8_t>(v >> shift));
  }
  b.insert(b.end(), {8, 2, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF});  // depth, colour type, ..., a wrong CRC
  b.resize(b.size() + 64, 0x00);
  return b;
}

std::string base64(const std::vector<uint8_t>& bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i + 1 == bytes.size()) {
    const uint32_t v = uint32_t{bytes[i]} << 16;
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == bytes.size()) {
    const uint32_t v = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8);
    out += {kAlphabet[(v >> 18) & 63], kAlphabet[(v >> 12) & 63], kAlphabet[(v >> 6) & 63], '='};
  }
  return out;
}

std::string data_uri(const std::vector<uint8_t>& bytes, const std::string& mime) {
  return "data:" + mime + ";base64," + base64(bytes);
}

json text_part(const std::string& text) { return {{"type", "text"}, {"text", text}}; }
json image_part(const std::string& url) { return {{"type", "image_url"}, {"image_url", {{"url", url}}}}; }

json chat_body(const json& parts, const json& extra) {
  json body = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", parts}}})}};
  body.update(extra);
  return body;
}

// ---- ServerProcess ------------------------------------------------------------------------------------

ServerProcess::ServerProcess(const std::vector<std::string>& extra_args, const std::filesystem::path& llm,
                             const std::filesystem::path& mmproj) {
  const TinyModel& model = tiny_model();
  log_path_ = temp_dir("server-log") / "serve.log";
  std::vector<std::string> args = {vtprune_binary().string(), "serve", "-m", (llm.empty() ? model.llm : llm).string(),
                                   "--mmproj", (mmproj.empty() ? model.mmproj : mmproj).string(), "--host", "127.0.0.1",
                                   "--port", "0", "-t", "1"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + args[0]);

  // The server prints "vtprune serve: listening on http://127.0.0.1:PORT" once it is bound.
  const std::regex listening(R"(listening on http://127\.0\.0\.1:(\d+))");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    std::smatch m;
    const std::string text = log();
    if (std::regex_search(text, m, listening)) {
      port_ = std::stoi(m[1]);
      break;
    }
    if (!running()) throw std::runtime_error("vtprune serve exited during startup:\n" + text);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (port_ == 0) throw std::runtime_error("vtprune serve did not start in time:\n" + log());
  // The port is bound before the listener runs; wait until it answers.
  for (int i = 0; i < 500; ++i) {
    auto c = client(std::chrono::seconds(5));
    if (auto res = c.Get("/health"); res && res->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("vtprune serve does not answer /health:\n" + log());
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && running() && stop(SIGTERM, std::chrono::seconds(30)) == -1 && pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

httplib::Client ServerProcess::client(std::chrono::seconds read_timeout) const {
  httplib::Client c("127.0.0.1", port_);
  c.set_connection_timeout(std::chrono::seconds(5));
  c.set_read_timeout(read_timeout);
  c.set_write_timeout(std::chrono::seconds(30));
  return c;
}

bool ServerProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    pid_ = -1;  // reaped: exited
    return false;
  }
  return true;
}

void ServerProcess::send_signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

int ServerProcess::stop(int signal, std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

std::string ServerProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> events;
  std::istringstream in(body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("data: ", 0) == 0) events.push_back(line.substr(6));
  }
  return events;
}

}  // namespace vtprune::test
