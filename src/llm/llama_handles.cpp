#include "llama_handles.h"

#include <cstdio>
#include <mutex>

namespace vtprune::llm::detail {

namespace {

struct BackendLifetime {
  BackendLifetime() { llama_backend_init(); }
  ~BackendLifetime() { llama_backend_free(); }
  BackendLifetime(const BackendLifetime&) = delete;
  BackendLifetime& operator=(const BackendLifetime&) = delete;
};

void silent_log(ggml_log_level, const char*, void*) {}

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

void LogSink::install() { llama_log_set(&LogSink::callback, this); }

void LogSink::uninstall() noexcept {
  ggml_log_callback callback_now = nullptr;
  void* user_data_now = nullptr;
  llama_log_get(&callback_now, &user_data_now);
  if (callback_now == &LogSink::callback && user_data_now == this) llama_log_set(&silent_log, nullptr);
}

std::string LogSink::recent_errors() const {
  std::string text = errors_;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

void LogSink::callback(ggml_log_level level, const char* text, void* user_data) {
  auto* sink = static_cast<LogSink*>(user_data);
  if (sink == nullptr || text == nullptr) return;
  if (level != GGML_LOG_LEVEL_CONT) sink->last_level_ = level;
  if (sink->verbose_) std::fputs(text, stderr);
  if (sink->last_level_ == GGML_LOG_LEVEL_WARN || sink->last_level_ == GGML_LOG_LEVEL_ERROR) {
    sink->errors_ += text;
    if (sink->errors_.size() > kMaxErrorText) sink->errors_.erase(0, sink->errors_.size() - kMaxErrorText);
  }
}

}  // namespace vtprune::llm::detail
