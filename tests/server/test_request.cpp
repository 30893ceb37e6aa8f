// parse_chat_request without a model: every rejection is an ApiError with the right status, code and param.
#include <gtest/gtest.h>

#include <fstream>

#include "server/base64.h"
#include "server/image_probe.h"
#include "server_test_util.h"
#include "vtprune/embedding_cache.h"
#include "vtprune/server.h"

namespace vtprune::test {
namespace {

using server::ApiError;
using server::ChatRequest;
using server::RequestPolicy;

// LLaVA-1.5's CLIP ViT-L/14-336 as the reducers see it: 24x24 patches, CLS, 16 heads, 24 layers, feature 22.
RequestPolicy llava_policy() {
  RequestPolicy policy;
  policy.encoder.grid = {24, 24};
  policy.encoder.has_cls = true;
  policy.encoder.heads = 16;
  policy.encoder.num_layers = 24;
  policy.encoder.feature_layer = 22;
  policy.prompt = family::Prompt::Llava15;
  return policy;
}

ChatRequest parse(const json& body, const RequestPolicy& policy = llava_policy()) {
  return server::parse_chat_request(body.dump(), policy);
}

// Parses and expects an ApiError; returns it for further checks.
ApiError rejection(const std::string& body, const RequestPolicy& policy = llava_policy()) {
  try {
    (void)server::parse_chat_request(body, policy);
  } catch (const ApiError& e) {
    // Every error serialises to OpenAI's shape.
    const json j = json::parse(e.to_json());
    EXPECT_TRUE(j["error"].contains("message"));
    EXPECT_TRUE(j["error"].contains("type"));
    EXPECT_TRUE(j["error"].contains("param"));
    EXPECT_EQ(j["error"]["code"], e.code());
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.substr(0, 300);
  return server::invalid_request("none", "", "accepted");
}
ApiError rejection(const json& body, const RequestPolicy& policy = llava_policy()) { return rejection(body.dump(), policy); }

const std::string kPng = data_uri(png_image(32, 24));

TEST(ServerRequest, TextAndImagesBecomeMarkersInOrder) {
  const auto png = png_image(40, 30), jpg = jpeg_image(20, 20), bmp = bmp_image(8, 8);
  const ChatRequest r = parse(chat_body(json::array({image_part(data_uri(png)), text_part("What is left?"),
                                                     image_part(data_uri(jpg, "image/jpeg")), text_part("And right?"),
                                                     image_part(data_uri(bmp, "image/bmp"))})));
  ASSERT_EQ(r.pipeline.messages.size(), 1u);
  EXPECT_EQ(r.pipeline.messages[0].role, "user");
  EXPECT_EQ(r.pipeline.messages[0].content, "<image>\nWhat is left?\n<image>\nAnd right?\n<image>");
  EXPECT_EQ(r.pipeline.image_digests.size(), 3u);
  EXPECT_EQ(r.pipeline.image_digests[0], pipeline::digest(png));
  ASSERT_EQ(r.pipeline.images.size(), 3u);
  EXPECT_EQ(r.pipeline.images[0], png);
  EXPECT_EQ(r.pipeline.images[1], jpg);
  EXPECT_EQ(r.pipeline.images[2], bmp);
  EXPECT_EQ(r.pipeline.image_names[1], "messages[0].content[2].image_url");
  EXPECT_FALSE(r.stream);
  EXPECT_EQ(r.pipeline.method, "none");
  EXPECT_EQ(r.pipeline.sampling.max_tokens, server::Limits{}.default_max_tokens);
}

TEST(ServerRequest, StringContentAndSampling) {
  const ChatRequest r = parse(chat_body("Hello", {{"max_tokens", 7}, {"temperature", 0.5}, {"top_p", 0.9}, {"seed", 42},
                                                  {"stream", true}, {"stream_options", {{"include_usage", true}}},
                                                  {"n", 1}, {"stop", nullptr}, {"presence_penalty", 0}}));
  EXPECT_EQ(r.pipeline.messages.at(0).content, "Hello");
  EXPECT_TRUE(r.pipeline.images.empty());
  EXPECT_EQ(r.pipeline.sampling.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.pipeline.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.pipeline.sampling.top_p, 0.9f);
  EXPECT_EQ(r.pipeline.sampling.seed, 42u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_EQ(parse(chat_body("x", {{"max_completion_tokens", 3}})).pipeline.sampling.max_tokens, 3);
}

TEST(ServerRequest, ReductionExtensionAndDefaults) {
  RequestPolicy policy = llava_policy();
  policy.default_method = "hiprune";
  policy.default_options = {"alpha=0.2"};
  policy.default_budget = Budget::tokens(64);
  const json image = json::array({image_part(kPng), text_part("q")});
  ChatRequest r = parse(chat_body(image), policy);
  EXPECT_EQ(r.pipeline.method, "hiprune");
  EXPECT_EQ(r.pipeline.options, std::vector<std::string>{"alpha=0.2"});
  EXPECT_EQ(r.pipeline.budget.count, 64);

  const json dfmr_options = {{"window", 2}, {"factors", {1, 2, 3}}, {"ceil_mode", false}};
  const json dfmr = {{"method", "dfmr"}, {"budget", "25%"}, {"options", dfmr_options}};
  r = parse(chat_body(image, {{"vtprune", dfmr}}), policy);
  EXPECT_EQ(r.pipeline.method, "dfmr");
  EXPECT_EQ(r.pipeline.budget.kind, Budget::Kind::Ratio);
  EXPECT_EQ(r.pipeline.options, (std::vector<std::string>{"ceil_mode=false", "factors=1,2,3", "window=2"}));

  r = parse(chat_body(image, {{"vtprune", {{"method", "fastervlm"}}}}), policy);  // other method: no default options
  EXPECT_TRUE(r.pipeline.options.empty());
  r = parse(chat_body(image, {{"vtprune", {{"budget", 0.5}, {"options", {"alpha=0.3"}}, {"scope", "total"}}}}), policy);
  EXPECT_EQ(r.pipeline.method, "hiprune");
  EXPECT_EQ(r.pipeline.options, std::vector<std::string>{"alpha=0.3"});
  EXPECT_EQ(r.pipeline.scope, pipeline::BudgetScope::Total);
}

TEST(ServerRequest, MalformedJson) {
  for (const char* body : {"", "{", "{\"messages\": [}", "[1,2", "nul", "{\"a\":1}x", "\xff\xfe"}) {
    const ApiError e = rejection(std::string(body));
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(e.code(), "invalid_json") << body;
  }
  EXPECT_EQ(rejection(std::string(100000, '[')).code(), "invalid_json");  // nesting bomb
  EXPECT_EQ(rejection(json::array({1, 2})).code(), "invalid_type");
  EXPECT_EQ(rejection(json{{"model", "x"}}).code(), "missing_field");
}

TEST(ServerRequest, MessagesShape) {
  EXPECT_EQ(rejection(json{{"messages", json::array()}}).param(), "messages");
  EXPECT_EQ(rejection(json{{"messages", "hi"}}).code(), "invalid_type");
  const json user = {{"role", "user"}, {"content", "hi"}};
  const json assistant = {{"role", "assistant"}, {"content", "hello"}};
  // conversations: a system prompt, earlier turns, developer as OpenAI's newer name for system
  ChatRequest r = parse(json{{"messages", {{{"role", "system"}, {"content", "be brief"}}, user, assistant, user}}});
  ASSERT_EQ(r.pipeline.messages.size(), 4u);
  EXPECT_EQ(r.pipeline.messages[0].role, "system");
  EXPECT_EQ(r.pipeline.messages[2].content, "hello");
  EXPECT_EQ(r.message_digests.size(), 4u);
  EXPECT_EQ(r.message_digests[1], r.message_digests[3]) << "the same message, the same digest";
  EXPECT_NE(r.message_digests[1], r.message_digests[2]);
  EXPECT_EQ(parse(json{{"messages", {{{"role", "developer"}, {"content", "x"}}, user}}}).pipeline.messages[0].role, "developer");
  // typed text parts in system and assistant messages; null content parts of assistant messages (refusal) too
  r = parse(json{{"messages", {{{"role", "system"}, {"content", json::array({text_part("a"), text_part("b")})}}, user,
                               {{"role", "assistant"}, {"content", json::array({{{"type", "refusal"}, {"refusal", "no"}}})}}, user}}});
  EXPECT_EQ(r.pipeline.messages[0].content, "a\nb");
  EXPECT_EQ(r.pipeline.messages[2].content, "no");
  // what LLaVA-1.5's template cannot say, named by message
  const ApiError two_users = rejection(json{{"messages", {user, user}}});
  EXPECT_EQ(two_users.code(), "unsupported_conversation");
  EXPECT_EQ(two_users.param(), "messages[1].role");
  EXPECT_EQ(rejection(json{{"messages", {user, {{"role", "system"}, {"content", "late"}}, user}}}).param(), "messages[1].role");
  EXPECT_EQ(rejection(json{{"messages", {assistant, user}}}).param(), "messages[0].role");
  // other families' templates take any order (the file's template decides)
  RequestPolicy qwen = llava_policy();
  qwen.prompt = family::Prompt::FileTemplate;
  EXPECT_EQ(parse(json{{"messages", {user, user}}}, qwen).pipeline.messages.size(), 2u);
  // every family: the last message is the user's, roles are known, tools are not supported
  const ApiError last = rejection(json{{"messages", {user, assistant}}});
  EXPECT_EQ(last.param(), "messages[1].role");
  EXPECT_EQ(rejection(json{{"messages", {user, assistant}}}, qwen).param(), "messages[1].role");
  EXPECT_EQ(rejection(json{{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}).code(), "invalid_value");
  EXPECT_EQ(rejection(json{{"messages", {user, {{"role", "tool"}, {"content", "x"}, {"tool_call_id", "1"}}, user}}}).code(),
            "unsupported_role");
  const json with_calls = {{"role", "assistant"}, {"content", "x"}, {"tool_calls", json::array({{{"id", "1"}}})}};
  const ApiError calls = rejection(json{{"messages", {user, with_calls, user}}});
  EXPECT_EQ(calls.code(), "unsupported_parameter");
  EXPECT_EQ(calls.param(), "messages[1].tool_calls");
  const json named = {{"role", "user"}, {"content", "x"}, {"name", "ann"}};
  EXPECT_EQ(parse(json{{"messages", json::array({named})}}).pipeline.messages.size(), 1u);
  EXPECT_EQ(rejection(json{{"messages", {{{"role", "user"}}}}}).code(), "missing_field");
  EXPECT_EQ(rejection(chat_body(42)).code(), "invalid_type");
  EXPECT_EQ(rejection(chat_body(json::array({{{"type", "audio"}}}))).code(), "unsupported_content_part");
  EXPECT_EQ(rejection(chat_body(json::array())).code(), "invalid_value");  // nothing to ask
  const ApiError marker = rejection(chat_body(json::array({text_part("look: <image>")})));
  EXPECT_EQ(marker.param(), "messages[0].content[0].text");
  EXPECT_EQ(rejection(chat_body("<image> what?")).code(), "invalid_value");
  EXPECT_EQ(rejection(chat_body("<__media__> what?")).code(), "invalid_value");
  EXPECT_EQ(rejection(json{{"messages", {{{"role", "system"}, {"content", "<image>"}}, user}}}).param(), "messages[0].content");
}

// Images may come in any user turn; they count together against the limit and the budget; a system or assistant
// message cannot carry one.
TEST(ServerRequest, ImagesAcrossTurns) {
  const json first = {{"role", "user"}, {"content", json::array({image_part(kPng), text_part("What is it?")})}};
  const json answer = {{"role", "assistant"}, {"content", "A gradient."}};
  const json second = {{"role", "user"}, {"content", json::array({text_part("And this?"), image_part(kPng)})}};
  const ChatRequest r = parse(json{{"messages", {first, answer, second}}});
  ASSERT_EQ(r.pipeline.images.size(), 2u);
  EXPECT_EQ(r.pipeline.messages[0].content, "<image>\nWhat is it?");
  EXPECT_EQ(r.pipeline.messages[2].content, "And this?\n<image>");
  EXPECT_EQ(r.pipeline.image_names[1], "messages[2].content[1].image_url");
  RequestPolicy two = llava_policy();
  two.limits.max_images = 2;
  const ApiError many = rejection(json{{"messages", {first, answer, second, answer, second}}}, two);
  EXPECT_EQ(many.code(), "too_many_images");
  EXPECT_EQ(many.param(), "messages[4].content[1].image_url");
  const json image_answer = {{"role", "assistant"}, {"content", json::array({image_part(kPng)})}};
  const ApiError in_answer = rejection(json{{"messages", {first, image_answer, second}}});
  EXPECT_EQ(in_answer.code(), "invalid_image_position");
  EXPECT_EQ(in_answer.param(), "messages[1].content[0]");
  const json image_system = {{"role", "system"}, {"content", json::array({text_part("x"), image_part(kPng)})}};
  EXPECT_EQ(rejection(json{{"messages", {image_system, first}}}).param(), "messages[0].content[1]");
  // a total budget is checked against every image of the conversation
  const json ext = {{"method", "fastervlm"}, {"budget", 1}, {"scope", "total"}};
  EXPECT_EQ(rejection(json{{"messages", {first, answer, second}}, {"vtprune", ext}}).code(), "budget_out_of_range");
}

TEST(ServerRequest, StopPenaltiesLogprobsAndBias) {
  ChatRequest r = parse(chat_body("hi", {{"stop", "\n"}, {"frequency_penalty", 0.5}, {"presence_penalty", -1},
                                         {"logprobs", true}, {"top_logprobs", 3}, {"logit_bias", {{"42", -100}, {"7", 2.5}}}}));
  EXPECT_EQ(r.pipeline.sampling.stop, std::vector<std::string>{"\n"});
  EXPECT_FLOAT_EQ(r.pipeline.sampling.frequency_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.pipeline.sampling.presence_penalty, -1.0f);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.pipeline.sampling.top_logprobs, 3);
  ASSERT_EQ(r.pipeline.sampling.logit_bias.size(), 2u);
  r = parse(chat_body("hi", {{"stop", {"a", "bb", "ccc", "dddd"}}, {"logprobs", true}}));
  EXPECT_EQ(r.pipeline.sampling.stop.size(), 4u);
  EXPECT_EQ(r.pipeline.sampling.top_logprobs, 0);
  EXPECT_EQ(parse(chat_body("hi", {{"logprobs", false}})).pipeline.sampling.top_logprobs, -1);
  const auto bad = [](const json& extra) { return rejection(chat_body("hi", extra)); };
  EXPECT_EQ(bad({{"stop", {"a", "b", "c", "d", "e"}}}).param(), "stop");
  EXPECT_EQ(bad({{"stop", ""}}).param(), "stop");
  EXPECT_EQ(bad({{"stop", {"a", ""}}}).param(), "stop[1]");
  EXPECT_EQ(bad({{"stop", {"a", 3}}}).param(), "stop[1]");
  EXPECT_EQ(bad({{"frequency_penalty", 2.5}}).param(), "frequency_penalty");
  EXPECT_EQ(bad({{"presence_penalty", "x"}}).code(), "invalid_type");
  EXPECT_EQ(bad({{"top_logprobs", 2}}).param(), "top_logprobs");  // needs logprobs: true
  EXPECT_EQ(bad({{"logprobs", true}, {"top_logprobs", 21}}).param(), "top_logprobs");
  EXPECT_EQ(bad({{"logit_bias", {{"x", 1}}}}).param(), "logit_bias.x");
  EXPECT_EQ(bad({{"logit_bias", {{"5", 101}}}}).param(), "logit_bias.5");
  const ApiError n = bad({{"n", 2}});
  EXPECT_EQ(n.param(), "n");
  EXPECT_NE(std::string(n.what()).find("must be 1"), std::string::npos);
}

// Every field is implemented, accepted and ignored (listed in the README), or refused naming it.
TEST(ServerRequest, OpenAiFieldsAcceptedOrRefusedConsistently) {
  const json ignored = {{"model", "anything"}, {"user", "u-1"}, {"store", false}, {"metadata", {{"k", "v"}}},
                        {"service_tier", "auto"}, {"parallel_tool_calls", true}, {"prompt_cache_key", "k"},
                        {"safety_identifier", "s"}, {"tools", json::array()}, {"tool_choice", "none"},
                        {"response_format", {{"type", "text"}}}, {"modalities", {"text"}},
                        {"stream_options", {{"include_usage", false}, {"include_obfuscation", true}}}};
  EXPECT_EQ(parse(chat_body("hi", ignored)).pipeline.messages.size(), 1u);
  for (const auto& [key, value] : std::vector<std::pair<std::string, json>>{
           {"tools", json::array({{{"type", "function"}}})},
           {"tool_choice", "required"},
           {"functions", json::array({{{"name", "f"}}})},
           {"response_format", {{"type", "json_object"}}},
           {"audio", {{"voice", "alloy"}}},
           {"modalities", {"text", "audio"}},
           {"prediction", {{"type", "content"}, {"content", "x"}}},
           {"reasoning_effort", "low"},
           {"web_search_options", json::object()},
           {"verbosity", "low"},
           {"top_k", 40},
           {"made_up", 1}}) {
    SCOPED_TRACE(key);
    const ApiError e = rejection(chat_body("hi", {{key, value}}));
    EXPECT_EQ(e.code(), "unsupported_parameter");
    EXPECT_EQ(e.param(), key);
  }
  // null means "not set" for every field
  EXPECT_EQ(parse(chat_body("hi", {{"audio", nullptr}, {"top_k", nullptr}})).pipeline.messages.size(), 1u);
  EXPECT_EQ(rejection(chat_body("hi", {{"model", 3}})).param(), "model");
}

TEST(ServerRequest, ImageUrls) {
  const auto bad = [](const std::string& url) { return rejection(chat_body(json::array({image_part(url)}))); };
  EXPECT_EQ(bad("data:image/png;base64,@@@@").code(), "invalid_base64");
  EXPECT_EQ(bad("data:image/png;base64,iVBORw0KGgo=A").code(), "invalid_base64");  // data after padding
  EXPECT_EQ(bad("data:image/png;base64,iVBORw0KG").code(), "invalid_base64");      // dangling character
  EXPECT_EQ(bad("data:image/png,rawbytes").code(), "invalid_image_url");
  EXPECT_EQ(bad("data:image/png;base64").code(), "invalid_image_url");
  EXPECT_EQ(bad("data:image/gif;base64,R0lGODlhAQABAAAAACw=").code(), "unsupported_image_type");
  EXPECT_EQ(bad("data:image/webp;base64,UklGRg==").code(), "unsupported_image_type");
  // declared PNG, content GIF
  EXPECT_EQ(bad("data:image/png;base64," + base64({'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0})).code(), "unsupported_image_type");
  EXPECT_EQ(bad("data:image/png;base64," + base64({0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0})).code(), "invalid_image");
  EXPECT_EQ(bad("https://example.com/cat.png").code(), "unsupported_image_url");
  EXPECT_EQ(bad("cat.png").code(), "invalid_image_url");
  const ApiError local = bad("/etc/hostname");
  EXPECT_EQ(local.code(), "local_paths_disabled");
  EXPECT_EQ(local.param(), "messages[0].content[0].image_url");
  EXPECT_EQ(bad("file:///etc/hostname").code(), "local_paths_disabled");
  // the object form needs a url
  EXPECT_EQ(rejection(chat_body(json::array({{{"type", "image_url"}, {"image_url", {{"detail", "low"}}}}}))).code(), "missing_field");
  // whitespace in the payload (MIME line breaks) is fine; the URL may also be given as a plain string
  std::string wrapped = base64(png_image(8, 8));
  wrapped.insert(10, "\r\n");
  EXPECT_EQ(parse(chat_body(json::array({image_part("data:image/png;base64," + wrapped)}))).pipeline.images.size(), 1u);
  EXPECT_EQ(parse(chat_body(json::array({{{"type", "image_url"}, {"image_url", kPng}}}))).pipeline.images.size(), 1u);
}

TEST(ServerRequest, LocalPathsBehindTheFlag) {
  const auto dir = temp_dir("server-local");
  const auto png = png_image(16, 16);
  std::ofstream((dir / "a.png").string(), std::ios::binary).write(reinterpret_cast<const char*>(png.data()),
                                                                   static_cast<std::streamsize>(png.size()));
  RequestPolicy policy = llava_policy();
  policy.allow_local_paths = true;
  EXPECT_EQ(parse(chat_body(json::array({image_part((dir / "a.png").string())})), policy).pipeline.images[0], png);
  EXPECT_EQ(parse(chat_body(json::array({image_part("file://" + (dir / "a.png").string())})), policy).pipeline.images[0], png);
  EXPECT_EQ(rejection(chat_body(json::array({image_part((dir / "missing.png").string())})), policy).code(), "image_not_found");
  EXPECT_EQ(rejection(chat_body(json::array({image_part(dir.string())})), policy).code(), "image_not_found");
}

TEST(ServerRequest, ImageLimits) {
  RequestPolicy policy = llava_policy();
  policy.limits.max_images = 2;
  policy.limits.max_image_bytes = 4000;
  policy.limits.max_image_pixels = 1000 * 1000;
  const json three = json::array({image_part(kPng), image_part(kPng), image_part(kPng)});
  const ApiError many = rejection(chat_body(three), policy);
  EXPECT_EQ(many.code(), "too_many_images");
  EXPECT_EQ(many.param(), "messages[0].content[2].image_url");
  const auto big = bmp_image(64, 64);  // 12 KiB uncompressed
  EXPECT_EQ(rejection(chat_body(json::array({image_part(data_uri(big, "image/bmp"))})), policy).code(), "image_too_large");
  // a header claiming 20000 x 20000 pixels is refused without decoding anything
  const ApiError bomb = rejection(chat_body(json::array({image_part(data_uri(png_header_only(20000, 20000)))})), policy);
  EXPECT_EQ(bomb.code(), "image_too_large");
  EXPECT_NE(std::string(bomb.what()).find("20000x20000"), std::string::npos) << bomb.what();
  EXPECT_EQ(parse(chat_body(json::array({image_part(data_uri(png_header_only(1000, 1000)))})), policy).pipeline.images.size(), 1u);
}

TEST(ServerRequest, SamplingRanges) {
  const auto code = [](const json& extra) { return rejection(chat_body("hi", extra)); };
  EXPECT_EQ(code({{"max_tokens", 0}}).param(), "max_tokens");
  EXPECT_EQ(code({{"max_tokens", 1000000}}).code(), "invalid_value");
  EXPECT_EQ(code({{"max_tokens", 1.5}}).code(), "invalid_type");
  EXPECT_EQ(code({{"max_tokens", "10"}}).code(), "invalid_type");
  EXPECT_EQ(code({{"max_completion_tokens", -1}}).param(), "max_completion_tokens");
  EXPECT_EQ(code({{"temperature", 2.5}}).param(), "temperature");
  EXPECT_EQ(code({{"temperature", "hot"}}).code(), "invalid_type");
  EXPECT_EQ(code({{"top_p", 0}}).param(), "top_p");
  EXPECT_EQ(code({{"seed", -1}}).param(), "seed");
  EXPECT_EQ(code({{"seed", 1ll << 40}}).param(), "seed");
  EXPECT_EQ(code({{"stream", "yes"}}).param(), "stream");
  EXPECT_EQ(code({{"n", 2}}).param(), "n");
  EXPECT_EQ(code({{"tools", json::array({{{"type", "function"}}})}}).code(), "unsupported_parameter");
  EXPECT_EQ(code({{"logprobs", "yes"}}).code(), "invalid_type");
}

TEST(ServerRequest, MethodsOptionsAndBudgets) {
  const json image = json::array({image_part(kPng)});
  const auto ext = [&](const json& vt) { return rejection(chat_body(image, {{"vtprune", vt}})); };
  const ApiError method = ext({{"method", "magic"}});
  EXPECT_EQ(method.code(), "unknown_method");
  EXPECT_EQ(method.param(), "vtprune.method");
  EXPECT_NE(std::string(method.what()).find("hiprune"), std::string::npos) << "lists the known methods";
  EXPECT_EQ(ext({{"method", "hiprune"}, {"options", {{"colour", "red"}}}}).code(), "invalid_option");
  EXPECT_EQ(ext({{"method", "hiprune"}, {"options", {{"alpha", "lots"}}}}).code(), "invalid_option");
  EXPECT_EQ(ext({{"method", "hiprune"}, {"options", {{"object_layer", 40}}}}).code(), "invalid_option");  // no layer 40
  EXPECT_EQ(ext({{"method", "hiprune"}, {"options", 3}}).code(), "invalid_type");
  EXPECT_EQ(ext({{"method", "hiprune"}, {"budget", 577}}).code(), "budget_out_of_range");
  EXPECT_EQ(ext({{"method", "hiprune"}, {"budget", 0}}).param(), "vtprune.budget");
  EXPECT_EQ(ext({{"budget", "lots"}}).code(), "invalid_budget");
  EXPECT_EQ(ext({{"budget", true}}).code(), "invalid_type");
  EXPECT_EQ(ext({{"scope", "everything"}}).param(), "vtprune.scope");
  EXPECT_EQ(rejection(chat_body(image, {{"vtprune", "hiprune"}})).code(), "invalid_type");
  // exactly the patch count is fine, and a total budget must leave one token per image
  EXPECT_EQ(parse(chat_body(image, {{"vtprune", {{"method", "hiprune"}, {"budget", 576}}}})).pipeline.budget.count, 576);
  const json two = json::array({image_part(kPng), image_part(kPng)});
  EXPECT_EQ(rejection(chat_body(two, {{"vtprune", {{"method", "fastervlm"}, {"budget", 1}, {"scope", "total"}}}})).code(),
            "budget_out_of_range");
  EXPECT_EQ(parse(chat_body(two, {{"vtprune", {{"method", "fastervlm"}, {"budget", 1000}, {"scope", "total"}}}})).pipeline.budget.count,
            1000);
}

TEST(ServerBase64, StrictAlphabetOptionalPadding) {
  EXPECT_EQ(server::decode_base64("aGVsbG8="), (std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(server::decode_base64("aGVsbG8"), (std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(server::decode_base64("aGVs\nbG8=\n"), (std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(server::decode_base64(""), std::vector<uint8_t>{});
  EXPECT_FALSE(server::decode_base64("aGVsbG8=="));  // too much padding
  EXPECT_FALSE(server::decode_base64("aGVsbG-_"));   // URL-safe alphabet is not accepted
  EXPECT_FALSE(server::decode_base64("a"));
  EXPECT_FALSE(server::decode_base64("=abc"));
  for (int n = 0; n < 40; ++n) {
    std::vector<uint8_t> bytes(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(i * 37 + n);
    EXPECT_EQ(server::decode_base64(base64(bytes)), bytes) << n;
  }
}

TEST(ServerImageProbe, HeadersOfEachFormat) {
  const auto png = server::read_image_header(png_image(37, 21));
  ASSERT_TRUE(png);
  EXPECT_EQ(png->format, server::ImageFormat::png);
  EXPECT_EQ(png->width, 37);
  EXPECT_EQ(png->height, 21);
  const auto jpg = server::read_image_header(jpeg_image(50, 13));
  ASSERT_TRUE(jpg);
  EXPECT_EQ(jpg->format, server::ImageFormat::jpeg);
  EXPECT_EQ(jpg->width, 50);
  EXPECT_EQ(jpg->height, 13);
  const auto bmp = server::read_image_header(bmp_image(9, 4));
  ASSERT_TRUE(bmp);
  EXPECT_EQ(bmp->width, 9);
  EXPECT_EQ(bmp->height, 4);
  // truncations never read out of bounds
  for (const auto& image : {png_image(8, 8), jpeg_image(8, 8), bmp_image(8, 8)}) {
    for (size_t n = 0; n < std::min<size_t>(image.size(), 700); ++n) {
      (void)server::read_image_header(std::span(image.data(), n));
    }
  }
  EXPECT_FALSE(server::read_image_header(std::vector<uint8_t>{'G', 'I', 'F', '8'}));
}

}  // namespace
}  // namespace vtprune::test

#include "server/job.h"

namespace vtprune::server {
namespace {

// A slot whose worker has not reached pop() yet is not busy: right after start-up, with no queue, the first job
// per slot is accepted (and waits for its worker), the next one is refused.
TEST(ServerJobQueue, SlotsCountAsIdleBeforeTheirWorkersStart) {
  JobQueue queue(/*capacity=*/0, /*slots=*/1);
  const auto job = [] { return std::make_shared<Job>(ChatRequest{}, Clock::now()); };
  ASSERT_EQ(queue.try_push(job()), JobQueue::Push::accepted);  // (pop() below would wait forever otherwise)
  EXPECT_EQ(queue.try_push(job()), JobQueue::Push::full);
  EXPECT_NE(queue.pop(0), nullptr);  // the worker starts and takes it
  EXPECT_EQ(queue.try_push(job()), JobQueue::Push::full);  // busy slot, no queue
  queue.close();
}

}  // namespace
}  // namespace vtprune::server
