// Runs llama.cpp's llama-mtmd-cli on the same files and reads its own timings from its JSONL log.
//
// TTFT is taken from the log's timestamps (--log-timestamps: microseconds, stamped when a line is queued,
// so the asynchronous log thread does not blur them): from "main: loading model" (logged right after the
// model, the mmproj and both warm-ups are loaded, before the image file is opened) to the first generated
// piece (the entry after the "\n" that ends the prompt). That is the span vtprune's TTFT covers too: image
// file decode, preprocessing, encode, prefill, first sample.
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "vtprune/family.h"
#include "vtprune/reduce.h"  // vtprune::Error
#include "vtprune_bench.h"

extern char** environ;

namespace vtprune::bench {
namespace {

// A temporary file removed when it goes out of scope.
class TempFile {
 public:
  TempFile() {
    static std::atomic<int> counter{0};  // distinct names within one process; not state the results depend on
    path_ = std::filesystem::temp_directory_path() /
            ("vtprune-mtmd-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log");
  }
  ~TempFile() {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string tail(const std::string& text, size_t n) { return text.size() <= n ? text : text.substr(text.size() - n); }

double number_after(const std::string& msg, const std::regex& pattern) {
  std::smatch m;
  return std::regex_search(msg, m, pattern) ? std::stod(m[1].str()) : -1.0;
}

}  // namespace

std::vector<std::string> mtmd_template_args(const std::string& family_name) {
  // LLaVA-1.5 files carry no chat template; vicuna is what llama.cpp's own tests use for them. The other families
  // use the file's Jinja template, which vtprune renders too (llama-mtmd-cli's default is a built-in guess).
  if (family::by_name(family_name).prompt == family::Prompt::Llava15) return {"--chat-template", "vicuna"};
  return {"--jinja"};
}

std::vector<std::string> mtmd_argv(const MtmdCommand& c) {
  std::vector<std::string> argv{c.binary, "-m", c.llm, "--mmproj", c.mmproj, "--image", c.image, "-p", c.prompt};
  argv.insert(argv.end(), c.template_args.begin(), c.template_args.end());
  for (const char* a : {"-n", "1", "--temp", "0", "--seed", "0"}) argv.emplace_back(a);  // greedy, one token: TTFT only
  if (c.flash_attn != "auto") argv.insert(argv.end(), {"-fa", c.flash_attn});
  // the same threads, context and (u)batch as vtprune's session (one image = one ubatch)
  for (const std::string& a : {std::string("-t"), std::to_string(c.threads), std::string("-tb"), std::to_string(c.threads),
                               std::string("-c"), std::to_string(c.n_ctx), std::string("-b"), std::to_string(c.n_batch),
                               std::string("-ub"), std::to_string(c.n_batch), std::string("--log-jsonl"),
                               std::string("--log-timestamps")}) {
    argv.push_back(a);
  }
  return argv;
}

MtmdRun parse_mtmd_log(const std::string& output) {
  static const std::regex encoded(R"((?:encoding done in|slice encoded in) (\d+(?:\.\d+)?) ms)");
  static const std::regex decoded(R"(decoded \(batch \d+/\d+\) in (\d+(?:\.\d+)?) ms)");
  static const std::regex prompt_tokens(R"(prompt eval time\s*=\s*[\d.]+ ms /\s*(\d+) tokens)");
  MtmdRun run;
  double t_start = -1, t_first = -1;
  bool after_image = false, prompt_ended = false;
  std::istringstream lines(output);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line.front() != '{') continue;
    const auto entry = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!entry.is_object() || !entry.contains("msg") || !entry.contains("time")) continue;
    const std::string msg = entry["msg"].get<std::string>();
    const double t_ms = entry["time"].get<double>() / 1000.0;
    if (msg.find("main: loading model") != std::string::npos) t_start = t_ms;
    if (const double v = number_after(msg, encoded); v >= 0) {
      run.encode_ms += v;
      after_image = true;  // this build logs no per-batch "image decoded" line: the encode line anchors the image
      prompt_ended = false;
    }
    if (const double v = number_after(msg, decoded); v >= 0) {
      run.image_decode_ms += v;
      after_image = true;
      prompt_ended = false;
    }
    if (const double v = number_after(msg, prompt_tokens); v >= 0) run.n_prompt_tokens = static_cast<int>(v);
    // after the image: image rows and suffix are decoded silently, eval_message() logs "\n", then the first piece
    if (after_image && t_first < 0 && entry.value("level", "") == "none") {
      if (prompt_ended) {
        t_first = t_ms;
      } else if (msg == "\n") {
        prompt_ended = true;
      }
    }
  }
  if (t_start < 0) throw Error("llama-mtmd-cli output has no \"main: loading model\" line (was --log-jsonl honoured?)");
  if (run.encode_ms <= 0) throw Error("llama-mtmd-cli output has no image encoding time");
  if (t_first < 0) throw Error("llama-mtmd-cli output has no generated token after the image");
  run.ttft_ms = t_first - t_start;
  return run;
}

MtmdRun run_mtmd_cli(const MtmdCommand& command) {
  const std::vector<std::string> args = mtmd_argv(command);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  TempFile log;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, command.binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw Error(command.binary + ": cannot start (" + std::strerror(rc) + ")");

  int status = 0;
  rusage usage{};
  while (::wait4(pid, &status, 0, &usage) < 0) {
    if (errno != EINTR) throw Error(command.binary + ": wait failed (" + std::strerror(errno) + ")");
  }
  const std::string output = read_all(log.path());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(command.binary + " failed (" +
                (WIFEXITED(status) ? "exit code " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status))) +
                "); its last output:\n" + tail(output, 2000));
  }
  MtmdRun run;
  try {
    run = parse_mtmd_log(output);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + "; its last output:\n" + tail(output, 2000));
  }
  run.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  return run;
}

}  // namespace vtprune::bench
