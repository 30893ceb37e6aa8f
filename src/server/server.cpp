// vtprune::server::Server: cpp-httplib front end, a bounded job queue and N slots, each owning a pipeline::Vlm.
//
// Threads: httplib's pool runs the handlers (parse + validate, enqueue, then wait for the job); one worker
// per slot runs jobs on its own Vlm; run() coordinates the shutdown. No global state.
#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <random>
#include <thread>

#include "job.h"
#include "metrics.h"
#include "responses.h"
#include "vtprune/embedding_cache.h"
#include "vtprune/server.h"

namespace vtprune::server {
namespace {

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

// Thrown from the piece callback to stop a generation whose client left or whose server is shutting down;
// not a std::exception, so nothing on the way can mistake it for an error.
struct Cancelled {};

ApiError shutting_down_error() {
  return ApiError(503, "server_error", "shutting_down", "", "the server is shutting down; retry on another instance");
}

// Counts responses still being produced, so shutdown can wait for streams to finish writing.
class ResponseTracker {
 public:
  // Held by a handler (and by its stream provider) until the response is written.
  std::shared_ptr<void> enter() {
    {
      std::lock_guard lock(mutex_);
      ++active_;
    }
    return std::shared_ptr<void>(nullptr, [this](void*) {
      {
        std::lock_guard lock(mutex_);
        --active_;
      }
      idle_.notify_all();
    });
  }
  bool wait_idle(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return idle_.wait_for(lock, timeout, [&] { return active_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable idle_;
  int64_t active_ = 0;
};

std::string endpoint_label(const std::string& path) {
  for (const char* known : {"/v1/chat/completions", "/health", "/v1/models", "/metrics"}) {
    if (path == known) return known;
  }
  return "other";
}

int default_threads_per_slot(int parallel) {
  const int cores = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, parallel));
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  RequestPolicy policy;
  int n_ctx = 0;
  std::vector<std::unique_ptr<pipeline::Vlm>> slots;  // unique_ptr: a worker keeps a stable reference
  std::unique_ptr<pipeline::EmbeddingCache> cache;    // shared by the slots; null when off
  JobQueue queue;
  Metrics metrics;
  ResponseTracker responses;
  httplib::Server http;
  int bound_port = -1;
  const int64_t started_unix = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch()).count();
  std::string id_prefix;
  std::atomic<uint64_t> next_id{0};
  std::atomic<int64_t> in_flight{0};
  std::atomic<bool> cancel_in_flight{false};

  // Shutdown state: set by shutdown() (any thread), consumed by run().
  std::mutex state_mutex;
  std::condition_variable state_changed;
  bool stop_requested = false;
  bool listener_finished = false;
  std::atomic<bool> stopping{false};

  explicit Impl(ServerOptions opts)
      : options(std::move(opts)),
        queue(static_cast<size_t>(std::max(0, options.queue)), static_cast<size_t>(std::max(1, options.parallel))) {
    if (options.parallel < 1) throw Error("serve: --parallel must be at least 1, not " + std::to_string(options.parallel));
    if (options.queue < 0) throw Error("serve: --queue must be at least 0, not " + std::to_string(options.queue));
    if (options.image_cache_bytes < 0) {
      throw Error("serve: --image-cache-mib must be at least 0, not " + std::to_string(options.image_cache_bytes >> 20));
    }
    // The model file's name, as llama-server names its model (--alias overrides it).
    if (options.model_id.empty()) options.model_id = std::filesystem::path(options.vlm.llm_path).filename().string();
    if (options.vlm.threads <= 0) options.vlm.threads = default_threads_per_slot(options.parallel);
    // The pipeline enforces the same image limits again when it decodes (defence in depth).
    options.vlm.image_limits.max_file_bytes = options.limits.max_image_bytes;
    options.vlm.image_limits.max_pixels = options.limits.max_image_pixels;

    const Limits& l = options.limits;
    if (l.max_body_bytes < 1 || l.max_images < 0 || l.max_image_bytes < 1 || l.max_image_pixels < 1 || l.max_tokens < 1 ||
        l.default_max_tokens < 1 || l.default_max_tokens > l.max_tokens || l.max_json_depth < 2) {
      throw Error("serve: limits must be positive and the default max_tokens (" + std::to_string(l.default_max_tokens) +
                  ") at most --max-tokens (" + std::to_string(l.max_tokens) + ")");
    }
    policy.limits = l;
    policy.allow_local_paths = options.allow_local_paths;
    try {  // bad defaults fail at startup, before the models load
      policy.default_method = method_info(options.method).name;
      policy.default_options = options.options;
      policy.default_budget = Budget::parse(options.budget);
      (void)make_reducer(policy.default_method, policy.default_options);
    } catch (const Error& e) {
      throw Error(std::string("serve: default reduction (--method/--budget/--opt): ") + e.what());
    }

    // One copy of the weights for all slots: each slot shares the loaded models with its own encoder
    // state, context and KV cache.
    slots.push_back(std::make_unique<pipeline::Vlm>(options.vlm));
    for (int i = 1; i < options.parallel; ++i) slots.push_back(std::make_unique<pipeline::Vlm>(slots.front()->share()));
    policy.encoder = slots.front()->encoder_info();
    policy.prompt = slots.front()->family().prompt;
    n_ctx = slots.front()->session().n_ctx();
    if (options.image_cache_bytes > 0) cache = std::make_unique<pipeline::EmbeddingCache>(options.image_cache_bytes);
    try {
      (void)make_reducer(policy.default_method, slots.front()->method_options(policy.default_method, policy.default_options))
          ->needs(policy.encoder);
      // a fixed grid (LLaVA-1.5): the budget must fit it; dynamic-resolution families check per image
      if (policy.default_budget.kind != Budget::Kind::All && policy.encoder.grid.size() > 0) {
        (void)policy.default_budget.resolve(policy.encoder.grid.size());
      }
    } catch (const Error& e) {
      throw Error(std::string("serve: default reduction (--method/--budget/--opt) does not fit this model: ") + e.what());
    }

    std::random_device random;
    char prefix[20];
    std::snprintf(prefix, sizeof prefix, "%08x%08x", random(), random());
    id_prefix = prefix;
    setup_http();
  }

