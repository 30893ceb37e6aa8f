// vtprune serve: an OpenAI-compatible chat-completions server over pipeline::Vlm.
//
//   POST /v1/chat/completions   OpenAI request / response (and server-sent events with "stream": true)
//   GET  /health                {"status": "ok", ...}; 503 while shutting down
//   GET  /v1/models             the one served model (its id: the LLM file's name, or --alias)
//   GET  /metrics               Prometheus text
//
// Request contract:
//  * `messages`: any number of system / developer, user and assistant messages ending with a user message,
//    rendered with the family's template (LLaVA-1.5: conv_llava_v1 byte for byte, a leading system message
//    replacing its system prompt, turns alternating user / assistant; other families: the model file's own
//    template). Tool, function and unknown roles are refused (400).
//  * `content`: a string or a list of parts, {"type": "text", "text"} and (user messages only)
//    {"type": "image_url", "image_url": {"url", "detail" (ignored)}}. Parts are joined with "\n" in order and
//    every image part becomes an `<image>` marker at its place, so [image, text] gives LLaVA's own
//    "<image>\n{text}". Text may not contain the literal markers `<image>` / `<__media__>`. Images of every turn
//    count against limits.max_images and share the per-request budget (`scope`).
//  * Image URLs are `data:image/{png,jpeg,bmp};base64,...`; `file://` or absolute paths only when the server
//    runs with allow_local_paths; remote http(s) URLs are never fetched.
//  * Sampling: `max_completion_tokens` (or its old name `max_tokens`), `temperature` [0, 2], `top_p` (0, 1],
//    `seed`, `frequency_penalty` / `presence_penalty` [-2, 2], `logit_bias`, `stop` (a string or up to 4),
//    `logprobs` + `top_logprobs` (0..20), `n` (1 only), `stream`, `stream_options.include_usage`.
//  * Accepted and ignored (they change nothing vtprune computes): `model`, `user`, `store`, `metadata`,
//    `service_tier`, `parallel_tool_calls`, `prompt_cache_key`, `safety_identifier`, `stream_options` keys other
//    than include_usage, a message's `name` and `refusal`; `tools` / `functions` when empty, `tool_choice` /
//    `function_call` "none" or "auto", `response_format` {"type": "text"}, `modalities` ["text"].
//    Every other field, OpenAI's (tools, audio, prediction, reasoning_effort, web_search_options, verbosity,
//    structured response formats, ...) or not, is refused with 400 `unsupported_parameter` naming it.
//  * Reduction: an extension object `"vtprune": {"method": "hiprune", "budget": 64 | 0.25 | "25%" | "all",
//    "options": {"alpha": 0.1} | ["alpha=0.1"], "scope": "per_image" | "total"}`; what is missing comes from
//    the server's defaults (options default only when the method is the server's default method).
//
// Every error is OpenAI's shape {"error": {"message", "type", "param", "code"}} with a 4xx status when the
// client is at fault (413 for an oversized body, 404 for unknown routes), 503 + Retry-After when the queue
// is full or the server is shutting down, 500 otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vtprune/family.h"
#include "vtprune/pipeline.h"
#include "vtprune/reduce.h"

namespace vtprune::server {

// Per-request limits; each violation is a 4xx error naming the field.
struct Limits {
  int64_t max_body_bytes = int64_t{48} << 20;   // whole request body (base64 inflates images by 4/3)
  int max_images = 8;                           // image parts in one request
  int64_t max_image_bytes = int64_t{16} << 20;  // one image file after base64 decoding
  int64_t max_image_pixels = 8192 * 4096;       // width x height of one image, read from its header
  int max_tokens = 4096;                        // largest max_tokens a request may ask for
  int default_max_tokens = 256;                 // when a request gives none
  int max_json_depth = 32;                      // nesting of the request JSON
};

// An error in OpenAI's shape. `status` is the HTTP status; what() is the message.
class ApiError : public Error {
 public:
  ApiError(int status, std::string type, std::string code, std::string param, const std::string& message)
      : Error(message), status_(status), type_(std::move(type)), code_(std::move(code)), param_(std::move(param)) {}
  int status() const { return status_; }
  const std::string& type() const { return type_; }    // invalid_request_error | server_error
  const std::string& code() const { return code_; }    // machine-readable reason, e.g. "invalid_base64"
  const std::string& param() const { return param_; }  // the offending field, e.g. "messages[0].content[1]"
  // {"error": {"message", "type", "param" (null when empty), "code"}}
  std::string to_json() const;

