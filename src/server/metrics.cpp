#include "metrics.h"

#include <cstdio>

namespace vtprune::server {
namespace {

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void sample(std::string& out, std::string_view name, double value) {
  out.append(name).append(" ").append(number(value)).append("\n");
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds) : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t bucket = 0;
  while (bucket < bounds_.size() && value > bounds_[bucket]) ++bucket;
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out.append(name).append("_bucket{le=\"").append(le).append("\"} ").append(std::to_string(cumulative)).append("\n");
  }
  out.append(name).append("_sum ").append(number(sum_)).append("\n");
  out.append(name).append("_count ").append(std::to_string(count_)).append("\n");
}

Metrics::Metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      duration_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}) {}

void Metrics::count_response(std::string_view endpoint, int status) {
  std::lock_guard lock(mutex_);
  ++responses_[{std::string(endpoint), status}];
}

void Metrics::count_request_tokens(int64_t visual_in, int64_t visual_kept, int64_t prompt, int64_t completion, int64_t cached) {
  std::lock_guard lock(mutex_);
  cached_tokens_ += static_cast<uint64_t>(cached);
  visual_in_ += static_cast<uint64_t>(visual_in);
  visual_kept_ += static_cast<uint64_t>(visual_kept);
  prompt_tokens_ += static_cast<uint64_t>(prompt);
  completion_tokens_ += static_cast<uint64_t>(completion);
}

void Metrics::observe_ttft(double seconds) {
  std::lock_guard lock(mutex_);
  ttft_.observe(seconds);
}

void Metrics::observe_duration(double seconds) {
  std::lock_guard lock(mutex_);
  duration_.observe(seconds);
}

std::string Metrics::render(const Gauges& gauges) const {
  std::lock_guard lock(mutex_);
  std::string out;
  header(out, "vtprune_http_requests_total", "counter", "HTTP responses by endpoint and status code.");
  for (const auto& [key, count] : responses_) {
    out.append("vtprune_http_requests_total{endpoint=\"").append(key.first).append("\",code=\"")
        .append(std::to_string(key.second)).append("\"} ").append(std::to_string(count)).append("\n");
  }
  header(out, "vtprune_visual_tokens_in_total", "counter", "Visual tokens the encoder produced, before reduction.");
  sample(out, "vtprune_visual_tokens_in_total", static_cast<double>(visual_in_));
  header(out, "vtprune_visual_tokens_kept_total", "counter", "Visual tokens sent to the LLM after reduction.");
  sample(out, "vtprune_visual_tokens_kept_total", static_cast<double>(visual_kept_));
  header(out, "vtprune_prompt_tokens_total", "counter", "Prompt positions (text + visual) of completed requests.");
  sample(out, "vtprune_prompt_tokens_total", static_cast<double>(prompt_tokens_));
  header(out, "vtprune_prompt_tokens_cached_total", "counter", "Prompt positions kept in a slot's KV cache from its previous request.");
  sample(out, "vtprune_prompt_tokens_cached_total", static_cast<double>(cached_tokens_));
  header(out, "vtprune_completion_tokens_total", "counter", "Generated tokens of completed requests.");
  sample(out, "vtprune_completion_tokens_total", static_cast<double>(completion_tokens_));
  ttft_.render(out, "vtprune_ttft_seconds", "Time from request arrival (queue wait included) to the first generated token.");
  duration_.render(out, "vtprune_request_duration_seconds", "Time from request arrival to the last generated token.");
  header(out, "vtprune_queue_depth", "gauge", "Requests waiting for a slot.");
  sample(out, "vtprune_queue_depth", static_cast<double>(gauges.queue_depth));
  header(out, "vtprune_requests_in_flight", "gauge", "Requests running in a slot.");
  sample(out, "vtprune_requests_in_flight", static_cast<double>(gauges.in_flight));
  header(out, "vtprune_slots", "gauge", "Slots (model instances) serving requests.");
  sample(out, "vtprune_slots", static_cast<double>(gauges.slots));
  header(out, "vtprune_image_cache_hits_total", "counter", "Images whose encoded + reduced rows came from the cache.");
  sample(out, "vtprune_image_cache_hits_total", static_cast<double>(gauges.cache_hits));
  header(out, "vtprune_image_cache_misses_total", "counter", "Images encoded and reduced (not in the cache).");
  sample(out, "vtprune_image_cache_misses_total", static_cast<double>(gauges.cache_misses));
  header(out, "vtprune_image_cache_evictions_total", "counter", "Cache entries dropped to stay within --image-cache-mib.");
  sample(out, "vtprune_image_cache_evictions_total", static_cast<double>(gauges.cache_evictions));
  header(out, "vtprune_image_cache_entries", "gauge", "Entries in the image cache.");
  sample(out, "vtprune_image_cache_entries", static_cast<double>(gauges.cache_entries));
  header(out, "vtprune_image_cache_bytes", "gauge", "Bytes the image cache holds (its bound: vtprune_image_cache_max_bytes).");
  sample(out, "vtprune_image_cache_bytes", static_cast<double>(gauges.cache_bytes));
  header(out, "vtprune_image_cache_max_bytes", "gauge", "The image cache's bound.");
  sample(out, "vtprune_image_cache_max_bytes", static_cast<double>(gauges.cache_max_bytes));
  return out;
}

}  // namespace vtprune::server
