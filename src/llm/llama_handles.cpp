#include "llama_handles.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <mutex>
#include <set>

#include "ggml-backend.h"
#include "vtprune/reduce.h"

namespace vtprune::llm::detail {

namespace {

struct BackendLifetime {
  BackendLifetime() { llama_backend_init(); }
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

// ggml's RPC client aborts the process when it cannot connect (ggml-rpc.cpp: "Failed to connect"), so the
// endpoint is tried first: a TCP connection with a 5 s limit.
bool rpc_endpoint_reachable(const std::string& host, const std::string& port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return false;
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, &freeaddrinfo);
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    const int fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    bool ok = connect(fd, a->ai_addr, a->ai_addrlen) == 0;
    if (!ok && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int error = 0;
      socklen_t len = sizeof error;
      ok = poll(&p, 1, 5000) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0;
    }
    close(fd);
    if (ok) return true;
  }
  return false;
}

}  // namespace

void add_rpc_servers(const std::vector<std::string>& endpoints) {
  ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
  if (rpc == nullptr) {
    throw InputError("--rpc: this build of llama.cpp has no RPC backend (VTPRUNE_RPC=0 left it out: re-run scripts/setup.sh without it, "
                     "or cmake -DGGML_RPC=ON)");
  }
  using AddServer = ggml_backend_reg_t (*)(const char*);
  const auto add_server = reinterpret_cast<AddServer>(ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server"));
  if (add_server == nullptr) throw Error("llama.cpp's RPC backend has no ggml_backend_rpc_add_server");
  static std::mutex mutex;
  static std::set<std::string> registered;  // mirrors ggml's process-wide registry
  std::lock_guard lock(mutex);
  for (const std::string& endpoint : endpoints) {
    const size_t colon = endpoint.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size() ||
        endpoint.find_first_not_of("0123456789", colon + 1) != std::string::npos) {
      throw InputError("--rpc: '" + endpoint + "' is not host:port");
    }
    if (registered.count(endpoint)) continue;
    if (!rpc_endpoint_reachable(endpoint.substr(0, colon), endpoint.substr(colon + 1))) {
      throw InputError("--rpc: cannot connect to the RPC server " + endpoint + " (is ggml-rpc-server running there?)");
    }
    ggml_backend_reg_t reg = add_server(endpoint.c_str());
    if (reg == nullptr) throw Error("--rpc: cannot add the RPC server " + endpoint);
    ggml_backend_register(reg);
    registered.insert(endpoint);
  }
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
