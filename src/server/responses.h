// OpenAI-shaped response bodies (chat.completion, chat.completion.chunk, model list).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "vtprune/pipeline.h"
#include "vtprune/server.h"

namespace vtprune::server {

// What every response of one request repeats.
struct ResponseIdentity {
  std::string id;       // "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// usage: prompt/completion/total tokens, prompt_tokens_details.cached_tokens (prompt positions a slot kept in its
// KV cache), plus visual_tokens_in / visual_tokens_kept.
nlohmann::json usage_json(const pipeline::Result& result);
// choices[].logprobs: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}], "refusal": null};
// `piece_of` gives an alternative token's text.
nlohmann::json logprobs_json(const pipeline::Result& result, const std::function<std::string(int32_t)>& piece_of);
// The "vtprune" extension: method, budget, per-image counts, stage timings and the queue wait.
nlohmann::json extension_json(const pipeline::Result& result, double queue_ms);

// `logprobs`: choices[0].logprobs (null unless the request asked for them).
std::string completion_body(const ResponseIdentity& identity, const pipeline::Result& result, double queue_ms,
                            const nlohmann::json& logprobs = nullptr);

// One server-sent event "data: {chunk}\n\n" with a content delta (the first one also carries the role).
std::string content_event(const ResponseIdentity& identity, std::string_view text, bool with_role);
// The last content-bearing event: empty delta, finish_reason, the extension, and the logprobs of the whole answer
// when asked for (clients that accumulate a stream's logprobs get them all from this one chunk).
std::string finish_event(const ResponseIdentity& identity, const pipeline::Result& result, double queue_ms,
                         const nlohmann::json& logprobs = nullptr);
// OpenAI's stream_options.include_usage chunk: no choices, usage only.
std::string usage_event(const ResponseIdentity& identity, const pipeline::Result& result);
std::string error_event(const std::string& error_json);
inline constexpr std::string_view kDoneEvent = "data: [DONE]\n\n";

// JSON text that never throws on invalid UTF-8 (a generation cut by max_tokens may end mid-character).
std::string dump(const nlohmann::json& value);

}  // namespace vtprune::server
