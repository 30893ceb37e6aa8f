// Options ("key=value" parsing with typed validation) and budgets.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

#include "common.h"
#include "vtprune/reduce.h"

namespace vtprune {
namespace {

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

bool parse_int(std::string_view s, int64_t& out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

bool parse_double(std::string_view s, double& out) {
  if (s.empty()) return false;
  std::string tmp(s);
  char* end = nullptr;
  errno = 0;
  out = std::strtod(tmp.c_str(), &end);
  return errno == 0 && end == tmp.c_str() + tmp.size() && std::isfinite(out);
}

std::string format_bound(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Checks `value` against `spec`; returns an empty string when valid, else what is wrong.
std::string check_value(const OptionSpec& spec, const std::string& value) {
  auto range = [&](double v) -> std::string {
    if (v < spec.min || v > spec.max) {
      return "must be in [" + format_bound(spec.min) + ", " + format_bound(spec.max) + "]";
    }
    return {};
  };
  switch (spec.type) {
    case OptionType::Integer: {
      int64_t v = 0;
      if (!parse_int(value, v)) return "expects an integer";
      return range(static_cast<double>(v));
    }
    case OptionType::Number: {
      double v = 0;
      if (!parse_double(value, v)) return "expects a finite number";
      return range(v);
    }
    case OptionType::Boolean:
      if (value == "true" || value == "false" || value == "1" || value == "0" || value == "yes" || value == "no") {
        return {};
      }
      return "expects true or false";
    case OptionType::Choice: {
      if (std::find(spec.choices.begin(), spec.choices.end(), value) != spec.choices.end()) return {};
      std::string all;
      for (const auto& c : spec.choices) all += (all.empty() ? "" : "|") + c;
      return "expects one of " + all;
    }
    case OptionType::Layer: {
      int64_t v = 0;
      if (value == "feature" || parse_int(value, v)) return {};
      return "expects a layer index (negative counts from the end) or 'feature'";
    }
    case OptionType::NumberList: {
      std::stringstream ss(value);
      std::string item;
      int count = 0;
      while (std::getline(ss, item, ',')) {
        double v = 0;
        if (!parse_double(trim(item), v)) return "expects comma-separated numbers";
        if (auto err = range(v); !err.empty()) return err;
        ++count;
      }
      return count > 0 ? std::string{} : "expects comma-separated numbers";
    }
  }
  return "has an unknown type";
}

}  // namespace

Options Options::parse(std::string_view method, const std::vector<OptionSpec>& specs,
                       const std::vector<std::string>& key_values) {
  Options opts;
  opts.method_ = std::string(method);
  for (const auto& spec : specs) opts.values_.emplace_back(spec, spec.default_value);
  std::vector<std::string> seen;
  for (const auto& kv : key_values) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) {
      throw Error(std::string(method) + ": option '" + kv + "' is not key=value");
    }
    const std::string key = trim(std::string_view(kv).substr(0, eq));
    const std::string value = trim(std::string_view(kv).substr(eq + 1));
    auto it = std::find_if(opts.values_.begin(), opts.values_.end(),
                           [&](const auto& entry) { return entry.first.name == key; });
    if (it == opts.values_.end()) {
      std::string known;
      for (const auto& spec : specs) known += (known.empty() ? "" : ", ") + spec.name;
      throw Error(std::string(method) + ": unknown option '" + key + "' (known: " +
                  (known.empty() ? "none" : known) + ")");
    }
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
      throw Error(std::string(method) + ": option '" + key + "' given twice");
    }
    seen.push_back(key);
    if (auto err = check_value(it->first, value); !err.empty()) {
      throw Error(std::string(method) + ": option " + key + "=" + value + " " + err);
    }
    it->second = value;
  }
  return opts;
}

const std::string& Options::raw(std::string_view name) const {
  for (const auto& [spec, value] : values_) {
    if (spec.name == name) return value;
  }
  throw Error(method_ + ": internal: no option named '" + std::string(name) + "'");
}

int64_t Options::integer(std::string_view name) const {
  int64_t v = 0;
  parse_int(raw(name), v);
  return v;
}

double Options::number(std::string_view name) const {
  double v = 0;
  parse_double(raw(name), v);
  return v;
}

bool Options::boolean(std::string_view name) const {
  const auto& v = raw(name);
  return v == "true" || v == "1" || v == "yes";
}

