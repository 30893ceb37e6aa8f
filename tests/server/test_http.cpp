// The real `vtprune serve` on the tiny test model, spoken to over loopback HTTP with cpp-httplib's client.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <regex>
#include <thread>

#include "server_test_util.h"

namespace vtprune::test {
namespace {

// POSTs `body` and hands each piece of the response to `on_data` as it arrives (httplib 0.11's Post has no
// receiver, so the request is built by hand).
int post_streaming(const ServerProcess& server, const json& body, const std::function<void(std::string_view)>& on_data) {
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    on_data(std::string_view(data, n));
    return true;
  };
  auto res = server.client().send(req);
  return res ? res->status : -1;
}

// One server for the suite: small limits so each one is cheap to hit.
//   2 slots, queue 8, context 2048, default method pool at budget 144, at most 2 images of 1 MiB and
//   4 Mpx, bodies of 4 MiB.
class ServerHttp : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = std::make_unique<ServerProcess>(std::vector<std::string>{
        "--parallel", "2", "--queue", "8", "-c", "2048", "--method", "pool", "--budget", "144", "--max-images", "2",
        "--max-image-bytes", "1048576", "--max-image-pixels", "4000000", "--max-body-bytes", "4194304",
        "--max-tokens", "512"});
  }
  static void TearDownTestSuite() {
    if (server_) {
      EXPECT_EQ(server_->stop(SIGTERM), 0) << server_->log();
    }
    server_.reset();
  }

  static httplib::Result post(const json& body) { return post_raw(body.dump()); }
  static httplib::Result post_raw(const std::string& body) {
    return server_->client().Post("/v1/chat/completions", body, "application/json");
  }
  // Posts and expects an OpenAI error with this status and code; returns the error object.
  static json expect_error(const std::string& body, int status, const std::string& code) {
    const auto res = post_raw(body);
    EXPECT_TRUE(res) << "no response";
    if (!res) return {};
    EXPECT_EQ(res->status, status) << res->body.substr(0, 400);
    EXPECT_EQ(res->get_header_value("Content-Type"), "application/json");
    const json j = json::parse(res->body, nullptr, false);
    EXPECT_TRUE(j.is_object() && j.contains("error")) << res->body.substr(0, 400);
    if (!j.is_object() || !j.contains("error")) return {};
    const json& e = j["error"];
    EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
    EXPECT_TRUE(e["type"].is_string());
    EXPECT_TRUE(e.contains("param"));
    EXPECT_EQ(e["code"], code) << e.dump();
    return e;
  }

  static json image_request() {
    return chat_body(json::array({image_part(data_uri(png_image(96, 64))), text_part("What is in the image?")}),
                     {{"max_tokens", 8}, {"seed", 3}});
  }

  static inline std::unique_ptr<ServerProcess> server_;
};

TEST_F(ServerHttp, HealthModelsAndUnknownRoutes) {
  auto c = server_->client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const json h = json::parse(health->body);
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["slots"], 2);

  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  ASSERT_EQ(models->status, 200);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  ASSERT_EQ(m["data"].size(), 1u);
  EXPECT_EQ(m["data"][0]["id"], "llm.gguf") << "the model file's name, as llama-server lists it";
  EXPECT_EQ(m["data"][0]["vtprune"]["files"]["mmproj"], "mmproj.gguf");
  EXPECT_EQ(m["data"][0]["object"], "model");
  EXPECT_EQ(m["data"][0]["vtprune"]["visual_tokens_per_image"], 576);

  auto missing = c.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "not_found");
}

