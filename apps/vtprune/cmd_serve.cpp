// `vtprune serve`: an OpenAI-compatible chat-completions server (see include/vtprune/server.h).
#include <csignal>
#include <cstdio>
#include <mutex>
#include <pthread.h>
#include <thread>

#include "commands.h"
#include "vtprune/server.h"

namespace vtprune::cli {
namespace {

// Turns SIGINT / SIGTERM into Server::shutdown() calls: the signals are blocked in every thread and taken
// synchronously by one watcher thread (sigtimedwait), so no handler and no global flag are needed. The first
// signal drains gracefully, the second cancels in-flight generations.
class SignalWatcher {
 public:
  SignalWatcher() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGINT);
    sigaddset(&signals_, SIGTERM);
    // Before any other thread exists (model loading included), so all of them inherit the mask.
    pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    thread_ = std::jthread([this](std::stop_token stop) {
      while (!stop.stop_requested()) {
        const timespec poll{0, 100'000'000};
        const int signal = sigtimedwait(&signals_, nullptr, &poll);
        if (signal > 0) on_signal(signal);
      }
    });
  }
  ~SignalWatcher() {
    thread_.request_stop();
    thread_.join();
    // The mask stays: unblocking would deliver a late signal with its default action (exit code != 0).
  }
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Signals that arrived while the model was loading take effect now.
  void attach(server::Server* target) {
    std::lock_guard lock(mutex_);
    server_ = target;
    if (server_ != nullptr && received_ > 0) server_->shutdown(received_ > 1);
  }
  bool received() {
    std::lock_guard lock(mutex_);
    return received_ > 0;
  }

 private:
  void on_signal(int signal) {
    std::lock_guard lock(mutex_);
    ++received_;
    std::fprintf(stderr, "[vtprune serve] %s: %s\n", signal == SIGINT ? "SIGINT" : "SIGTERM",
                 received_ == 1 ? "finishing in-flight requests, then exiting (again to cancel them)"
                                : "cancelling in-flight requests");
    if (server_ != nullptr) server_->shutdown(received_ > 1);
  }

  sigset_t signals_{};
  std::mutex mutex_;
  server::Server* server_ = nullptr;  // not owned; attached while run() serves
  int received_ = 0;
  std::jthread thread_;
};

}  // namespace

