#include "eval_common.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "vtprune/reduce.h"

namespace vtprune::eval {

AppendLog::AppendLog(std::filesystem::path path, const std::vector<std::string>& header_lines) : path_(std::move(path)) {
  if (path_.has_parent_path()) std::filesystem::create_directories(path_.parent_path());
  if (std::filesystem::exists(path_)) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) throw Error(path_.string() + ": cannot read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const size_t complete = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (complete < text.size()) {
      // The previous run died while writing this line: drop it, it is redone.
      truncated_ = true;
      std::filesystem::resize_file(path_, complete);
    }
    existing_ = split_fields(std::string_view(text).substr(0, complete), '\n');
    if (!existing_.empty() && existing_.back().empty()) existing_.pop_back();
  }
  const bool fresh = existing_.empty();
  out_.open(path_, std::ios::binary | std::ios::app);
  if (!out_) throw Error(path_.string() + ": cannot open for appending");
  if (fresh) {
    for (const auto& line : header_lines) append(line);
    existing_ = header_lines;
  }
}

void AppendLog::append(std::string_view line) {
  if (line.find('\n') != std::string_view::npos) throw Error(path_.string() + ": a record may not contain a newline");
  std::string whole(line);
  whole += '\n';
  out_.write(whole.data(), static_cast<std::streamsize>(whole.size()));
  out_.flush();
  if (!out_) throw Error(path_.string() + ": write failed (disk full?)");
}

Progress::Progress(std::string label, int64_t total, int64_t already_done, bool enabled)
    : label_(std::move(label)),
      total_(total),
      done_(already_done),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (enabled_) draw({});
}

Progress::~Progress() { finish(); }

void Progress::advance(int64_t steps, std::string_view note) {
  done_ += steps;
  done_here_ += steps;
  const auto now = std::chrono::steady_clock::now();
  if (enabled_ && (now - last_draw_ > std::chrono::milliseconds(200) || done_ >= total_)) {
    last_draw_ = now;
    draw(note);
  }
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  draw({});
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

void Progress::draw(std::string_view note) {
  constexpr int kWidth = 28;
  const double fraction = total_ > 0 ? std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < kWidth) bar += '>';
  bar.resize(kWidth, ' ');
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 && done_here_ > 0 ? static_cast<double>(done_here_) / seconds : 0.0;
  std::string eta = "--:--";
  if (rate > 0) {
    const auto left = static_cast<int64_t>(std::ceil(static_cast<double>(std::max<int64_t>(total_ - done_, 0)) / rate));
    char buf[32];
    std::snprintf(buf, sizeof buf, "%lld:%02lld", static_cast<long long>(left / 60), static_cast<long long>(left % 60));
    eta = buf;
  }
  // \r + clear-to-end redraws in place on a terminal; in a log each redraw is one more segment.
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %5.1f%% %6.2f it/s ETA %s %.*s\033[K", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), 100.0 * fraction, rate, eta.c_str(),
               static_cast<int>(std::min<size_t>(note.size(), 40)), note.data());
  std::fflush(stderr);
}

std::vector<std::string> split_fields(std::string_view text, char separator) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t end = text.find(separator, start);
    out.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

std::vector<std::string> split_list(std::string_view text, char separator) {
  std::vector<std::string> out;
  for (std::string item : split_fields(text, separator)) {
    const auto not_space = [](unsigned char c) { return !std::isspace(c); };
    item.erase(item.begin(), std::find_if(item.begin(), item.end(), not_space));
    item.erase(std::find_if(item.rbegin(), item.rend(), not_space).base(), item.end());
    if (!item.empty()) out.push_back(std::move(item));
  }
  return out;
}

std::string csv_field(std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string format_number(double value, int decimals) {
  if (!std::isfinite(value)) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::map<std::string, std::vector<std::string>> parse_method_options(const std::vector<std::string>& specs) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& spec : specs) {
    const std::optional<MethodSpec> routed = parse_routed_option(spec);
    if (!routed) throw Error("--opt " + spec + ": name the method: method:key=value (e.g. prumerge:layer=-2)");
    out[routed->name].push_back(routed->options.front());
  }
  return out;
}

std::vector<std::string> merge_options(const std::vector<std::string>& base, const std::vector<std::string>& overrides) {
  const auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  std::vector<std::string> out;
  for (const auto& kv : base) {
    const bool overridden = std::any_of(overrides.begin(), overrides.end(), [&](const auto& o) { return key_of(o) == key_of(kv); });
    if (!overridden) out.push_back(kv);
  }
  out.insert(out.end(), overrides.begin(), overrides.end());
  return out;
}

std::vector<std::filesystem::path> list_images(const std::filesystem::path& folder) {
  if (!std::filesystem::is_directory(folder)) throw Error("--images " + folder.string() + ": not a folder");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    std::string ext = entry.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (entry.is_regular_file() && (ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp")) {
      files.push_back(entry.path());
    }
  }
  if (files.empty()) throw Error("--images " + folder.string() + ": no .jpg/.jpeg/.png/.bmp files");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace vtprune::eval
