// Reduction cost of every method, given the encoder's taps, at LLaVA-1.5 size (N = 576, D = 1024; DivPrune and
// CDPruner on 4096-wide projected embeddings) and LLaVA-NeXT size (N = 2880). Run: build/bin/bench_reduce
// (--benchmark_repetitions=5 --benchmark_report_aggregates_only=true for medians).
#include <benchmark/benchmark.h>

#include "reduce/synthetic.h"

namespace {

using vtprune::Budget;

struct Setup {
  const char* method;
  Budget budget;
};

const vtprune::test::SyntheticEncoder& encoder(int64_t n) {
  // 24x24 = 576 (LLaVA-1.5) or 48x60 = 2880 (LLaVA-NeXT: 5 crops of 576); D = 1024, projected 2048 -> see below
  static vtprune::test::SyntheticEncoder small({24, 24}, 1024, 1, true, 4096);
  static vtprune::test::SyntheticEncoder large({48, 60}, 1024, 2, true, 4096);
  return n == 576 ? small : large;
}

void BM_Reduce(benchmark::State& state, Setup setup) {
  const auto& enc = encoder(state.range(0));
  const auto reducer = vtprune::make_reducer(setup.method);
  int64_t rows = 0;
  for (auto _ : state) {
    auto r = reducer->reduce(enc.out, setup.budget);
    rows = r.rows();
    benchmark::DoNotOptimize(r.tokens.data());
  }
  state.counters["tokens_out"] = static_cast<double>(rows);
}

#define VTPRUNE_BENCH(name, budget)                                                              \
  BENCHMARK_CAPTURE(BM_Reduce, name, Setup{#name, budget})->Arg(576)->Arg(2880)->Unit(benchmark::kMillisecond)

VTPRUNE_BENCH(hiprune, Budget::tokens(64));
VTPRUNE_BENCH(fastervlm, Budget::tokens(64));
VTPRUNE_BENCH(visionzip, Budget::tokens(64));
VTPRUNE_BENCH(prumerge, Budget::all());
VTPRUNE_BENCH(prumerge_plus, Budget::all());
VTPRUNE_BENCH(divprune, Budget::tokens(64));
VTPRUNE_BENCH(cdpruner, Budget::tokens(64));
// CDPruner computes one row of the similarity per selected token: its cost grows with the budget
BENCHMARK_CAPTURE(BM_Reduce, cdpruner_b192, Setup{"cdpruner", Budget::tokens(192)})->Arg(576)->Unit(benchmark::kMillisecond);
VTPRUNE_BENCH(dfmr, Budget::all());
VTPRUNE_BENCH(pool, Budget::tokens(64));
VTPRUNE_BENCH(random, Budget::tokens(64));

}  // namespace

BENCHMARK_MAIN();
