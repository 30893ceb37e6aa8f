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
