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
  EXPECT_EQ(m["data"][0]["id"], "llm");
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
  EXPECT_EQ(r["model"], "llm");
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
  const json system = {{"messages", {{{"role", "system"}, {"content", "x"}}, {{"role", "user"}, {"content", "y"}}}}};
  expect_error(system.dump(), 400, "unsupported_role");
  // the context is 2048: 576 visual tokens plus ~3000 words of text cannot fit
  std::string essay;
  for (int i = 0; i < 3000; ++i) essay += "word ";
  const json long_prompt = expect_error(chat_body(json::array({image_part(png), text_part(essay)})).dump(), 400,
                                        "context_length_exceeded");
  EXPECT_EQ(long_prompt["param"], "messages");
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