const std::string& Options::choice(std::string_view name) const { return raw(name); }
const std::string& Options::text(std::string_view name) const { return raw(name); }

std::vector<double> Options::numbers(std::string_view name) const {
  std::vector<double> out;
  std::stringstream ss(raw(name));
  std::string item;
  while (std::getline(ss, item, ',')) {
    double v = 0;
    parse_double(trim(item), v);
    out.push_back(v);
  }
  return out;
}

int Options::layer(std::string_view name, const EncoderInfo& info) const {
  const auto& v = raw(name);
  if (v == "feature") {
    if (info.feature_layer < 0) throw Error(method_ + ": " + std::string(name) + "=feature but the encoder has no feature layer");
    return info.feature_layer;
  }
  int64_t idx = 0;
  parse_int(v, idx);
  const int64_t resolved = idx < 0 ? idx + info.num_layers : idx;
  if (resolved < 0 || resolved >= info.num_layers) {
    throw Error(method_ + ": " + std::string(name) + "=" + v + " is outside the encoder's " +
                std::to_string(info.num_layers) + " layers");
  }
  return static_cast<int>(resolved);
}

std::vector<std::string> Options::effective() const {
  std::vector<std::string> out;
  for (const auto& [spec, value] : values_) out.push_back(spec.name + "=" + value);
  return out;
}

// ---- budgets -------------------------------------------------------------------------------------

Budget Budget::parse(std::string_view text) {
  const std::string s = trim(text);
  if (s == "all" || s == "none") return all();
  int64_t n = 0;
  if (parse_int(s, n)) {
    if (n < 1) throw Error("budget " + s + " must be at least 1 token");
    return tokens(n);
  }
  double r = 0;
  if (!s.empty() && s.back() == '%' && parse_double(std::string_view(s).substr(0, s.size() - 1), r)) {
    r /= 100.0;
  } else if (!parse_double(s, r)) {
    throw Error("budget '" + s + "' is not a token count, a ratio in (0, 1], a percentage or 'all'");
  }
  if (!(r > 0.0 && r <= 1.0)) throw Error("budget ratio " + s + " must be in (0, 1]");
  return fraction(r);
}

int64_t Budget::resolve(int64_t n) const {
  switch (kind) {
    case Kind::All:
      return n;
    case Kind::Count:
      if (count < 1 || count > n) {
        throw Error("budget " + std::to_string(count) + " is out of range: the image has " + std::to_string(n) +
                    " tokens (allowed 1.." + std::to_string(n) + ")");
      }
      return count;
    case Kind::Ratio:
      if (!(ratio > 0.0 && ratio <= 1.0)) throw Error("budget ratio " + std::to_string(ratio) + " must be in (0, 1]");
      if (const int64_t rounded = reduce::round_half_even(ratio * static_cast<double>(n)); rounded >= 1) {
        return std::min(rounded, n);
      }
      throw Error("budget ratio " + to_string() + " of " + std::to_string(n) + " tokens rounds to 0 (half to even, as "
                  "the official code counts): give a larger ratio or a count");
  }
  return n;
}

std::string Budget::to_string() const {
  switch (kind) {
    case Kind::All:
      return "all";
    case Kind::Count:
      return std::to_string(count);
    case Kind::Ratio: {
      std::ostringstream os;
      os << ratio;
      return os.str();
    }
  }
  return "all";
}

std::string_view to_string(BudgetUse use) {
  switch (use) {
    case BudgetUse::Exact: return "exact";
    case BudgetUse::AtMost: return "at most";
    case BudgetUse::Cap: return "cap";
    case BudgetUse::Ignored: return "ignored";
  }
  return "?";
}

std::string_view to_string(TokenRole role) {
  switch (role) {
    case TokenRole::Kept: return "kept";
    case TokenRole::Anchor: return "anchor";
    case TokenRole::Buffer: return "buffer";
    case TokenRole::Register: return "register";
    case TokenRole::Cls: return "cls";
    case TokenRole::Dominant: return "dominant";
    case TokenRole::Contextual: return "contextual";
    case TokenRole::Outlier: return "outlier";
    case TokenRole::Uniform: return "uniform";
    case TokenRole::Pooled: return "pooled";
    case TokenRole::Summary: return "summary";
  }
  return "?";
}

}  // namespace vtprune
