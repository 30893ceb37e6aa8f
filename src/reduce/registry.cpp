#include <array>
#include <sstream>

#include "common.h"
#include "methods.h"

namespace vtprune {
namespace {

using reduce::MethodEntry;

// Fixed order: the papers' methods first, then baselines.
constexpr std::array<MethodEntry, 11> kMethods = {{
    {reduce::hiprune_info, reduce::make_hiprune},
    {reduce::prumerge_info, reduce::make_prumerge},
    {reduce::prumerge_plus_info, reduce::make_prumerge_plus},
    {reduce::dfmr_info, reduce::make_dfmr},
    {reduce::visionzip_info, reduce::make_visionzip},
    {reduce::fastervlm_info, reduce::make_fastervlm},
    {reduce::divprune_info, reduce::make_divprune},
    {reduce::cdpruner_info, reduce::make_cdpruner},
    {reduce::pool_info, reduce::make_pool},
    {reduce::random_info, reduce::make_random},
    {reduce::none_info, reduce::make_none},
}};

const MethodEntry& entry(std::string_view name) {
  for (const auto& e : kMethods) {
    if (e.info().name == name) return e;
  }
  std::string known;
  for (const auto& e : kMethods) known += (known.empty() ? "" : ", ") + e.info().name;
  throw Error("unknown method '" + std::string(name) + "' (known: " + known + ")");
}

std::string type_name(const OptionSpec& spec) {
  switch (spec.type) {
    case OptionType::Integer: return "int";
    case OptionType::Number: return "number";
    case OptionType::Boolean: return "bool";
    case OptionType::Layer: return "layer";
    case OptionType::NumberList: return "numbers";
    case OptionType::Choice: {
      std::string s;
      for (const auto& c : spec.choices) s += (s.empty() ? "" : "|") + c;
      return s;
    }
  }
  return "?";
}

}  // namespace

const std::vector<MethodInfo>& methods() {
  static const std::vector<MethodInfo> all = [] {
    std::vector<MethodInfo> v;
    for (const auto& e : kMethods) v.push_back(e.info());
    return v;
  }();
  return all;
}

const MethodInfo& method_info(std::string_view name) { return entry(name).info(); }

std::unique_ptr<Reducer> make_reducer(std::string_view name, const std::vector<std::string>& options) {
  const MethodEntry& e = entry(name);
  return e.make(Options::parse(name, e.info().options, options));
}

MethodSpec parse_method_spec(std::string_view spec) {
  MethodSpec m;
  size_t start = 0;
  for (;;) {
    const size_t colon = spec.find(':', start);
    const std::string part(spec.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (start == 0) {
      m.name = part;
      method_info(m.name);  // throws, listing the known methods
    } else if (part.find('=') == std::string::npos || part.front() == '=') {
      throw Error("method spec '" + std::string(spec) + "': '" + part + "' is not key=value (expected " + m.name +
                  ":key=value, e.g. prumerge:layer=-2)");
    } else {
      m.options.push_back(part);
    }
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  return m;
}

std::optional<MethodSpec> parse_routed_option(std::string_view option) {
  const size_t eq = option.find('='), colon = option.find(':');
  if (eq == std::string_view::npos || eq == 0) {
    throw Error("option '" + std::string(option) + "': expected key=value or method:key=value (e.g. prumerge:layer=-2)");
  }
  if (colon == std::string_view::npos || colon > eq) {
    const std::string_view key = option.substr(0, eq);
    if (const size_t dot = key.find('.'); dot != std::string_view::npos) {
      throw Error("option '" + std::string(option) + "': a method's option is written " + std::string(key.substr(0, dot)) + ":" +
                  std::string(option.substr(dot + 1)) + " (method:key=value)");
    }
    return std::nullopt;
  }
  MethodSpec m = parse_method_spec(option);
  if (m.options.size() != 1) {
    throw Error("option '" + std::string(option) + "': expected one method:key=value");
  }
  return m;
}

std::string describe(const MethodInfo& m) {
  std::ostringstream os;
  os << m.name << " — " << m.keeps << "\n";
  os << "  paper:      " << m.paper << "\n";
  os << "  provenance: " << m.provenance << "\n";
  os << "  budget:     " << to_string(m.budget_use) << "\n";
  if (m.options.empty()) os << "  options:    none\n";
  for (const auto& o : m.options) {
    os << "  " << o.name << "=" << o.default_value << "  (" << type_name(o) << ")  " << o.help << "\n";
  }
  return os.str();
}

namespace reduce {

Reduction gather_reduction(const EncoderOutput& input, std::vector<int32_t> kept, std::vector<TokenRole> roles) {
  Reduction r;
  r.dim = input.features.empty() ? 0 : input.features.cols;  // selection only: indices, no vectors
  r.tokens.reserve(kept.size() * static_cast<size_t>(r.dim));
  if (r.dim > 0) gather_rows(input.features, kept, r.tokens);
  r.kept = std::move(kept);
  r.roles = std::move(roles);
  return r;
}

}  // namespace reduce
}  // namespace vtprune