TEST_F(ServerHttp, ChatCompletionWithReduction) {
  json body = image_request();
  body["vtprune"] = {{"method", "hiprune"}, {"budget", 64}, {"options", {{"alpha", 0.1}}}};
  const auto res = post(body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json r = json::parse(res->body);
  EXPECT_TRUE(r["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_TRUE(r["created"].is_number_integer());
  EXPECT_EQ(r["model"], "llm.gguf");
  ASSERT_EQ(r["choices"].size(), 1u);
  const json& choice = r["choices"][0];
  EXPECT_EQ(choice["index"], 0);
  EXPECT_EQ(choice["message"]["role"], "assistant");
  EXPECT_TRUE(choice["message"]["content"].is_string());
  EXPECT_TRUE(choice["finish_reason"] == "stop" || choice["finish_reason"] == "length");
  const json& usage = r["usage"];
  EXPECT_EQ(usage["visual_tokens_in"], 576);
  EXPECT_EQ(usage["visual_tokens_kept"], 64);
  EXPECT_LE(usage["completion_tokens"].get<int>(), 8);
  EXPECT_EQ(usage["total_tokens"], usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
  EXPECT_GT(usage["prompt_tokens"].get<int>(), 64);  // the kept visual tokens plus the template's text
  EXPECT_EQ(r["vtprune"]["method"], "hiprune");
  EXPECT_EQ(r["vtprune"]["images"][0]["tokens_kept"], 64);
  EXPECT_GT(r["vtprune"]["timings"]["encode_ms"].get<double>(), 0.0);
  EXPECT_GE(r["vtprune"]["timings"]["ttft_ms"].get<double>(), r["vtprune"]["timings"]["encode_ms"].get<double>());
}

TEST_F(ServerHttp, ServerDefaultsApplyWithoutExtension) {
  const auto res = post(image_request());
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json r = json::parse(res->body);
  EXPECT_EQ(r["vtprune"]["method"], "pool");
  EXPECT_EQ(r["usage"]["visual_tokens_in"], 576);
  EXPECT_LE(r["usage"]["visual_tokens_kept"].get<int>(), 144);
  // text only, JPEG and BMP images work too
  const auto text = post(chat_body("Say something.", {{"max_tokens", 4}}));
  ASSERT_TRUE(text);
  EXPECT_EQ(text->status, 200) << text->body;
  EXPECT_EQ(json::parse(text->body)["usage"]["visual_tokens_in"], 0);
  const auto two = post(chat_body(json::array({image_part(data_uri(jpeg_image(50, 40), "image/jpeg")),
                                                image_part(data_uri(bmp_image(30, 30), "image/bmp")), text_part("Compare.")}),
                                   {{"max_tokens", 4}, {"vtprune", {{"method", "fastervlm"}, {"budget", 100}, {"scope", "total"}}}}));
  ASSERT_TRUE(two);
  ASSERT_EQ(two->status, 200) << two->body;
  EXPECT_EQ(json::parse(two->body)["usage"]["visual_tokens_kept"], 100);
}

TEST_F(ServerHttp, StreamingMatchesTheNonStreamedAnswer) {
  json body = image_request();
  body["max_tokens"] = 24;
  body["vtprune"] = {{"method", "fastervlm"}, {"budget", 32}};
  const auto plain = post(body);
  ASSERT_TRUE(plain);
  ASSERT_EQ(plain->status, 200) << plain->body;
  const json expected = json::parse(plain->body);

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  const auto res = post(body);
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_events(res->body);
  ASSERT_GE(events.size(), 3u) << res->body;
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content;
  std::string finish;
  json usage;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json chunk = json::parse(events[i]);
    EXPECT_EQ(chunk["object"], "chat.completion.chunk");
    EXPECT_EQ(chunk["id"], json::parse(events[0])["id"]);
    if (chunk.contains("usage")) {
      EXPECT_TRUE(chunk["choices"].empty());
      usage = chunk["usage"];
      continue;
    }
    const json& choice = chunk["choices"][0];
    if (i == 0) {
      EXPECT_EQ(choice["delta"]["role"], "assistant");
    }
    if (choice["delta"].contains("content")) content += choice["delta"]["content"].get<std::string>();
    if (!choice["finish_reason"].is_null()) {
      finish = choice["finish_reason"];
      EXPECT_EQ(chunk["vtprune"]["method"], "fastervlm");
    }
  }
  EXPECT_EQ(content, expected["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, expected["choices"][0]["finish_reason"]);
  EXPECT_EQ(usage["completion_tokens"], expected["usage"]["completion_tokens"]);
  EXPECT_EQ(usage["visual_tokens_kept"], 32);
}

TEST_F(ServerHttp, StreamErrorsBeforeTheFirstTokenKeepTheirStatus) {
  json body = chat_body(json::array({image_part(data_uri(png_image(8, 8)))}), {{"stream", true}});
  body["vtprune"] = {{"method", "nope"}};
  const auto res = post(body);
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "unknown_method");
}

TEST_F(ServerHttp, MalformedRequestsAre4xxInOpenAiShape) {
  const std::string png = data_uri(png_image(16, 16));
  const json image = json::array({image_part(png), text_part("q")});
  expect_error("{\"messages\": [", 400, "invalid_json");
  expect_error("not json at all", 400, "invalid_json");
  expect_error(json{{"model", "x"}}.dump(), 400, "missing_field");
  expect_error(std::string(5 << 20, ' '), 413, "body_too_large");
  expect_error(chat_body(json::array({image_part(png), image_part(png), image_part(png)})).dump(), 400, "too_many_images");
  expect_error(chat_body(json::array({image_part(data_uri(bmp_image(700, 600), "image/bmp"))})).dump(), 400, "image_too_large");
  expect_error(chat_body(json::array({image_part(data_uri(png_header_only(5000, 5000)))})).dump(), 400, "image_too_large");
  expect_error(chat_body(json::array({image_part("data:image/png;base64,***not base64***")})).dump(), 400, "invalid_base64");
  expect_error(chat_body(json::array({image_part("data:image/gif;base64,R0lGODlhAQABAAAAACw=")})).dump(), 400, "unsupported_image_type");
  expect_error(chat_body(json::array({image_part("/etc/hostname")})).dump(), 400, "local_paths_disabled");
  expect_error(chat_body(json::array({image_part("http://127.0.0.1/cat.png")})).dump(), 400, "unsupported_image_url");
  expect_error(chat_body(image, {{"vtprune", {{"method", "magic"}}}}).dump(), 400, "unknown_method");
  expect_error(chat_body(image, {{"vtprune", {{"method", "hiprune"}, {"options", {{"nonsense", 1}}}}}}).dump(), 400, "invalid_option");
  expect_error(chat_body(image, {{"vtprune", {{"method", "hiprune"}, {"budget", 1000}}}}).dump(), 400, "budget_out_of_range");
  expect_error(chat_body(image, {{"temperature", 9}}).dump(), 400, "invalid_value");
  expect_error(chat_body(image, {{"max_tokens", 513}}).dump(), 400, "invalid_value");
  const json tool = {{"messages", {{{"role", "user"}, {"content", "x"}}, {{"role", "tool"}, {"content", "y"}}}}};
  expect_error(tool.dump(), 400, "unsupported_role");
  const json answer_with_image = {{"messages", {{{"role", "user"}, {"content", "x"}},
                                                {{"role", "assistant"}, {"content", json::array({image_part(png)})}},
                                                {{"role", "user"}, {"content", "y"}}}}};
  EXPECT_EQ(expect_error(answer_with_image.dump(), 400, "invalid_image_position")["param"], "messages[1].content[0]");
  // hiprune with alpha=5 keeps 64 anchors and their buffers: more than a budget of 64 (a request fault, found while
  // the method runs, after the encoder's output was checked)
  expect_error(chat_body(image, {{"vtprune", {{"method", "hiprune"}, {"budget", 64}, {"options", {{"alpha", 5}}}}}}).dump(),
               400, "invalid_request");
  expect_error(chat_body(image, {{"stop", {"a", "b", "c", "d", "e"}}}).dump(), 400, "invalid_value");
  expect_error(chat_body(image, {{"n", 3}}).dump(), 400, "invalid_value");
  expect_error(chat_body(image, {{"reasoning_effort", "high"}}).dump(), 400, "unsupported_parameter");
  // the context is 2048: 576 visual tokens plus ~3000 words of text cannot fit
  std::string essay;
  for (int i = 0; i < 3000; ++i) essay += "word ";
  const json long_prompt = expect_error(chat_body(json::array({image_part(png), text_part(essay)})).dump(), 400,
                                        "context_length_exceeded");
  EXPECT_EQ(long_prompt["param"], "messages[0].content");
  // in a later turn: that turn's message is named
  const json long_turn = {{"messages", {{{"role", "user"}, {"content", json::array({image_part(png), text_part("q")})}},
                                        {{"role", "assistant"}, {"content", "a"}},
                                        {{"role", "user"}, {"content", essay}}}}};
  EXPECT_EQ(expect_error(long_turn.dump(), 400, "context_length_exceeded")["param"], "messages[2].content");
  // a valid PNG header over a corrupt body passes the checks before the queue; the decoder refuses it
  std::vector<uint8_t> corrupt = png_image(64, 64);
  for (size_t i = 40; i < corrupt.size(); ++i) corrupt[i] ^= 0x5A;
  expect_error(chat_body(json::array({image_part(data_uri(corrupt))})).dump(), 400, "invalid_request");
  // the server is still healthy
  const auto ok = post(image_request());
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(ServerHttp, MetricsCountRequestsTokensAndLatency) {
  ASSERT_EQ(post(image_request())->status, 200);
  expect_error("{", 400, "invalid_json");
  const auto res = server_->client().Get("/metrics");
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200);
  EXPECT_TRUE(res->get_header_value("Content-Type").starts_with("text/plain"));
  const std::string& text = res->body;
  for (const char* needle :
       {"# TYPE vtprune_http_requests_total counter", "vtprune_http_requests_total{endpoint=\"/v1/chat/completions\",code=\"200\"}",
        "vtprune_http_requests_total{endpoint=\"/v1/chat/completions\",code=\"400\"}", "# TYPE vtprune_visual_tokens_in_total counter",
        "# TYPE vtprune_visual_tokens_kept_total counter", "# TYPE vtprune_ttft_seconds histogram",
        "vtprune_ttft_seconds_bucket{le=\"+Inf\"}", "vtprune_ttft_seconds_count", "# TYPE vtprune_queue_depth gauge",
        "vtprune_queue_depth 0", "# TYPE vtprune_requests_in_flight gauge", "vtprune_slots 2"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  }
  std::smatch m;
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(vtprune_visual_tokens_in_total (\d+))")));
  const long visual_in = std::stol(m[1]);
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(vtprune_visual_tokens_kept_total (\d+))")));
  const long visual_kept = std::stol(m[1]);
  EXPECT_GE(visual_in, 576);
  EXPECT_GT(visual_kept, 0);
  EXPECT_LT(visual_kept, visual_in);
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(vtprune_ttft_seconds_count (\d+))")));
  EXPECT_GE(std::stol(m[1]), 1);
}

// A three-turn conversation with a system prompt and an image in the first turn, as chat UIs send it (the whole
// history every time): later turns take the image from the cache and the prompt from their slot's KV cache.
TEST_F(ServerHttp, ConversationReusesTheImageAndTheKvPrefix) {
  const std::string png = data_uri(png_image(80, 60, 11));
  json messages = {{{"role", "system"}, {"content", "You are a careful assistant."}},
                   {{"role", "user"}, {"content", json::array({image_part(png), text_part("What is in the image?")})}}};
  const auto turn = [&](const json& msgs) {
    const auto res = post(json{{"model", "llm.gguf"}, {"messages", msgs}, {"max_tokens", 6},
                               {"vtprune", {{"method", "fastervlm"}, {"budget", 48}}}});
    EXPECT_TRUE(res);
    EXPECT_EQ(res->status, 200) << res->body;
    return json::parse(res->body);
  };
  const json r1 = turn(messages);
  EXPECT_FALSE(r1["vtprune"]["images"][0]["cached"].get<bool>());
  const int prompt1 = r1["usage"]["prompt_tokens"];
  messages.push_back({{"role", "assistant"}, {"content", r1["choices"][0]["message"]["content"]}});
  messages.push_back({{"role", "user"}, {"content", "What colour is it?"}});
  const json r2 = turn(messages);
  EXPECT_TRUE(r2["vtprune"]["images"][0]["cached"].get<bool>()) << "the image was encoded again";
  EXPECT_EQ(r2["vtprune"]["timings"]["encode_ms"].get<double>(), 0.0);
  EXPECT_EQ(r2["usage"]["visual_tokens_kept"], 48);
  const int cached2 = r2["usage"]["prompt_tokens_details"]["cached_tokens"];
  EXPECT_GE(cached2, prompt1 - 1) << "turn 1's prompt, its image included, stays in the slot's KV cache";
  EXPECT_LT(cached2, r2["usage"]["prompt_tokens"].get<int>());
  messages.push_back({{"role", "assistant"}, {"content", r2["choices"][0]["message"]["content"]}});
  messages.push_back({{"role", "user"}, {"content", "Are you sure?"}});
  const json r3 = turn(messages);
  EXPECT_GE(r3["usage"]["prompt_tokens_details"]["cached_tokens"].get<int>(), r2["usage"]["prompt_tokens"].get<int>() - 1);
  const auto metrics = server_->client().Get("/metrics");
  ASSERT_TRUE(metrics);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics->body, m, std::regex(R"(vtprune_image_cache_hits_total (\d+))")));
  EXPECT_GE(std::stol(m[1]), 2);
  ASSERT_TRUE(std::regex_search(metrics->body, m, std::regex(R"(vtprune_prompt_tokens_cached_total (\d+))")));
  EXPECT_GE(std::stol(m[1]), cached2);
}

// A stop string ends the answer before it, in one response and in a stream alike.
TEST_F(ServerHttp, StopStringsEndTheAnswer) {
  json body = chat_body("Tell me a long story.", {{"max_tokens", 24}});
  const auto free = post(body);
  ASSERT_TRUE(free);
  ASSERT_EQ(free->status, 200) << free->body;
  const std::string answer = json::parse(free->body)["choices"][0]["message"]["content"];
  // two whole characters from the middle of the answer (not U+FFFD, which stands for bytes the model produced that
  // are not UTF-8 and so never occurs in the raw text)
  std::vector<size_t> starts;  // character boundaries
  for (size_t i = 0; i < answer.size(); ++i) {
    if ((static_cast<unsigned char>(answer[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(answer.size());
  std::string stop;
  for (size_t c = starts.size() / 2; c + 2 < starts.size() && stop.empty(); ++c) {
    const std::string candidate = answer.substr(starts[c], starts[c + 2] - starts[c]);
    if (candidate.find("\xEF\xBF\xBD") == std::string::npos) stop = candidate;
  }
  if (stop.empty()) GTEST_SKIP() << "the random model's answer has no two plain characters: " << answer;
  body["stop"] = {stop, "\x01never"};
  const auto cut = post(body);
  ASSERT_TRUE(cut);
  ASSERT_EQ(cut->status, 200) << cut->body;
  const json r = json::parse(cut->body);
  EXPECT_EQ(r["choices"][0]["message"]["content"], answer.substr(0, answer.find(stop)));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  body["stream"] = true;
  const auto streamed = post(body);
  ASSERT_TRUE(streamed);
  std::string content;
  for (const auto& event : sse_events(streamed->body)) {
    if (event == "[DONE]") continue;
    const json chunk = json::parse(event);
    if (!chunk["choices"].empty() && chunk["choices"][0]["delta"].contains("content")) {
      content += chunk["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(content, answer.substr(0, answer.find(stop)));
}

TEST_F(ServerHttp, LogprobsPenaltiesAndSeed) {
  const auto res = post(chat_body("Hello there.", {{"max_completion_tokens", 5}, {"logprobs", true}, {"top_logprobs", 2},
                                                   {"frequency_penalty", 1.0}, {"presence_penalty", 0.5}, {"seed", 9}}));
  ASSERT_TRUE(res);
  ASSERT_EQ(res->status, 200) << res->body;
  const json r = json::parse(res->body);
  const json& content = r["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), r["usage"]["completion_tokens"].get<size_t>());
  std::string text;
  for (const json& t : content) {
    EXPECT_LE(t["logprob"].get<double>(), 0.0);
    EXPECT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_EQ(t["bytes"].size(), t["token"].get<std::string>().size());
    text += t["token"].get<std::string>();
  }
  EXPECT_EQ(text, r["choices"][0]["message"]["content"]);
  EXPECT_TRUE(json::parse(post(chat_body("Hi.", {{"max_tokens", 2}}))->body)["choices"][0]["logprobs"].is_null());
}

// An encoder that produces NaN is the server's fault: 500 server_error, never a 400 (the defect issue 13 names).
TEST(ServerFaultCodes, NonFiniteEncoderOutputIsA500) {
  ServerProcess server({"--parallel", "1"}, {}, poisoned_mmproj());
  const json body = chat_body(json::array({image_part(data_uri(png_image(64, 64))), text_part("What is it?")}),
                              {{"max_tokens", 2}, {"vtprune", {{"method", "hiprune"}, {"budget", 32}}}});
  auto res = server.client().Post("/v1/chat/completions", body.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500) << res->body;
  const json e = json::parse(res->body)["error"];
  EXPECT_EQ(e["type"], "server_error");
  EXPECT_NE(e["message"].get<std::string>().find("NaN"), std::string::npos) << e.dump();
  // what the request gets wrong is still a 400 on the same server
  const json bad_budget = chat_body(json::array({image_part(data_uri(png_image(64, 64)))}),
                                    {{"vtprune", {{"method", "hiprune"}, {"budget", 0.0001}}}});
  res = server.client().Post("/v1/chat/completions", bad_budget.dump(), "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400) << res->body;
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

// --parallel 1 --queue 1: one request runs, one waits, the next is turned away with 503 + Retry-After.
TEST(ServerQueue, FullQueueAnswers503WithRetryAfter) {
  ServerProcess server({"--parallel", "1", "--queue", "1", "-c", "4096", "--max-tokens", "4096"});
  // A long text-only generation occupies the slot; streaming tells us when it has started.
  const json slow = chat_body("Tell a very long story.", {{"max_tokens", 3500}, {"stream", true}});
  std::promise<void> first_token;
  auto running = std::async(std::launch::async, [&] {
    bool signalled = false;
    const int status = post_streaming(server, slow, [&](std::string_view) {
      if (!signalled) first_token.set_value(), signalled = true;
    });
    if (!signalled) first_token.set_value();
    return status;
  });
  first_token.get_future().wait();
  // One waits in the queue ...
  auto queued = std::async(std::launch::async, [&] {
    auto res = server.client().Post("/v1/chat/completions", chat_body("Hi.", {{"max_tokens", 2}}).dump(), "application/json");
    return res ? res->status : -1;
  });
  // ... (wait until it is really there) ...
  for (int i = 0; i < 2000; ++i) {
    auto m = server.client().Get("/metrics");
    if (m && m->body.find("vtprune_queue_depth 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // ... and the next one is refused.
  auto refused = server.client().Post("/v1/chat/completions", chat_body("Hi.", {{"max_tokens", 2}}).dump(), "application/json");
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503) << refused->body;
  EXPECT_EQ(refused->get_header_value("Retry-After"), "1");
  const json e = json::parse(refused->body)["error"];
  EXPECT_EQ(e["code"], "server_busy");
  EXPECT_EQ(e["type"], "server_error");
  EXPECT_EQ(running.get(), 200);
  EXPECT_EQ(queued.get(), 200);
  const auto metrics = server.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("vtprune_http_requests_total{endpoint=\"/v1/chat/completions\",code=\"503\"} 1"), std::string::npos)
      << metrics->body;
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

// A streaming client that hangs up frees its slot at the next token: the generation is cancelled, not finished.
TEST(ServerQueue, ClientDisconnectCancelsTheGeneration) {
  ServerProcess server({"--parallel", "1", "--queue", "1", "--max-tokens", "4000"});
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.set_header("Content-Type", "application/json");
  req.body = chat_body("Tell a very long story.", {{"max_tokens", 4000}, {"stream", true}}).dump();
  req.content_receiver = [](const char*, size_t, uint64_t, uint64_t) { return false; };  // hang up at once
  (void)server.client().send(req);
  std::string metrics;
  for (int i = 0; i < 1000; ++i) {
    metrics = server.client().Get("/metrics")->body;
    if (metrics.find("vtprune_requests_in_flight 0") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(metrics.find("vtprune_requests_in_flight 0"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("vtprune_completion_tokens_total 0"), std::string::npos) << "the generation ran to its end\n" << metrics;
  // the slot serves the next request
  auto next = server.client().Post("/v1/chat/completions", chat_body("Hi.", {{"max_tokens", 2}}).dump(), "application/json");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
  EXPECT_EQ(server.stop(SIGTERM), 0) << server.log();
}

// SIGTERM while a request runs: it still completes, new requests are refused, the process exits 0.
TEST(ServerShutdown, SigtermFinishesInFlightRequestsAndExitsZero) {
  ServerProcess server({"--parallel", "1", "--queue", "2", "--max-tokens", "4096"});
  std::promise<void> started;
  auto running = std::async(std::launch::async, [&] {
    const json slow = chat_body("Tell a long story.", {{"max_tokens", 1500}, {"stream", true}});
    bool signalled = false;
    std::string body;
    const int status = post_streaming(server, slow, [&](std::string_view data) {
      body.append(data);
      if (!signalled) started.set_value(), signalled = true;
    });
    if (!signalled) started.set_value();
    return std::make_pair(status, body);
  });
  started.get_future().wait();
  server.send_signal(SIGTERM);
  const auto [status, body] = running.get();
  EXPECT_EQ(status, 200);
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos) << "the stream was cut";
  EXPECT_TRUE(std::regex_search(body, std::regex(R"re("finish_reason":"(stop|length)")re"))) << "no final chunk";
  EXPECT_EQ(server.stop(0), 0) << server.log();  // signal 0: only wait for the exit
}

}  // namespace
}  // namespace vtprune::test

namespace vtprune::test {
namespace {

// CDPruner's official relevance on the server: without --clip-text it is the request's 400 naming the flag; with
// it, the question conditions the selection, so the image cache keys on it (same question: a hit; another: a miss).
TEST(ServerClipText, CdprunerOfficialRelevance) {
  const std::filesystem::path clip = tiny_model().llm.parent_path() / "clip";
  ASSERT_TRUE(std::filesystem::exists(clip / "model.safetensors")) << "make-test-model writes clip/ beside the tiny pair";
  const std::vector<uint8_t> png = png_image(96, 64);
  const auto ask = [&](ServerProcess& server, const std::string& question) {
    json body = chat_body(json::array({image_part(data_uri(png)), text_part(question)}), {{"max_tokens", 2}});
    body["vtprune"] = {{"method", "cdpruner"}, {"budget", 64}};
    return server.client().Post("/v1/chat/completions", body.dump(), "application/json");
  };
  {
    ServerProcess without({"-c", "2048"});
    const auto res = ask(without, "Where is the dog?");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 400) << res->body;
    EXPECT_NE(res->body.find("--clip-text"), std::string::npos) << res->body;
    EXPECT_EQ(without.stop(SIGTERM), 0) << without.log();
  }
  ServerProcess with({"-c", "2048", "--clip-text", clip.string()});
  const auto cached = [&](const std::string& question) {
    const auto res = ask(with, question);
    EXPECT_TRUE(res);
    if (!res) return json();
    EXPECT_EQ(res->status, 200) << res->body;
    const json r = json::parse(res->body, nullptr, false);
    EXPECT_EQ(r["vtprune"]["images"][0]["tokens_kept"], 64) << res->body;
    return r["vtprune"]["images"][0]["cached"];
  };
  EXPECT_EQ(cached("Where is the dog?"), false);
  EXPECT_EQ(cached("Where is the dog?"), true);
  EXPECT_EQ(cached("What colour is the cat?"), false);
  EXPECT_EQ(with.stop(SIGTERM), 0) << with.log();
}

}  // namespace
}  // namespace vtprune::test
