#include "responses.h"

namespace vtprune::server {

using json = nlohmann::json;

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

json usage_json(const pipeline::Result& result) {
  return {{"prompt_tokens", result.n_prompt_tokens},
          {"completion_tokens", result.n_generated},
          {"total_tokens", result.n_prompt_tokens + result.n_generated},
          {"prompt_tokens_details", {{"cached_tokens", result.n_cached_tokens}}},
          {"visual_tokens_in", result.tokens_in},
          {"visual_tokens_kept", result.tokens_kept}};
}

namespace {

json bytes_of(const std::string& text) {
  json bytes = json::array();
  for (unsigned char c : text) bytes.push_back(static_cast<int>(c));
  return bytes;
}

}  // namespace

json logprobs_json(const pipeline::Result& result, const std::function<std::string(int32_t)>& piece_of) {
  json content = json::array();
  for (const llm::TokenLogprob& lp : result.logprobs) {
    json top = json::array();
    for (const auto& [token, logprob] : lp.top) {
      const std::string piece = piece_of(token);
      top.push_back({{"token", piece}, {"logprob", logprob}, {"bytes", bytes_of(piece)}});
    }
    content.push_back({{"token", lp.piece}, {"logprob", lp.logprob}, {"bytes", bytes_of(lp.piece)}, {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}, {"refusal", nullptr}};
}

json extension_json(const pipeline::Result& result, double queue_ms) {
  json images = json::array();
  for (const auto& image : result.images) {
    images.push_back({{"image", image.image}, {"tile", image.tile}, {"tokens_in", image.tokens_in}, {"tokens_kept", image.tokens_kept}, {"budget", image.budget},
                      {"cached", image.cached}});
  }
  const auto& t = result.timings;
  return {{"method", result.method},
          {"budget", result.budget},
          {"images", std::move(images)},
          {"timings",
           {{"queue_ms", queue_ms},
            {"decode_ms", t.decode_ms},
            {"preprocess_ms", t.preprocess_ms},
            {"encode_ms", t.encode_ms},
            {"reduce_ms", t.reduce_ms},
            {"project_ms", t.project_ms},
            {"prefill_ms", t.prefill_ms},
            {"ttft_ms", t.ttft_ms},
            {"decode_tok_s", t.decode_tok_s},
            {"total_ms", t.total_ms}}}};
}

namespace {

json chunk_base(const ResponseIdentity& identity) {
  return {{"id", identity.id}, {"object", "chat.completion.chunk"}, {"created", identity.created}, {"model", identity.model}};
}

std::string event(const json& chunk) { return "data: " + dump(chunk) + "\n\n"; }

}  // namespace

std::string completion_body(const ResponseIdentity& identity, const pipeline::Result& result, double queue_ms,
                            const json& logprobs) {
  json body = {{"id", identity.id},
               {"object", "chat.completion"},
               {"created", identity.created},
               {"model", identity.model},
               {"choices",
                json::array({{{"index", 0},
                              {"message", {{"role", "assistant"}, {"content", result.answer}, {"refusal", nullptr}}},
                              {"logprobs", logprobs},
                              {"finish_reason", finish_reason(result.stop)}}})},
               {"usage", usage_json(result)},
               {"vtprune", extension_json(result, queue_ms)}};
  return dump(body);
}

std::string content_event(const ResponseIdentity& identity, std::string_view text, bool with_role) {
  json delta = {{"content", text}};
  if (with_role) delta["role"] = "assistant";
  json chunk = chunk_base(identity);
  chunk["choices"] = json::array({{{"index", 0}, {"delta", std::move(delta)}, {"finish_reason", nullptr}}});
  return event(chunk);
}

std::string finish_event(const ResponseIdentity& identity, const pipeline::Result& result, double queue_ms,
                         const json& logprobs) {
  json chunk = chunk_base(identity);
  chunk["choices"] = json::array({{{"index", 0}, {"delta", json::object()}, {"logprobs", logprobs},
                                   {"finish_reason", finish_reason(result.stop)}}});
  chunk["vtprune"] = extension_json(result, queue_ms);
  return event(chunk);
}

std::string usage_event(const ResponseIdentity& identity, const pipeline::Result& result) {
  json chunk = chunk_base(identity);
  chunk["choices"] = json::array();
  chunk["usage"] = usage_json(result);
  return event(chunk);
}

std::string error_event(const std::string& error_json) { return "data: " + error_json + "\n\n"; }

}  // namespace vtprune::server
