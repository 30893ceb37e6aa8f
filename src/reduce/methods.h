// Internal: the registry's table of methods. Each method file defines its MethodInfo and a factory.
#pragma once

#include <memory>

#include "vtprune/reduce.h"

namespace vtprune::reduce {

struct MethodEntry {
  const MethodInfo& (*info)();
  std::unique_ptr<Reducer> (*make)(Options options);
};

#define VTPRUNE_DECLARE_METHOD(id)      \
  const MethodInfo& id##_info();        \
  std::unique_ptr<Reducer> make_##id(Options options);

VTPRUNE_DECLARE_METHOD(none)
VTPRUNE_DECLARE_METHOD(hiprune)
VTPRUNE_DECLARE_METHOD(prumerge)
VTPRUNE_DECLARE_METHOD(prumerge_plus)
VTPRUNE_DECLARE_METHOD(visionzip)
VTPRUNE_DECLARE_METHOD(fastervlm)
VTPRUNE_DECLARE_METHOD(divprune)
VTPRUNE_DECLARE_METHOD(cdpruner)
VTPRUNE_DECLARE_METHOD(dfmr)
VTPRUNE_DECLARE_METHOD(pool)
VTPRUNE_DECLARE_METHOD(random)

#undef VTPRUNE_DECLARE_METHOD

// Builds a Reduction that gathers `kept` rows of the features unchanged (pruning-only methods).
Reduction gather_reduction(const EncoderOutput& input, std::vector<int32_t> kept, std::vector<TokenRole> roles);

}  // namespace vtprune::reduce
