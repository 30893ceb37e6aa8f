// libFuzzer: the chat-completions request parser (server::parse_chat_request) against a LLaVA-1.5-shaped
// encoder. Its contract: every bad input is an ApiError, and nothing else escapes.
#include <cstdint>
#include <string_view>

#include "vtprune/server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const vtprune::server::RequestPolicy policy = [] {
    vtprune::server::RequestPolicy p;
    p.limits.max_body_bytes = 1 << 20;
    p.encoder.grid = {24, 24};
    p.encoder.has_cls = true;
    p.encoder.heads = 16;
    p.encoder.num_layers = 24;
    p.encoder.feature_layer = 22;
    return p;
  }();
  try {
    const auto request =
        vtprune::server::parse_chat_request(std::string_view(reinterpret_cast<const char*>(data), size), policy);
  } catch (const vtprune::server::ApiError&) {
  }
  return 0;
}
