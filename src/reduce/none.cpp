// none: keep every patch, in raster order (the unpruned baseline).
#include "common.h"
#include "methods.h"

namespace vtprune::reduce {
namespace {

class None final : public Reducer {
 public:
  using Reducer::Reducer;
  const MethodInfo& info() const override { return none_info(); }
  Needs needs(const EncoderInfo&) const override { return {}; }

 protected:
  Reduction run(const EncoderOutput& input, int64_t, bool) const override {
    std::vector<int32_t> kept(static_cast<size_t>(input.num_patches()));
    for (size_t i = 0; i < kept.size(); ++i) kept[i] = static_cast<int32_t>(i);
    std::vector<TokenRole> roles(kept.size(), TokenRole::Kept);
    return gather_reduction(input, std::move(kept), std::move(roles));
  }
};

}  // namespace

const MethodInfo& none_info() {
  static const MethodInfo info{
      "none", "-", "every patch, in raster order (no reduction)", "-", BudgetUse::Ignored, {}};
  return info;
}

std::unique_ptr<Reducer> make_none(Options options) { return std::make_unique<None>(std::move(options)); }

}  // namespace vtprune::reduce
