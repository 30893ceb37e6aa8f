// Helpers for the server tests: the tiny test model, images, a `vtprune serve` child process on a loopback
// port, and an HTTP client for it.
#pragma once

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_support.h"

namespace vtprune::test {

using json = nlohmann::json;

// llm.gguf + mmproj.gguf of the `tiny` shape (written once per test process): `vtprune make-test-model`
// when the CLI has it, else the library writers directly.
struct TinyModel {
  std::filesystem::path llm, mmproj;
};
const TinyModel& tiny_model();
// A copy of the tiny mmproj whose patch embedding is NaN: every feature and attention score comes out NaN (an
// encoder fault, for the 500 paths).
std::filesystem::path poisoned_mmproj();

// Encoded images for requests.
std::vector<uint8_t> png_image(int width, int height, uint32_t seed = 1);
std::vector<uint8_t> jpeg_image(int width, int height, uint32_t seed = 1);
std::vector<uint8_t> bmp_image(int width, int height, uint32_t seed = 1);
// A PNG whose header claims width x height, followed by junk (a decompression bomb's header).
std::vector<uint8_t> png_header_only(uint32_t width, uint32_t height);

std::string base64(const std::vector<uint8_t>& bytes);
std::string data_uri(const std::vector<uint8_t>& bytes, const std::string& mime = "image/png");

json text_part(const std::string& text);
json image_part(const std::string& url);
// {"model": "tiny", "messages": [{"role": "user", "content": parts}]} merged with `extra`.
json chat_body(const json& parts, const json& extra = json::object());

// `vtprune serve` on 127.0.0.1 and a port the OS picked (--port 0), stdout/stderr in a log file; the tiny model
// unless other files are given.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& extra_args, const std::filesystem::path& llm = {},
                         const std::filesystem::path& mmproj = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  httplib::Client client(std::chrono::seconds read_timeout = std::chrono::seconds(120)) const;
  // Sends `signal`, waits for the exit and returns the exit code (-1: killed by a signal or timed out).
  int stop(int signal, std::chrono::seconds timeout = std::chrono::seconds(60));
  bool running();
  void send_signal(int signal);
  std::string log() const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::filesystem::path log_path_;
};

// The data of every `data: ...` server-sent event, in order.
std::vector<std::string> sse_events(const std::string& body);

}  // namespace vtprune::test
