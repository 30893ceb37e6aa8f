// random: B patches drawn uniformly without replacement (seeded), raster order. A floor for every method.
#include <algorithm>
#include <random>

#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

// Unbiased integer in [0, bound) from a 64-bit engine (rejection sampling). std::uniform_int_distribution
// is implementation-defined, so results would differ between standard libraries.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x = rng();
  while (x >= limit) x = rng();
  return x % bound;
}

class Random final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return random_info(); }
  Needs needs(const EncoderInfo&) const override { return {}; }

 protected:
  Reduction run(const EncoderOutput& input, int64_t budget, bool) const override {
    const int64_t n = input.num_patches();
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    std::mt19937_64 rng(static_cast<uint64_t>(options().integer("seed")));
    for (int64_t i = 0; i < budget; ++i) {  // partial Fisher-Yates
      const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(n - i))) + i;
      std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
    }
    order.resize(static_cast<size_t>(budget));
    std::sort(order.begin(), order.end());
    std::vector<TokenRole> roles(order.size(), TokenRole::Kept);
    return gather_reduction(input, std::move(order), std::move(roles));
  }
};

}  // namespace

const MethodInfo& random_info() {
  static const MethodInfo info{"random",
                               "-",
                               "B patches drawn uniformly at random (seeded), raster order",
                               "baseline",
                               BudgetUse::Exact,
                               {{"seed", OptionType::Integer, "0", "random seed (same seed, same tokens)", {}, 0, 9.2e18}}};
  return info;
}

std::unique_ptr<Reducer> make_random(Options options) { return std::make_unique<Random>(std::move(options)); }

}  // namespace vtprune::reduce
