// Prometheus counters and histograms of one server (no globals: the server owns its Metrics).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace vtprune::server {

// Cumulative-bucket histogram in seconds.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  void render(std::string& out, std::string_view name, std::string_view help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// Values read from the server's live state when /metrics is rendered.
struct Gauges {
  int64_t queue_depth = 0;
  int64_t in_flight = 0;
  int64_t slots = 0;
  // The image embedding cache (all zero when it is off).
  int64_t cache_hits = 0, cache_misses = 0, cache_evictions = 0, cache_entries = 0, cache_bytes = 0, cache_max_bytes = 0;
};

class Metrics {
 public:
  Metrics();
  void count_response(std::string_view endpoint, int status);
  void count_request_tokens(int64_t visual_in, int64_t visual_kept, int64_t prompt, int64_t completion, int64_t cached = 0);
  void observe_ttft(double seconds);
  void observe_duration(double seconds);
  std::string render(const Gauges& gauges) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;  // (endpoint, status) -> count
  uint64_t visual_in_ = 0, visual_kept_ = 0, prompt_tokens_ = 0, completion_tokens_ = 0, cached_tokens_ = 0;
  Histogram ttft_;
  Histogram duration_;
};

}  // namespace vtprune::server
