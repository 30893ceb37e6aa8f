// Shared primitives of the reduction methods. One implementation of each concept, used by every method:
// ranking (with its tie rule), percentiles, rounding, cosine similarity and neighbours, grid
// neighbourhoods, pooling windows, and the attention statistics encoders compute.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "vtprune/reduce.h"

namespace vtprune::reduce {

// Indices of the k largest scores, ordered by score descending; equal scores keep the LOWER index first
// (sort key (-score, index)). This is the project's one tie rule: torch.topk gives no order among exact
// ties, so this is the deterministic choice methods.md §0.1 specifies. `excluded[i] != 0` removes i.
// Requires 0 <= k <= number of non-excluded scores; scores must be finite.
std::vector<int32_t> stable_top_k(std::span<const float> scores, int64_t k,
                                  std::span<const uint8_t> excluded = {});

// numpy.percentile(values, q) with numpy's default 'linear' method: sort, position p = q/100 * (n-1),
// interpolate between the neighbours of p. Computed in double.
double percentile_linear(std::span<const float> values, double q);

// Python's round(): half to even (round(2.5) == 2). HiPrune and DivPrune count with it.
int64_t round_half_even(double x);

// Index of the first maximum (torch.argmax's documented rule).
int64_t argmax_first(std::span<const float> values);

float dot(const float* a, const float* b, int64_t n);

// Rows scaled to unit L2 norm, as torch.nn.functional.normalize (norm clamped to >= 1e-12).
std::vector<float> normalize_rows(const MatrixView& m);

// out[i * b.rows + j] = <a_i, b_j> for every row i of a and j of b (out has a.rows * b.rows floats).
// Blocked 4x4 kernel; with `symmetric` (a and b are the same matrix) only half is computed and mirrored.
void dot_products(const MatrixView& a, const MatrixView& b, std::span<float> out, bool symmetric = false);

// out[j] = <a, b_j> for every row j of b (out has b.rows floats): one row of a Gram matrix on demand, for
// methods that need only a few rows of it (CDPruner: the selected tokens'). 8 rows of b per pass.
void dot_row(std::span<const float> a, const MatrixView& b, std::span<float> out);

// Cosine k-nearest neighbours: for each query row q (an index into `unit_rows`, rows already
// L2-normalised), the k other rows with the largest cosine, excluding q itself, ordered by cosine
// descending with the lower index first on ties (stable_top_k's rule). One blocked product for all queries.
std::vector<std::vector<int32_t>> cosine_knn(const MatrixView& unit_rows, std::span<const int32_t> queries, int64_t k);

// Grid neighbourhoods. HiPrune's "cross": p, p-1, p+1, p-w, p+w.
enum class Border { Clamp, Drop };  // out-of-range neighbours: clamped into [0, N-1] (official code) or dropped
// Appends the cross neighbourhood of patch p to `out` (may contain duplicates; callers de-duplicate).
// row_wrap=true lets p-1 / p+1 cross row ends, as the official HiPrune code does (it never checks).
void cross_neighbourhood(int32_t p, const Grid& grid, Border border, bool row_wrap, std::vector<int32_t>& out);

// A rectangle of patches [r0, r1) x [c0, c1).
struct Window {
  int r0 = 0, r1 = 0, c0 = 0, c1 = 0;
  int64_t size() const { return int64_t{r1 - r0} * (c1 - c0); }
};
// torch.nn.AdaptiveAvgPool2d's bins for an in -> out grid: rows [floor(i*h/oh), ceil((i+1)*h/oh)).
std::vector<Window> adaptive_pool_windows(const Grid& in, const Grid& out);
// avg_pool2d(kernel=s, stride=s): with ceil_mode the last partial windows are kept (averaged over their
// own size), otherwise dropped.
std::vector<Window> stride_pool_windows(const Grid& in, int stride, bool ceil_mode);
// Appends the mean feature of each window to `tokens` (row-major, features.cols wide) and records its
// source patches in `groups`.
void average_windows(const MatrixView& features, const Grid& grid, std::span<const Window> windows,
                     std::vector<float>& tokens, std::vector<std::vector<int32_t>>& groups);

// Attention statistics of one layer from its full post-softmax maps attn [H x T x T] ([head, query, key]):
//   received[k]      = mean over heads h and queries q of attn[h, q, k]   (HiPrune's score)
//   cls_attention[k] = mean over heads h of attn[h, 0, k]                   (FasterVLM / VisionZip's score)
// Either output may be null. Encoders compute the same numbers inside their graphs; this is the
// reference, used for case files and tests.
void attention_statistics(std::span<const float> attn, int heads, int64_t tokens, std::vector<float>* received,
                          std::vector<float>* cls_attention);

// Throws Error("<method>: <what> contains NaN or Inf at index i") for a non-finite value.
void check_finite(std::span<const float> values, std::string_view method, std::string_view what);

// Gathers rows of `m` into out (appends).
void gather_rows(const MatrixView& m, std::span<const int32_t> rows, std::vector<float>& out);

}  // namespace vtprune::reduce
