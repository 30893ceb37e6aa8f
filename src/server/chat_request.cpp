// Parsing and validation of POST /v1/chat/completions bodies: everything a request can get wrong is found
// here, in the HTTP thread, before the request takes a queue place or a slot.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "image_probe.h"
#include "vtprune/embedding_cache.h"
#include "vtprune/mtmd_encoder.h"
#include "vtprune/server.h"

namespace vtprune::server {

using json = nlohmann::json;

std::string ApiError::to_json() const {
  const json error = {{"message", what()},
                      {"type", type_},
                      {"param", param_.empty() ? json(nullptr) : json(param_)},
                      {"code", code_}};
  return json{{"error", error}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError invalid_request(std::string code, std::string param, const std::string& message) {
  return ApiError(400, "invalid_request_error", std::move(code), std::move(param), message);
}

std::string_view finish_reason(llm::StopReason stop) {
  return stop == llm::StopReason::eog || stop == llm::StopReason::stop_sequence ? "stop" : "length";
}

namespace {

// ---- typed field access; every error names the field ------------------------------------------------

// The member `key`, or nullptr when it is absent or null (OpenAI clients send null for "not set").
const json* member(const json& object, std::string_view key) {
  const auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void wrong_type(const json& value, const std::string& param, std::string_view expected) {
  throw invalid_request("invalid_type", param,
                        param + " must be " + std::string(expected) + ", not " + value.type_name());
}

const std::string& as_string(const json& value, const std::string& param) {
  if (!value.is_string()) wrong_type(value, param, "a string");
  return value.get_ref<const std::string&>();
}

bool as_bool(const json& value, const std::string& param) {
  if (!value.is_boolean()) wrong_type(value, param, "a boolean");
  return value.get<bool>();
}

double as_number(const json& value, const std::string& param) {
  if (!value.is_number()) wrong_type(value, param, "a number");
  return value.get<double>();
}

// Integers, and floats with an integral value (256.0), within int64.
int64_t as_integer(const json& value, const std::string& param) {
  if (value.is_number_unsigned()) {
    const auto v = value.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) wrong_type(value, param, "a 64-bit integer");
    return static_cast<int64_t>(v);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  if (value.is_number_float()) {
    const double v = value.get<double>();
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e18) return static_cast<int64_t>(v);
  }
  wrong_type(value, param, "an integer");
}

void check_range(bool ok, const std::string& param, const std::string& what) {
  if (!ok) throw invalid_request("invalid_value", param, param + " " + what);
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t");
  return std::string(text.substr(first, last - first + 1));
}

// ---- JSON ------------------------------------------------------------------------------------------

json parse_json(std::string_view body, int max_depth) {
  // Deeply nested input is refused while parsing, before it costs memory or stack anywhere downstream.
  const json::parser_callback_t depth_guard = [max_depth](int depth, json::parse_event_t, json&) {
    if (depth > max_depth) {
      throw invalid_request("invalid_json", "", "request JSON is nested deeper than " + std::to_string(max_depth) + " levels");
    }
    return true;
  };
  try {
    return json::parse(body.begin(), body.end(), depth_guard);
  } catch (const json::exception& e) {
    throw invalid_request("invalid_json", "", std::string("malformed JSON: ") + e.what());
  }
}

// ---- images -----------------------------------------------------------------------------------------

bool supported_image_mime(const std::string& mime) {
  static constexpr std::string_view kSupported[] = {"image/png",  "image/jpeg",  "image/jpg",     "image/pjpeg",
                                                     "image/bmp", "image/x-bmp", "image/x-ms-bmp"};
  return std::find(std::begin(kSupported), std::end(kSupported), mime) != std::end(kSupported);
}

std::vector<uint8_t> image_from_data_uri(std::string_view uri, const std::string& param, const Limits& limits) {
  const size_t comma = uri.find(',');
  if (comma == std::string_view::npos) {
    throw invalid_request("invalid_image_url", param, param + ": data URI has no ',' before its payload");
  }
  // data:<mime>[;param]*[;base64],<payload>
  std::string_view meta = uri.substr(5, comma - 5);
  std::string mime;
  bool base64 = false;
  for (size_t field = 0; !meta.empty() || field == 0; ++field) {
    const size_t semicolon = meta.find(';');
    const std::string token = lower(trim(meta.substr(0, semicolon)));
    if (field == 0) {
      mime = token;
    } else if (token == "base64") {
      base64 = true;
    }
    if (semicolon == std::string_view::npos) break;
    meta.remove_prefix(semicolon + 1);
  }
  if (!supported_image_mime(mime)) {
    throw invalid_request("unsupported_image_type", param,
                          param + ": image type '" + mime + "' is not supported; send image/png, image/jpeg or image/bmp");
  }
  if (!base64) {
    throw invalid_request("invalid_image_url", param, param + ": data URI must be base64-encoded (data:" + mime + ";base64,...)");
  }
  const std::string_view payload = uri.substr(comma + 1);
  // The body limit bounds the payload; refuse an oversized one before decoding it.
  if (static_cast<int64_t>(payload.size()) / 4 * 3 > limits.max_image_bytes + limits.max_image_bytes / 8 + 16) {
    throw invalid_request("image_too_large", param,
                          param + ": image is about " + std::to_string(payload.size() / 4 * 3) +
                              " bytes, over the limit of " + std::to_string(limits.max_image_bytes) + " bytes");
  }
  auto bytes = decode_base64(payload);
  if (!bytes) throw invalid_request("invalid_base64", param, param + ": data URI payload is not valid base64");
  if (bytes->empty()) throw invalid_request("invalid_image", param, param + ": image is empty");
  return std::move(*bytes);
}

std::vector<uint8_t> image_from_local_path(std::string_view url, const std::string& param, const Limits& limits) {
  std::string_view path = url;
  if (path.starts_with("file://")) path.remove_prefix(7);
  if (!path.starts_with("/")) {
    throw invalid_request("invalid_image_url", param, param + ": local paths must be absolute (file:///path or /path)");
  }
  const std::filesystem::path file{std::string(path)};
  std::error_code ec;
  const bool regular = std::filesystem::is_regular_file(file, ec);
  const auto size = regular ? std::filesystem::file_size(file, ec) : 0;
  if (!regular || ec) {
    throw invalid_request("image_not_found", param, param + ": cannot read local image " + file.string());
  }
  if (static_cast<int64_t>(size) > limits.max_image_bytes) {
    throw invalid_request("image_too_large", param,
                          param + ": image is " + std::to_string(size) + " bytes, over the limit of " +
                              std::to_string(limits.max_image_bytes) + " bytes");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  std::ifstream in(file, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()))) {
    throw invalid_request("image_not_found", param, param + ": cannot read local image " + file.string());
  }
  if (bytes.empty()) throw invalid_request("invalid_image", param, param + ": image is empty");
  return bytes;
}

// The bytes of one image part, checked by header: a known format, a size and a pixel count within limits.
std::vector<uint8_t> load_image(const std::string& url, const std::string& param, const RequestPolicy& policy) {
  const Limits& limits = policy.limits;
  std::vector<uint8_t> bytes;
  if (url.starts_with("data:")) {
    bytes = image_from_data_uri(url, param, limits);
  } else if (url.starts_with("file://") || url.starts_with("/")) {
    if (!policy.allow_local_paths) {
      throw invalid_request("local_paths_disabled", param,
                            param + ": local image paths are disabled on this server; send a data: URI "
                                    "(or start it with --allow-local-paths)");
    }
    bytes = image_from_local_path(url, param, limits);
  } else if (url.starts_with("http://") || url.starts_with("https://")) {
    throw invalid_request("unsupported_image_url", param,
                          param + ": remote image URLs are not fetched; send the image as a data: URI");
  } else {
    throw invalid_request("invalid_image_url", param, param + ": expected a data:image/...;base64 URI");
  }
  if (static_cast<int64_t>(bytes.size()) > limits.max_image_bytes) {
    throw invalid_request("image_too_large", param,
                          param + ": image is " + std::to_string(bytes.size()) + " bytes, over the limit of " +
                              std::to_string(limits.max_image_bytes) + " bytes");
  }
  if (!sniff_image_format(bytes)) {
    throw invalid_request("unsupported_image_type", param, param + ": image content is not PNG, JPEG or BMP");
  }
  const auto header = read_image_header(bytes);
  if (!header || header->width <= 0 || header->height <= 0) {
    throw invalid_request("invalid_image", param, param + ": image header is truncated or has no dimensions");
  }
  if (header->width * header->height > limits.max_image_pixels) {
    throw invalid_request("image_too_large", param,
                          param + ": image is " + std::to_string(header->width) + "x" + std::to_string(header->height) +
                              " pixels, over the limit of " + std::to_string(limits.max_image_pixels) + " pixels");
  }
  return bytes;
}

// ---- messages ---------------------------------------------------------------------------------------

void check_no_marker(const std::string& text, const std::string& param) {
  for (const std::string_view marker : {llm::kImageMarker, std::string_view(vision::MtmdEncoder::marker())}) {
    if (text.find(marker) != std::string::npos) {
      throw invalid_request("invalid_value", param,
                            param + " contains the literal marker " + std::string(marker) + "; images are placed by image_url parts");
    }
  }
}

[[noreturn]] void unsupported(const std::string& param, const std::string& why) {
  throw invalid_request("unsupported_parameter", param, param + ": " + why);
}

// One message's text with an <image> marker per image part (user messages only), and its images appended to `out`.
std::string read_content(const json& content, const std::string& param, const std::string& role, const RequestPolicy& policy,
                         pipeline::Request& out) {
  std::vector<std::string> pieces;
  if (content.is_string()) {
    check_no_marker(content.get_ref<const std::string&>(), param);
    pieces.push_back(content.get<std::string>());
  } else if (content.is_array()) {
    for (size_t j = 0; j < content.size(); ++j) {
      const json& part = content[j];
      const std::string part_param = param + "[" + std::to_string(j) + "]";
      if (!part.is_object()) wrong_type(part, part_param, "an object");
      const json* type = member(part, "type");
      if (type == nullptr) throw invalid_request("missing_field", part_param + ".type", part_param + ".type is required");
      const std::string& kind = as_string(*type, part_param + ".type");
      if (kind == "text" || (kind == "refusal" && role == "assistant")) {
        const char* field = kind == "text" ? "text" : "refusal";
        const json* text = member(part, field);
        if (text == nullptr) {
          throw invalid_request("missing_field", part_param + "." + field, part_param + "." + field + " is required");
        }
        const std::string& value = as_string(*text, part_param + "." + field);
        check_no_marker(value, part_param + "." + field);
        if (!value.empty()) pieces.push_back(value);
      } else if (kind == "image_url") {
        const std::string url_param = part_param + ".image_url";
        if (role != "user") {
          throw invalid_request("invalid_image_position", part_param,
                                part_param + ": images may only be in user messages, not in a " + role + " message");
        }
        const json* image_url = member(part, "image_url");
        if (image_url == nullptr) throw invalid_request("missing_field", url_param, url_param + " is required");
        std::string url;
        if (image_url->is_string()) {  // some clients send the URL directly
          url = image_url->get<std::string>();
        } else if (image_url->is_object()) {
          const json* u = member(*image_url, "url");
          if (u == nullptr) throw invalid_request("missing_field", url_param + ".url", url_param + ".url is required");
          url = as_string(*u, url_param + ".url");
          if (const json* detail = member(*image_url, "detail")) (void)as_string(*detail, url_param + ".detail");  // ignored
        } else {
          wrong_type(*image_url, url_param, "an object with a url");
        }
        if (static_cast<int>(out.images.size()) >= policy.limits.max_images) {
          throw invalid_request("too_many_images", url_param,
                                url_param + ": a request may carry at most " + std::to_string(policy.limits.max_images) +
                                    " images, counted over every message of the conversation");
        }
        out.images.push_back(load_image(url, url_param, policy));
        out.image_names.push_back(url_param);
        pieces.emplace_back(llm::kImageMarker);
      } else {
        throw invalid_request("unsupported_content_part", part_param + ".type",
                              part_param + ".type '" + kind + "' is not supported; use text" +
                                  (role == "user" ? " or image_url" : ""));
      }
    }
  } else {
    wrong_type(content, param, "a string or an array of content parts");
  }
  std::string text;
  for (size_t i = 0; i < pieces.size(); ++i) text += (i ? "\n" : "") + pieces[i];
  return text;
}

void read_messages(const json& body, const RequestPolicy& policy, ChatRequest& request) {
  pipeline::Request& out = request.pipeline;
  const json* messages = member(body, "messages");
  if (messages == nullptr) throw invalid_request("missing_field", "messages", "messages is required");
  if (!messages->is_array() || messages->empty()) wrong_type(*messages, "messages", "a non-empty array");
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& message = (*messages)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!message.is_object()) wrong_type(message, param, "an object");
    const json* role_field = member(message, "role");
    if (role_field == nullptr) throw invalid_request("missing_field", param + ".role", param + ".role is required");
    const std::string& role = as_string(*role_field, param + ".role");
    if (role == "tool" || role == "function") {
      throw invalid_request("unsupported_role", param + ".role", param + ".role: " + role + " messages are not supported (no tool calls)");
    }
    if (role != "system" && role != "developer" && role != "user" && role != "assistant") {
      throw invalid_request("invalid_value", param + ".role", param + ".role '" + role + "' is unknown");
    }
    for (const auto& [key, value] : message.items()) {
      if (key == "role" || key == "content" || key == "name" || (key == "refusal" && role == "assistant")) continue;
      if (value.is_null() || ((key == "tool_calls") && value.is_array() && value.empty())) continue;
      unsupported(param + "." + key, "is not supported (no tools, function calls or audio)");
    }
    const json* content = member(message, "content");
    if (content == nullptr) throw invalid_request("missing_field", param + ".content", param + ".content is required");
    std::string text = read_content(*content, param + ".content", role, policy, out);
    if (role == "user" && text.empty()) {
      throw invalid_request("invalid_value", param + ".content", param + ".content is empty: send text, images or both");
    }
    out.messages.push_back({role, std::move(text)});
  }
  if (out.messages.back().role != "user") {
    const std::string param = "messages[" + std::to_string(out.messages.size() - 1) + "].role";
    throw invalid_request("invalid_value", param, param + ": the last message must be a user message (the turn to answer)");
  }
  if (policy.prompt == family::Prompt::Llava15) {
    try {
      (void)llm::llava15_conversation_text(out.messages);
    } catch (const llm::MessageError& e) {
      throw invalid_request(e.code(), "messages[" + std::to_string(e.index()) + "]." + e.field(), e.what());
    }
  }
  // Digests: of every image (cache keys, KV identity) and of every message (slot affinity).
  for (const auto& bytes : out.images) out.image_digests.push_back(pipeline::digest(bytes));
  size_t image = 0;
  for (const llm::ChatMessage& m : out.messages) {
    size_t n = 0;
    for (size_t at = m.content.find(llm::kImageMarker); at != std::string::npos; at = m.content.find(llm::kImageMarker, at + 1)) ++n;
    request.message_digests.push_back(message_digest(m, std::span<const std::string>(out.image_digests).subspan(image, n)));
    image += n;
  }
}

// ---- sampling ---------------------------------------------------------------------------------------

// The top-level fields: implemented, accepted and ignored, or refused (anything else).
void check_fields(const json& body) {
  static const std::set<std::string, std::less<>> kImplemented = {
      "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "frequency_penalty",
      "presence_penalty", "logit_bias", "stop", "logprobs", "top_logprobs", "n", "stream", "stream_options", "vtprune"};
  static const std::set<std::string, std::less<>> kIgnored = {
      "model", "user", "store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"};
  for (const auto& [key, value] : body.items()) {
    if (kImplemented.count(key) || kIgnored.count(key) || value.is_null()) continue;
    if ((key == "tools" || key == "functions") && value.is_array() && value.empty()) continue;
    if ((key == "tool_choice" || key == "function_call") && value.is_string() &&
        (value.get_ref<const std::string&>() == "none" || value.get_ref<const std::string&>() == "auto")) {
      continue;
    }
    if (key == "response_format" && value.is_object() && value.size() == 1 && value.contains("type") && value["type"] == "text") {
      continue;
    }
    if (key == "modalities" && value == json::array({"text"})) continue;
    if (key == "tools" || key == "functions" || key == "tool_choice" || key == "function_call") {
      unsupported(key, "tools and function calling are not supported");
    }
    if (key == "response_format") unsupported(key, "only {\"type\": \"text\"} is supported (no JSON or schema output)");
    unsupported(key, "is not supported by vtprune (see the README's list of accepted fields)");
  }
  if (const json* model = member(body, "model")) (void)as_string(*model, "model");
}

void read_sampling(const json& body, const Limits& limits, ChatRequest& out) {
  llm::SamplingParams& s = out.pipeline.sampling;
  s.max_tokens = limits.default_max_tokens;
  const char* max_key = member(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (const json* v = member(body, max_key)) {
    const int64_t n = as_integer(*v, max_key);
    check_range(n >= 1 && n <= limits.max_tokens, max_key, "must be in [1, " + std::to_string(limits.max_tokens) + "]");
    s.max_tokens = static_cast<int>(n);
  }
  if (const json* v = member(body, "temperature")) {
    const double t = as_number(*v, "temperature");
    check_range(t >= 0.0 && t <= 2.0, "temperature", "must be in [0, 2]");
    s.temperature = static_cast<float>(t);
  }
  if (const json* v = member(body, "top_p")) {
    const double p = as_number(*v, "top_p");
    check_range(p > 0.0 && p <= 1.0, "top_p", "must be in (0, 1]");
    s.top_p = static_cast<float>(p);
  }
  if (const json* v = member(body, "seed")) {
    const int64_t seed = as_integer(*v, "seed");
    check_range(seed >= 0 && seed <= int64_t{std::numeric_limits<uint32_t>::max()}, "seed", "must be in [0, 4294967295]");
    s.seed = static_cast<uint32_t>(seed);
  }
  for (const char* key : {"frequency_penalty", "presence_penalty"}) {
    if (const json* v = member(body, key)) {
      const double p = as_number(*v, key);
      check_range(p >= -2.0 && p <= 2.0, key, "must be in [-2, 2]");
      (std::string_view(key) == "frequency_penalty" ? s.frequency_penalty : s.presence_penalty) = static_cast<float>(p);
    }
  }
  if (const json* v = member(body, "logit_bias")) {
    if (!v->is_object()) wrong_type(*v, "logit_bias", "an object of token ids and biases");
    for (const auto& [key, bias] : v->items()) {
      const std::string param = "logit_bias." + key;
      int64_t token = -1;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), token);
      if (ec != std::errc() || end != key.data() + key.size() || token < 0 || token > std::numeric_limits<int32_t>::max()) {
        throw invalid_request("invalid_value", param, param + ": keys are token ids (non-negative integers)");
      }
      const double b = as_number(bias, param);
      check_range(b >= -100.0 && b <= 100.0, param, "must be in [-100, 100]");
      s.logit_bias.emplace_back(static_cast<int32_t>(token), static_cast<float>(b));
    }
  }
  if (const json* v = member(body, "stop")) {
    std::vector<std::string> stops;
    if (v->is_string()) {
      stops.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      check_range(v->size() <= 4, "stop", "may hold at most 4 strings");
      for (size_t i = 0; i < v->size(); ++i) stops.push_back(as_string((*v)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      wrong_type(*v, "stop", "a string or an array of up to 4 strings");
    }
    for (size_t i = 0; i < stops.size(); ++i) {
      const std::string param = v->is_string() ? "stop" : "stop[" + std::to_string(i) + "]";
      check_range(!stops[i].empty(), param, "must not be empty");
      check_range(stops[i].size() <= 1024, param, "must be at most 1024 bytes");
    }
    s.stop = std::move(stops);
  }
  if (const json* v = member(body, "logprobs")) out.logprobs = as_bool(*v, "logprobs");
  if (const json* v = member(body, "top_logprobs")) {
    const int64_t k = as_integer(*v, "top_logprobs");
    check_range(k >= 0 && k <= 20, "top_logprobs", "must be in [0, 20]");
    check_range(out.logprobs, "top_logprobs", "needs \"logprobs\": true");
    s.top_logprobs = static_cast<int>(k);
  }
  if (out.logprobs && s.top_logprobs < 0) s.top_logprobs = 0;
  if (const json* v = member(body, "stream")) out.stream = as_bool(*v, "stream");
  if (const json* v = member(body, "stream_options")) {
    if (!v->is_object()) wrong_type(*v, "stream_options", "an object");
    if (const json* u = member(*v, "include_usage")) out.include_usage = as_bool(*u, "stream_options.include_usage");
  }
  if (const json* v = member(body, "n")) {
    const int64_t n = as_integer(*v, "n");
    check_range(n == 1, "n", "must be 1: vtprune generates one choice per request (send n requests for n answers)");
  }
}

// ---- reduction --------------------------------------------------------------------------------------

std::string option_value(const json& value, const std::string& param) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number()) return value.dump();
  if (value.is_array()) {  // number lists: [1, 2, 3] -> "1,2,3"
    std::string joined;
    for (size_t i = 0; i < value.size(); ++i) {
      if (!value[i].is_number()) wrong_type(value[i], param + "[" + std::to_string(i) + "]", "a number");
      joined += (i ? "," : "") + value[i].dump();
    }
    return joined;
  }
  wrong_type(value, param, "a string, number, boolean or list of numbers");
}

