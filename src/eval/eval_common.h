// Shared plumbing of the `vtprune eval` harnesses: append-only result logs that survive a crash or Ctrl-C,
// a progress bar with ETA, CSV/TSV helpers and the per-method option syntax.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace vtprune::eval {

// An append-only file of lines (TSV rows or JSONL records). Opening it reads the complete lines already
// there; a last line without its '\n' (the process died mid-write) is cut off the file, so the next
// append starts on a clean line. Every append writes one whole line and flushes it: an interrupted run
// loses at most the line being written, and a re-run resumes from what is there.
class AppendLog {
 public:
  // Creates the file (and its folder) when missing and writes `header_lines` first.
  AppendLog(std::filesystem::path path, const std::vector<std::string>& header_lines);

  const std::filesystem::path& path() const { return path_; }
  // Complete lines found when opening, header lines included, in file order.
  const std::vector<std::string>& existing_lines() const { return existing_; }
  bool was_truncated() const { return truncated_; }
  void append(std::string_view line);  // `line` must not contain '\n'

 private:
  std::filesystem::path path_;
  std::vector<std::string> existing_;
  bool truncated_ = false;
  std::ofstream out_;
};

// A one-line progress bar on stderr: "label [=====>    ]  42/250  16.8%  3.1 it/s  ETA 1:07  note".
// The rate and ETA count only the work done by this process (resumed items are skipped, not timed).
// Redraws at most ~5 times a second, and always on the last step.
class Progress {
 public:
  Progress(std::string label, int64_t total, int64_t already_done, bool enabled = true);
  void advance(int64_t steps = 1, std::string_view note = {});
  void finish();  // ends the line (idempotent)
  ~Progress();

 private:
  void draw(std::string_view note);
  std::string label_;
  int64_t total_ = 0, done_ = 0, done_here_ = 0;
  bool enabled_ = true, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "a,b, c" -> {"a", "b", "c"} (empty items dropped).
std::vector<std::string> split_list(std::string_view text, char separator = ',');
// Splits on `separator` keeping empty fields ("a\t\tb" -> 3 fields).
std::vector<std::string> split_fields(std::string_view text, char separator);
// A CSV field, quoted (RFC 4180) when it holds a comma, quote or newline.
std::string csv_field(std::string_view text);
// Fixed-precision number for result tables ("0.8280").
std::string format_number(double value, int decimals);

// Per-method options given as "method:key=value" (repeatable --opt; parse_routed_option). Returns method ->
// {"key=value", ...}.
// Throws Error for a missing "method." prefix or an unknown method name.
std::map<std::string, std::vector<std::string>> parse_method_options(const std::vector<std::string>& specs);
// `base` with every key that also appears in `overrides` replaced by the override (order: base, then new keys).
std::vector<std::string> merge_options(const std::vector<std::string>& base, const std::vector<std::string>& overrides);

// Image files (.jpg/.jpeg/.png/.bmp, any case) in a folder, sorted by name. Throws Error when none.
std::vector<std::filesystem::path> list_images(const std::filesystem::path& folder);

}  // namespace vtprune::eval
