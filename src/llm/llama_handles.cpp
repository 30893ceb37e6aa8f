#include "llama_handles.h"


#include <cstdio>
#include <mutex>

#include "ggml-backend.h"
#include "vtprune/devices.h"
#include "vtprune/reduce.h"

namespace vtprune::llm::detail {

namespace {

struct BackendLifetime {
  BackendLifetime() {
    load_ggml_backends();  // GGML_BACKEND_DL builds: libllama finds no device before the modules are loaded
    llama_backend_init();
  }
  ~BackendLifetime() { llama_backend_free(); }
  BackendLifetime(const BackendLifetime&) = delete;
  BackendLifetime& operator=(const BackendLifetime&) = delete;
};

constexpr size_t kMaxErrorText = 4096;

}  // namespace

std::shared_ptr<void> acquire_backend() {
  // The only process-wide state here: a weak reference, so the backend lives exactly as long as its users.
  static std::mutex mutex;
  static std::weak_ptr<BackendLifetime> current;
  std::lock_guard lock(mutex);
  if (auto alive = current.lock()) return alive;
  auto fresh = std::make_shared<BackendLifetime>();
  current = fresh;
  return fresh;
}



namespace {
thread_local LogSink* t_active_sink = nullptr;
}  // namespace

LogSink::Scope::Scope(LogSink& sink) : previous_(t_active_sink) {
  // (Re)point libllama's logger at the router: cheap, and survives anyone else having replaced it.
  static std::mutex mutex;
  std::lock_guard lock(mutex);
  ggml_log_callback callback_now = nullptr;
  void* user_data_now = nullptr;
  llama_log_get(&callback_now, &user_data_now);
  if (callback_now != &LogSink::route) llama_log_set(&LogSink::route, nullptr);
  t_active_sink = &sink;
}

LogSink::Scope::~Scope() { t_active_sink = previous_; }

void LogSink::route(ggml_log_level level, const char* text, void*) {
  if (t_active_sink != nullptr && text != nullptr) t_active_sink->receive(level, text);
}

std::string LogSink::recent_errors() const {
  std::string text = errors_;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

void LogSink::receive(ggml_log_level level, const char* text) {
  if (level != GGML_LOG_LEVEL_CONT) last_level_ = level;
  if (verbose_) std::fputs(text, stderr);
  if (last_level_ == GGML_LOG_LEVEL_WARN || last_level_ == GGML_LOG_LEVEL_ERROR) {
    errors_ += text;
    if (errors_.size() > kMaxErrorText) errors_.erase(0, errors_.size() - kMaxErrorText);
  }
}

}  // namespace vtprune::llm::detail