void add_serve(CLI::App& app, Action& action) {
  auto o = std::make_shared<server::ServerOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve an OpenAI-compatible /v1/chat/completions API with visual-token reduction");
  cmd->add_option("-m,--model", o->vlm.llm_path, "LLM GGUF (llama.cpp conversion: LLaVA-1.5, Qwen2.5-VL)")->required();
  cmd->add_option("--mmproj", o->vlm.mmproj_path, "mmproj GGUF (vision encoder + projector; its projector type picks the family)")->required();
  cmd->add_option("--host", o->host, "address to listen on (loopback by default)")->capture_default_str();
  cmd->add_option("--port", o->port, "port (0 = any free port, printed at start)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--parallel", o->parallel, "slots: requests generated at once, each with its own model copy")
      ->capture_default_str()->check(CLI::Range(1, 64));
  cmd->add_option("--queue", o->queue, "requests that may wait for a slot; more are answered 503")
      ->capture_default_str()->check(CLI::Range(0, 1000));
  cmd->add_option("--method", o->method, "default reduction method (requests override it with \"vtprune\": {...})")->capture_default_str();
  cmd->add_option("--budget", o->budget, "default budget per image: a count, a ratio, N% or all")->capture_default_str();
  cmd->add_option("--opt", o->options, "default method option key=value (repeatable)");
  cmd->add_flag("--allow-local-paths", o->allow_local_paths, "let image_url carry file:// or absolute paths on this machine");
  cmd->add_option("--alias", o->model_id, "model id in responses (default: the LLM file name)");
  cmd->add_option("-c,--ctx-size", o->vlm.n_ctx, "context length per slot")->capture_default_str();
  cmd->add_option("-t,--threads", o->vlm.threads, "threads per slot (0 = cores / parallel)")->capture_default_str();
  cmd->add_option("--max-body-bytes", o->limits.max_body_bytes, "largest request body")->capture_default_str();
  cmd->add_option("--max-images", o->limits.max_images, "images per request")->capture_default_str();
  cmd->add_option("--max-image-bytes", o->limits.max_image_bytes, "largest image file")->capture_default_str();
  cmd->add_option("--max-image-pixels", o->limits.max_image_pixels, "largest width x height")->capture_default_str();
  cmd->add_option("--max-tokens", o->limits.max_tokens, "largest max_tokens a request may ask for")->capture_default_str();
  cmd->add_option("--default-max-tokens", o->limits.default_max_tokens, "max_tokens when a request gives none")->capture_default_str();
  cmd->add_option("--shutdown-grace", o->shutdown_grace_s, "seconds in-flight requests may finish after SIGINT/SIGTERM")->capture_default_str();
  auto cache_mib = std::make_shared<int64_t>(o->image_cache_bytes >> 20);
  cmd->add_option("--image-cache-mib", *cache_mib,
                  "MiB of encoded + reduced images kept for later turns (LRU, shared by the slots; 0 = off)")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  auto no_prompt_cache = std::make_shared<bool>(false);
  cmd->add_flag("--no-prompt-cache", *no_prompt_cache,
                "prefill every request from scratch (default: a slot keeps the KV prefix a request shares with its last one)");
  cmd->add_flag("--mtmd-compat", o->vlm.mmproj.mtmd_compat, "encode exactly as llama.cpp's clip graph does");
  cmd->add_option("--anyres-layout", o->vlm.anyres_layout,
                  "LLaVA-NeXT: spatial (HiPrune's official order: overview, then the crops' rows in the image's raster) | "
                  "spatial_unpad (LLaVA-NeXT's own: padding removed, a newline token after every row) | "
                  "mtmd (llama.cpp's order: each crop in turn, then the overview)")
      ->capture_default_str();
  cmd->add_flag("--vit-f16-attention", o->vlm.mmproj.f16_attention,
                "flash attention on F16 K/V in untapped ViT blocks, as llama.cpp does (faster; features move ~1e-3)");
  add_device_options(*cmd, o->vlm);
  cmd->add_flag("-v,--verbose", o->vlm.verbose, "show llama.cpp's log");
  auto quiet = std::make_shared<bool>(false);
  cmd->add_flag("-q,--quiet", *quiet, "no per-request log lines");
  cmd->callback([o, quiet, cache_mib, no_prompt_cache, &action] {
    o->log_requests = !*quiet;
    o->image_cache_bytes = *cache_mib << 20;
    o->prompt_cache = !*no_prompt_cache;
    action = [o] {
      SignalWatcher signals;
      server::Server server(*o);
      if (signals.received()) return 0;  // interrupted while loading
      const int port = server.bind();
      std::fprintf(stderr, "[vtprune serve] %s + %s, %d slot(s), queue %d, default %s (budget %s), image cache %lld MiB, "
                   "prompt cache %s\n",
                   o->vlm.llm_path.c_str(), o->vlm.mmproj_path.c_str(), o->parallel, o->queue, o->method.c_str(),
                   o->budget.c_str(), static_cast<long long>(o->image_cache_bytes >> 20), o->prompt_cache ? "on" : "off");
      // Scripts and tests wait for this exact line (and read the port from it when --port 0).
      std::printf("vtprune serve: listening on http://%s:%d\n", o->host.c_str(), port);
      std::fflush(stdout);
      signals.attach(&server);
      const int rc = server.run();
      signals.attach(nullptr);
      std::fprintf(stderr, "[vtprune serve] stopped\n");
      return rc;
    };
  });
}

}  // namespace vtprune::cli