 private:
  int status_;
  std::string type_, code_, param_;
};

// A 400 invalid_request_error.
ApiError invalid_request(std::string code, std::string param, const std::string& message);

// What requests are checked against before they are queued.
struct RequestPolicy {
  Limits limits;
  bool allow_local_paths = false;
  std::string default_method = "none";
  std::vector<std::string> default_options;  // key=value, for default_method only
  Budget default_budget = Budget::all();
  // The served vision tower: methods, options and budgets are validated against it before queueing.
  EncoderInfo encoder;
  // The served family's prompt format: LLaVA-1.5's conversation shape is checked before queueing.
  family::Prompt prompt = family::Prompt::FileTemplate;
};

// One validated chat-completions request.
struct ChatRequest {
  // images (file bytes and their SHA-256), messages with <image> markers, method, options, budget, sampling
  pipeline::Request pipeline;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage, as OpenAI sends it
  bool logprobs = false;       // answer with choices[].logprobs (pipeline.sampling.top_logprobs >= 0)
  // One digest per message (role, text, image digests): a slot whose last conversation shares the longest run
  // of them holds the longest reusable KV prefix (see message_digest).
  std::vector<std::string> message_digests;
};

// Parses and validates one POST /v1/chat/completions body: JSON shape, limits, image URLs and headers
// (type, bytes, pixels; nothing is decoded), the conversation's shape, method, options and budget (with
// make_reducer against policy.encoder) and sampling ranges. Throws ApiError for every bad input and nothing
// else for them.
ChatRequest parse_chat_request(std::string_view body, const RequestPolicy& policy);

// What identifies one message for slot affinity: SHA-256 over its role, its text (markers included) and the
// digests of its images.
std::string message_digest(const llm::ChatMessage& message, std::span<const std::string> image_digests);

// The OpenAI finish_reason for a stop reason: "stop" (end of generation or a stop string) or "length".
std::string_view finish_reason(llm::StopReason stop);

struct ServerOptions {
  pipeline::VlmParams vlm;        // model files, context, threads per slot (0 = cores / parallel)
  std::string host = "127.0.0.1";
  int port = 8080;                // 0 = any free port (see Server::bind)
  int parallel = 1;               // slots: each owns its own pipeline::Vlm (a libllama context is single-threaded)
  int queue = 8;                  // requests waiting for a slot; one more is answered 503
  std::string model_id;           // "model" in responses; default: the LLM file name without extension
  std::string method = "none";    // default reduction
  std::string budget = "all";
  std::vector<std::string> options;
  bool allow_local_paths = false;
  Limits limits;
  int retry_after_s = 1;          // Retry-After on 503
  double shutdown_grace_s = 30;   // in-flight requests may finish this long after shutdown() before cancellation
  bool log_requests = true;       // one line per request on stderr
  // Encoded + reduced images kept for later turns (all slots share it): bytes held at most; 0 = off.
  int64_t image_cache_bytes = int64_t{256} << 20;
  // Each slot keeps the KV rows a request shares with its previous one (prompt caching); off: every request
  // is prefilled from scratch.
  bool prompt_cache = true;
};

class Server {
 public:
  // Loads `parallel` copies of the model and validates the defaults. Throws Error.
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and returns the bound port (the chosen one when port is 0). Throws Error.
  int bind();
  // Serves until shutdown() (binds first if bind() was not called). On shutdown: new requests are answered
  // 503, queued ones 503, in-flight ones finish (cancelled after shutdown_grace_s), then every thread is
  // joined. Returns 0 after a clean shutdown, 1 when the listener failed.
  int run();
  // Thread-safe, idempotent. The first call starts a graceful shutdown; `cancel_in_flight` (or a second
  // call with it) cancels running generations at their next token.
  void shutdown(bool cancel_in_flight = false);

  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vtprune::server