void read_reduction(const json& body, const RequestPolicy& policy, pipeline::Request& out) {
  out.method = policy.default_method;
  out.options = policy.default_options;
  out.budget = policy.default_budget;
  const json* ext = member(body, "vtprune");
  if (ext != nullptr) {
    if (!ext->is_object()) wrong_type(*ext, "vtprune", "an object");
    if (const json* m = member(*ext, "method")) {
      const std::string& name = as_string(*m, "vtprune.method");
      try {
        out.method = method_info(name).name;
      } catch (const Error& e) {
        throw invalid_request("unknown_method", "vtprune.method", e.what());
      }
      if (out.method != policy.default_method) out.options.clear();  // defaults belong to the default method
    }
    if (const json* o = member(*ext, "options")) {
      out.options.clear();
      if (o->is_object()) {
        for (const auto& [key, value] : o->items()) {
          out.options.push_back(key + "=" + option_value(value, "vtprune.options." + key));
        }
      } else if (o->is_array()) {
        for (size_t i = 0; i < o->size(); ++i) out.options.push_back(as_string((*o)[i], "vtprune.options[" + std::to_string(i) + "]"));
      } else {
        wrong_type(*o, "vtprune.options", "an object of option values or a list of key=value strings");
      }
    }
    if (const json* b = member(*ext, "budget")) {
      if (!b->is_string() && !b->is_number()) wrong_type(*b, "vtprune.budget", "a number or a string");
      try {
        out.budget = Budget::parse(b->is_string() ? b->get<std::string>() : b->dump());
      } catch (const Error& e) {
        throw invalid_request("invalid_budget", "vtprune.budget", e.what());
      }
    }
    if (const json* s = member(*ext, "scope")) {
      const std::string& scope = as_string(*s, "vtprune.scope");
      if (scope == "per_image") {
        out.scope = pipeline::BudgetScope::PerImage;
      } else if (scope == "total") {
        out.scope = pipeline::BudgetScope::Total;
      } else {
        throw invalid_request("invalid_value", "vtprune.scope", "vtprune.scope must be per_image or total, not '" + scope + "'");
      }
    }
  }
  // The method and options are checked now, against the served encoder, so a bad one never takes a slot.
  std::unique_ptr<Reducer> reducer;
  try {
    reducer = make_reducer(out.method, out.options);
  } catch (const Error& e) {
    throw invalid_request("invalid_option", "vtprune.options", e.what());
  }
  if (policy.encoder.grid.size() == 0) return;  // no encoder to check against (unit tests of the parser)
  try {
    (void)reducer->needs(policy.encoder);
  } catch (const Error& e) {
    throw invalid_request("invalid_option", "vtprune.options", e.what());
  }
  const auto n_images = static_cast<int64_t>(out.images.size());
  if (out.budget.kind == Budget::Kind::All || n_images == 0) return;
  const int64_t patches = policy.encoder.grid.size();
  try {
    if (out.scope == pipeline::BudgetScope::PerImage) {
      (void)out.budget.resolve(patches);
    } else if (out.budget.resolve(patches * n_images) < n_images) {
      throw Error("total budget " + out.budget.to_string() + " leaves fewer tokens than the " + std::to_string(n_images) +
                  " images (every image needs at least one)");
    }
  } catch (const Error& e) {
    throw invalid_request("budget_out_of_range", "vtprune.budget",
                          std::string(e.what()) + " (each image has " + std::to_string(patches) + " visual tokens)");
  }
}

}  // namespace

ChatRequest parse_chat_request(std::string_view body, const RequestPolicy& policy) {
  const json request = parse_json(body, policy.limits.max_json_depth);
  if (!request.is_object()) wrong_type(request, "body", "a JSON object");
  check_fields(request);
  ChatRequest out;
  read_messages(request, policy, out);
  read_sampling(request, policy.limits, out);
  read_reduction(request, policy, out.pipeline);
  return out;
}

std::string message_digest(const llm::ChatMessage& message, std::span<const std::string> image_digests) {
  std::string text = message.role;
  text += '\x1f';
  text += message.content;
  for (const std::string& d : image_digests) {
    text += '\x1f';
    text += d;
  }
  return pipeline::digest(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

}  // namespace vtprune::server