  // ---- HTTP -----------------------------------------------------------------------------------------

  void setup_http() {
    // Every queued or running request holds a handler thread while it waits, plus headroom for /health,
    // /metrics and fast rejections. Past the cap, connections wait in httplib's own (unbounded) backlog.
    const size_t handler_threads = std::min<size_t>(static_cast<size_t>(options.parallel + options.queue + 8), 1024);
    // httplib's API: it takes ownership of the returned queue.
    http.new_task_queue = [handler_threads] { return new httplib::ThreadPool(handler_threads); };
    http.set_payload_max_length(static_cast<size_t>(options.limits.max_body_bytes));
    http.set_keep_alive_timeout(2);  // idle keep-alive connections delay shutdown by at most this
    // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second server share the port.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // Errors httplib produces itself (404, 413, 400 for unparsable HTTP) get OpenAI's shape too.
    const std::string body_limit = std::to_string(options.limits.max_body_bytes);
    http.set_error_handler(httplib::Server::HandlerWithResponse([body_limit](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      ApiError error = res.status == 413 ? ApiError(413, "invalid_request_error", "body_too_large", "",
                                                    "request body exceeds the limit of " + body_limit + " bytes")
                       : res.status == 404 ? ApiError(404, "invalid_request_error", "not_found", "",
                                                      "no route for " + req.method + " " + req.path)
                                           : ApiError(res.status, "invalid_request_error", "invalid_request", "",
                                                      "HTTP error " + std::to_string(res.status));
      res.set_content(error.to_json(), "application/json");
      return httplib::Server::HandlerResponse::Handled;
    }));
    http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      res.status = 500;
      res.set_content(ApiError(500, "server_error", "internal_error", "", what).to_json(), "application/json");
    });
    // Counted before the response is written, so a client that reads /metrics after a response sees it.
    http.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      metrics.count_response(endpoint_label(req.path), res.status);
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      if (options.log_requests) {
        std::fprintf(stderr, "[vtprune serve] %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
      }
    });
    http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) { chat(req, res); });
    http.Get("/health", [this](const httplib::Request&, httplib::Response& res) { health(res); });
    http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { models(res); });
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(gauges()), "text/plain; version=0.0.4; charset=utf-8");
    });
  }

  Gauges gauges() const {
    Gauges g{static_cast<int64_t>(queue.depth()), in_flight.load(), static_cast<int64_t>(slots.size())};
    if (cache) {
      const pipeline::EmbeddingCache::Stats c = cache->stats();
      g.cache_hits = c.hits, g.cache_misses = c.misses, g.cache_evictions = c.evictions;
      g.cache_entries = c.entries, g.cache_bytes = c.bytes, g.cache_max_bytes = c.max_bytes;
    }
    return g;
  }

  void reply_error(httplib::Response& res, const ApiError& error) const {
    res.status = error.status();
    if (error.status() == 503) res.set_header("Retry-After", std::to_string(options.retry_after_s));
    res.set_content(error.to_json(), "application/json");
  }

  void health(httplib::Response& res) const {
    const Gauges g = gauges();
    const nlohmann::json body = {{"status", stopping ? "shutting_down" : "ok"},
                                 {"slots", g.slots},
                                 {"slots_busy", g.in_flight},
                                 {"queue_depth", g.queue_depth},
                                 {"queue_capacity", options.queue}};
    res.status = stopping ? 503 : 200;
    res.set_content(dump(body), "application/json");
  }

  void models(httplib::Response& res) const {
    const nlohmann::json model = {{"id", options.model_id},
                                  {"object", "model"},
                                  {"created", started_unix},
                                  {"owned_by", "vtprune"},
                                  {"vtprune",
                                   {{"n_ctx", n_ctx},
                                    {"family", slots.front()->family().name},
                                    {"files",
                                     {{"model", std::filesystem::path(options.vlm.llm_path).filename().string()},
                                      {"mmproj", std::filesystem::path(options.vlm.mmproj_path).filename().string()}}},
                                    {"visual_tokens_per_image", policy.encoder.grid.size()},
                                    {"image_cache_bytes", options.image_cache_bytes},
                                    {"prompt_cache", options.prompt_cache},
                                    {"default_method", policy.default_method},
                                    {"default_budget", policy.default_budget.to_string()}}}};
    res.set_content(dump(nlohmann::json{{"object", "list"}, {"data", nlohmann::json::array({model})}}), "application/json");
  }

  ResponseIdentity identity() {
    char id[64];
    std::snprintf(id, sizeof id, "chatcmpl-%s%08" PRIx64, id_prefix.c_str(), next_id.fetch_add(1));
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count();
    return {id, now, options.model_id};
  }

  void chat(const httplib::Request& req, httplib::Response& res) {
    const auto received = Clock::now();
    auto response_guard = responses.enter();
    if (stopping) return reply_error(res, shutting_down_error());
    std::shared_ptr<Job> job;
    try {
      ChatRequest request = parse_chat_request(req.body, policy);
      request.pipeline.cache = cache.get();
      request.pipeline.reuse_prefix = options.prompt_cache;
      job = std::make_shared<Job>(std::move(request), received);
    } catch (const ApiError& e) {
      return reply_error(res, e);
    }
    switch (queue.try_push(job)) {
      case JobQueue::Push::accepted: break;
      case JobQueue::Push::closed: return reply_error(res, shutting_down_error());
      case JobQueue::Push::full:
        return reply_error(res, ApiError(503, "server_error", "server_busy", "",
                                         "all " + std::to_string(slots.size()) + " slots are busy and the queue of " +
                                             std::to_string(options.queue) + " is full; retry later"));
    }
    const ResponseIdentity ident = identity();
    if (!job->request().stream) {
      job->wait_done();
      if (job->error()) return reply_error(res, *job->error());
      res.set_content(completion_body(ident, *job->result(), queue_ms(*job), job->logprobs()), "application/json");
      return;
    }
    // Streams keep their status open until the first token: every error before it is a proper 4xx/5xx.
    job->wait_first_output();
    if (job->error()) return reply_error(res, *job->error());
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    bool role_sent = false;
    res.set_chunked_content_provider(
        "text/event-stream",
        [job, ident, role_sent, response_guard](size_t, httplib::DataSink& sink) mutable {
          const Job::Progress progress = job->take_progress(std::chrono::milliseconds(200));
          std::string out;
          if (!progress.text.empty() || (!role_sent && progress.done && job->result())) {
            out += content_event(ident, progress.text, !role_sent);
            role_sent = true;
          }
          if (progress.done) {
            if (job->error()) {
              out += error_event(job->error()->to_json());
            } else {
              const pipeline::Result& result = *job->result();
              out += finish_event(ident, result, queue_ms(*job), job->logprobs());
              if (job->request().include_usage) out += usage_event(ident, result);
            }
            out += kDoneEvent;
          }
          if (!out.empty() && !sink.write(out.data(), out.size())) {
            job->cancel();  // the client is gone: free the slot at the next token
            return false;
          }
          if (progress.done) sink.done();
          return true;
        },
        [job](bool success) {
          if (!success) job->cancel();
        });
  }

  static double queue_ms(const Job& job) {
    const auto started = job.started_at();
    return started ? ms_between(job.received(), *started) : 0.0;
  }

  // ---- slots ----------------------------------------------------------------------------------------

  // A prompt that cannot fit even with the fewest visual tokens the method can keep is refused before the
  // pipeline encodes anything (adaptive methods may still overflow; the pipeline refuses those), naming the
  // message at which the conversation outgrows the context.
  void check_context(pipeline::Vlm& vlm, const pipeline::Request& request) const {
    // Only where the visual token count is known before encoding (LLaVA-1.5's fixed grid and prompt); for
    // dynamic-resolution families the pipeline refuses a prompt that does not fit (a 400 naming the message).
    // (LLaVA-NeXT's tile count depends on each image's size: the pipeline checks it too.)
    if (vlm.family().prompt != family::Prompt::Llava15 || vlm.family().tiling != family::Tiling::Single ||
        policy.encoder.grid.size() == 0) {
      return;
    }
    const int64_t patches = policy.encoder.grid.size();
    const auto n_images = static_cast<int64_t>(request.images.size());
    const BudgetUse use = method_info(request.method).budget_use;
    // the fewest rows each image can become
    int64_t per_image = 1;  // adaptive / pooling methods keep at least one token per image
    if (use == BudgetUse::Ignored || (use == BudgetUse::Exact && request.budget.kind == Budget::Kind::All)) {
      per_image = patches;
    } else if (use == BudgetUse::Exact) {
      per_image = request.scope == pipeline::BudgetScope::Total ? request.budget.resolve(patches * n_images) / std::max<int64_t>(1, n_images)
                                                                : request.budget.resolve(patches);
    }
    const int64_t visual = per_image * n_images;
    std::vector<llm::ChatMessage> messages = request.messages;
    if (messages.empty()) messages.push_back({"user", request.prompt});
    for (auto& m : messages) {
      for (size_t at; (at = m.content.find(llm::kImageMarker)) != std::string::npos;) m.content.erase(at, llm::kImageMarker.size());
    }
    const auto tokens_of = [&](size_t n_messages) {
      std::vector<llm::ChatMessage> prefix(messages.begin(), messages.begin() + static_cast<ptrdiff_t>(n_messages));
      while (!prefix.empty() && prefix.back().role != "user") prefix.pop_back();  // the template ends with a user turn
      if (prefix.empty() || prefix.back().role != "user") return int64_t{0};
      return static_cast<int64_t>(vlm.session().tokenize(llm::llava15_conversation_text(prefix), true).size());
    };
    const int64_t text_tokens = tokens_of(messages.size());
    if (text_tokens + visual <= n_ctx) return;
    // the first message whose conversation so far does not fit (images counted where they appear)
    size_t at = messages.size() - 1;
    int64_t images_so_far = 0;
    for (size_t k = 0; k < request.messages.size(); ++k) {
      const std::string& content = request.messages[k].content;
      for (size_t p = content.find(llm::kImageMarker); p != std::string::npos; p = content.find(llm::kImageMarker, p + 1)) ++images_so_far;
      if (request.messages[k].role == "user" && tokens_of(k + 1) + per_image * images_so_far > n_ctx) {
        at = k;
        break;
      }
    }
    const std::string param = "messages[" + std::to_string(at) + "].content";
    throw ApiError(400, "invalid_request_error", "context_length_exceeded", param,
                   param + ": the conversation needs at least " + std::to_string(text_tokens + visual) + " tokens (" +
                       std::to_string(text_tokens) + " text + " + std::to_string(visual) + " visual) but the context holds " +
                       std::to_string(n_ctx) + "; it outgrows the context at this message: shorten it, drop earlier turns or "
                       "keep fewer visual tokens");
  }

  void run_job(size_t slot, pipeline::Vlm& vlm, Job& job) {
    job.mark_started();
    if (job.cancelled() || cancel_in_flight) return job.fail(shutting_down_error());
    try {
      check_context(vlm, job.request().pipeline);
      pipeline::Result result = vlm.run(job.request().pipeline, [&](std::string_view piece) {
        if (job.cancelled() || cancel_in_flight) throw Cancelled{};
        job.push_piece(piece);
      });
      const auto finished = Clock::now();
      metrics.count_request_tokens(result.tokens_in, result.tokens_kept, result.n_prompt_tokens, result.n_generated,
                                   result.n_cached_tokens);
      // What this slot's KV cache holds now: this conversation and its answer (the next turn's history).
      // The answer as the client reads it (JSON turns bytes that are not UTF-8 into U+FFFD) is what comes back.
      std::vector<std::string> history = job.request().message_digests;
      history.push_back(message_digest({"assistant", nlohmann::json::parse(dump(nlohmann::json(result.answer))).get<std::string>()}, {}));
      queue.set_history(slot, std::move(history));  // also marks the slot as about to take the next job
      const auto first = job.first_piece_at();
      const double ttft_ms = first ? ms_between(job.received(), *first) : queue_ms(job) + result.timings.ttft_ms;
      metrics.observe_ttft(ttft_ms / 1000.0);
      metrics.observe_duration(ms_between(job.received(), finished) / 1000.0);
      nlohmann::json logprobs = nullptr;
      if (job.request().logprobs) {
        logprobs = logprobs_json(result, [&](int32_t token) { return vlm.session().token_to_piece(token); });
      }
      job.complete(std::move(result), std::move(logprobs));
    } catch (const Cancelled&) {
      job.fail(ApiError(503, "server_error", "request_cancelled", "",
                        "the request was cancelled (the client left or the server is shutting down)"));
    } catch (const ApiError& e) {
      job.fail(e);
    } catch (const llm::MessageError& e) {
      job.fail(invalid_request(e.code(), "messages[" + std::to_string(e.index()) + "]." + e.field(), e.what()));
    } catch (const InputError& e) {
      // What the pipeline finds wrong with the request (undecodable image bodies, a prompt longer than the
      // context with an adaptive method, ...): everything cheaper to check was checked before queueing.
      job.fail(invalid_request("invalid_request", "", e.what()));
    } catch (const std::exception& e) {
      // Any other Error is ours (a failed decode, an encoder failure): a 5xx, not the client's fault.
      job.fail(ApiError(500, "server_error", "internal_error", "", e.what()));
    }
  }

  void work(size_t slot, pipeline::Vlm& vlm) {
    while (std::shared_ptr<Job> job = queue.pop(slot)) {
      ++in_flight;
      run_job(slot, vlm, *job);
      {
        std::lock_guard lock(state_mutex);  // run() waits on in_flight under this mutex
        --in_flight;
      }
      state_changed.notify_all();
    }
  }

  // ---- lifecycle ------------------------------------------------------------------------------------

  int bind() {
    if (bound_port >= 0) return bound_port;
    const int port = options.port == 0 ? http.bind_to_any_port(options.host)
                                       : (http.bind_to_port(options.host, options.port) ? options.port : -1);
    if (port <= 0) {
      throw Error("serve: cannot listen on " + options.host + ":" + std::to_string(options.port) +
                  " (address in use, or not a local address?)");
    }
    bound_port = port;
    return port;
  }

  void request_stop(bool cancel) {
    {
      std::lock_guard lock(state_mutex);
      stop_requested = true;
      stopping = true;
      if (cancel) cancel_in_flight = true;
    }
    state_changed.notify_all();
  }

  int run() {
    bind();
    std::vector<std::jthread> workers;
    for (size_t i = 0; i < slots.size(); ++i) workers.emplace_back([this, i, &vlm = *slots[i]] { work(i, vlm); });
    bool listened = true;
    std::jthread listener([this, &listened] {
      listened = http.listen_after_bind();
      {
        std::lock_guard lock(state_mutex);
        listener_finished = true;
      }
      state_changed.notify_all();
    });

    std::unique_lock lock(state_mutex);
    state_changed.wait(lock, [&] { return stop_requested || listener_finished; });
    stopping = true;
    lock.unlock();

    // 1. Requests still waiting for a slot will not get one.
    for (const auto& job : queue.close()) job->fail(shutting_down_error());
    // 2. In-flight requests finish, or are cancelled at their next token after the grace period.
    lock.lock();
    const auto grace = std::chrono::duration<double>(std::max(0.0, options.shutdown_grace_s));
    if (!state_changed.wait_for(lock, grace, [&] { return in_flight == 0; })) {
      std::fprintf(stderr, "[vtprune serve] grace period over: cancelling %" PRId64 " in-flight request(s)\n", in_flight.load());
      cancel_in_flight = true;
    }
    state_changed.wait(lock, [&] { return in_flight == 0; });
    lock.unlock();
    // 3. Let streams write their last events, then close the listener (httplib joins its handler threads).
    responses.wait_idle(std::chrono::seconds(10));
    while (!listener_finished_now() && !http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (http.is_running()) http.stop();
    listener.join();
    workers.clear();  // joins: every worker has seen the closed queue
    return listened ? 0 : 1;
  }

  bool listener_finished_now() {
    std::lock_guard lock(state_mutex);
    return listener_finished;
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;
int Server::bind() { return impl_->bind(); }
int Server::run() { return impl_->run(); }
void Server::shutdown(bool cancel_in_flight) { impl_->request_stop(cancel_in_flight); }
const ServerOptions& Server::options() const { return impl_->options; }

}  // namespace vtprune::server
