#include "common.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <thread>

namespace vtprune::reduce {

std::vector<int32_t> stable_top_k(std::span<const float> scores, int64_t k, std::span<const uint8_t> excluded) {
  const auto n = static_cast<int32_t>(scores.size());
  std::vector<int32_t> order;
  order.reserve(scores.size());
  for (int32_t i = 0; i < n; ++i) {
    if (excluded.empty() || !excluded[static_cast<size_t>(i)]) order.push_back(i);
  }
  if (k < 0 || k > static_cast<int64_t>(order.size())) {
    throw Error("top-k: k = " + std::to_string(k) + " but only " + std::to_string(order.size()) +
                " candidates");
  }
  auto before = [&](int32_t a, int32_t b) {
    const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  };
  const auto kth = order.begin() + k;
  std::nth_element(order.begin(), kth, order.end(), before);
  std::sort(order.begin(), kth, before);
  order.resize(static_cast<size_t>(k));
  return order;
}

double percentile_linear(std::span<const float> values, double q) {
  if (values.empty()) throw Error("percentile of an empty set");
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  const double pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double t = pos - static_cast<double>(lo);
  // numpy's _lerp: a + (b - a) * t, switched to b - (b - a) * (1 - t) for t >= 0.5
  const double a = sorted[lo], b = sorted[hi];
  return t >= 0.5 ? b - (b - a) * (1.0 - t) : a + (b - a) * t;
}

int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

int64_t argmax_first(std::span<const float> values) {
  int64_t best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  }
  return best;
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

std::vector<float> normalize_rows(const MatrixView& m) {
  std::vector<float> out(m.data.begin(), m.data.end());
  for (int64_t r = 0; r < m.rows; ++r) {
    float* row = out.data() + r * m.cols;
    const float norm = std::sqrt(dot(row, row, m.cols));
    const float inv = 1.0f / std::max(norm, 1e-12f);
    for (int64_t c = 0; c < m.cols; ++c) row[c] *= inv;
  }
  return out;
}

namespace {

// 4 x 4 block of dot products of length d. The 16 independent accumulators vectorise along d.
void dot_block_4x4(const float* const a[4], const float* const b[4], int64_t d, float out[4][4]) {
  float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
  float s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
  const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
  const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
#pragma omp simd reduction(+ : s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)
  for (int64_t k = 0; k < d; ++k) {
    const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
    const float y0 = b0[k], y1 = b1[k], y2 = b2[k], y3 = b3[k];
    s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
    s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
    s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
    s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
  }
  out[0][0] = s00; out[0][1] = s01; out[0][2] = s02; out[0][3] = s03;
  out[1][0] = s10; out[1][1] = s11; out[1][2] = s12; out[1][3] = s13;
  out[2][0] = s20; out[2][1] = s21; out[2][2] = s22; out[2][3] = s23;
  out[3][0] = s30; out[3][1] = s31; out[3][2] = s32; out[3][3] = s33;
}

}  // namespace

void dot_products(const MatrixView& a, const MatrixView& b, std::span<float> out, bool symmetric) {
  if (a.cols != b.cols) throw Error("dot_products: widths differ");
  const int64_t n = a.rows, m = b.rows, d = a.cols;
  if (static_cast<int64_t>(out.size()) < n * m) throw Error("dot_products: output too small");
  const float* pa = a.data.data();
  const float* pb = b.data.data();
  // rows blocks [first, first + 4*step, ...): interleaved so triangular (symmetric) work stays balanced
  auto rows_from = [&](int64_t first_block, int64_t block_step) {
    for (int64_t i0 = first_block * 4; i0 < n; i0 += 4 * block_step) {
      const float* ra[4];
      for (int t = 0; t < 4; ++t) ra[t] = pa + std::min(i0 + t, n - 1) * d;  // tails repeat the last row
      const int64_t j_start = symmetric ? i0 : 0;
      for (int64_t j0 = j_start; j0 < m; j0 += 4) {
        const float* rb[4];
        for (int t = 0; t < 4; ++t) rb[t] = pb + std::min(j0 + t, m - 1) * d;
        float block[4][4];
        dot_block_4x4(ra, rb, d, block);
        for (int x = 0; x < 4 && i0 + x < n; ++x) {
          for (int y = 0; y < 4 && j0 + y < m; ++y) {
            out[static_cast<size_t>((i0 + x) * m + j0 + y)] = block[x][y];
            if (symmetric) out[static_cast<size_t>((j0 + y) * m + i0 + x)] = block[x][y];
          }
        }
      }
    }
  };
  // Large products (DivPrune's 576 x 576 x 4096 Gram matrix) use every core: the encoder is idle by then.
  const double work = static_cast<double>(n) * static_cast<double>(m) * static_cast<double>(d) * (symmetric ? 0.5 : 1.0);
  const int64_t threads = work < 3.2e7 ? 1 : std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, (n + 3) / 4);
  if (threads <= 1) {
    rows_from(0, 1);
    return;
  }
  std::vector<std::jthread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(rows_from, t, threads);
  rows_from(0, threads);
}

void dot_row(std::span<const float> a, const MatrixView& b, std::span<float> out) {
  const int64_t n = b.rows, d = b.cols;
  if (static_cast<int64_t>(a.size()) != d) throw Error("dot_row: widths differ");
  if (static_cast<int64_t>(out.size()) < n) throw Error("dot_row: output too small");
  const float* x = a.data();
  const float* pb = b.data.data();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {  // 8 independent accumulators vectorise along d; x is loaded once for all 8
    const float *b0 = pb + j * d, *b1 = b0 + d, *b2 = b1 + d, *b3 = b2 + d, *b4 = b3 + d, *b5 = b4 + d, *b6 = b5 + d, *b7 = b6 + d;
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7)
    for (int64_t k = 0; k < d; ++k) {
      const float v = x[k];
      s0 += v * b0[k]; s1 += v * b1[k]; s2 += v * b2[k]; s3 += v * b3[k];
      s4 += v * b4[k]; s5 += v * b5[k]; s6 += v * b6[k]; s7 += v * b7[k];
    }
    const float s[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
    std::copy(s, s + 8, out.begin() + j);
  }
  for (; j < n; ++j) out[static_cast<size_t>(j)] = dot(x, pb + j * d, d);
}

std::vector<std::vector<int32_t>> cosine_knn(const MatrixView& unit_rows, std::span<const int32_t> queries, int64_t k) {
  const int64_t n = unit_rows.rows;
  k = std::min<int64_t>(k, n - 1);
  std::vector<float> query_rows;
  gather_rows(unit_rows, queries, query_rows);
  std::vector<float> cosine(queries.size() * static_cast<size_t>(n));
  dot_products({query_rows, static_cast<int64_t>(queries.size()), unit_rows.cols}, unit_rows, cosine);
  std::vector<uint8_t> self(static_cast<size_t>(n), 0);
  std::vector<std::vector<int32_t>> out;
  out.reserve(queries.size());
  for (size_t qi = 0; qi < queries.size(); ++qi) {
    self[static_cast<size_t>(queries[qi])] = 1;
    out.push_back(stable_top_k(std::span<const float>(cosine).subspan(qi * static_cast<size_t>(n), static_cast<size_t>(n)), k, self));
    self[static_cast<size_t>(queries[qi])] = 0;
  }
  return out;
}

void cross_neighbourhood(int32_t p, const Grid& grid, Border border, bool row_wrap, std::vector<int32_t>& out) {
  const int32_t n = static_cast<int32_t>(grid.size());
  const int32_t col = p % grid.w;
  const int32_t candidates[5] = {p, p - 1, p + 1, p - grid.w, p + grid.w};
  for (int i = 0; i < 5; ++i) {
    int32_t c = candidates[i];
    if (!row_wrap && ((i == 1 && col == 0) || (i == 2 && col == grid.w - 1))) continue;
    if (c < 0 || c >= n) {
      if (border == Border::Drop) continue;
      c = std::clamp(c, 0, n - 1);
    }
    out.push_back(c);
  }
}

std::vector<Window> adaptive_pool_windows(const Grid& in, const Grid& out) {
  std::vector<Window> windows;
  windows.reserve(static_cast<size_t>(out.size()));
  auto start = [](int i, int in_size, int out_size) { return (i * in_size) / out_size; };
  auto end = [](int i, int in_size, int out_size) { return ((i + 1) * in_size + out_size - 1) / out_size; };
  for (int r = 0; r < out.h; ++r) {
    for (int c = 0; c < out.w; ++c) {
      windows.push_back({start(r, in.h, out.h), end(r, in.h, out.h), start(c, in.w, out.w), end(c, in.w, out.w)});
    }
  }
  return windows;
}

std::vector<Window> stride_pool_windows(const Grid& in, int stride, bool ceil_mode) {
  const int oh = ceil_mode ? (in.h + stride - 1) / stride : in.h / stride;
  const int ow = ceil_mode ? (in.w + stride - 1) / stride : in.w / stride;
  std::vector<Window> windows;
  windows.reserve(static_cast<size_t>(oh) * static_cast<size_t>(ow));
  for (int r = 0; r < oh; ++r) {
    for (int c = 0; c < ow; ++c) {
      windows.push_back({r * stride, std::min(in.h, (r + 1) * stride), c * stride, std::min(in.w, (c + 1) * stride)});
    }
  }
  return windows;
}

void average_windows(const MatrixView& features, const Grid& grid, std::span<const Window> windows,
                     std::vector<float>& tokens, std::vector<std::vector<int32_t>>& groups) {
  const int64_t d = features.cols;
  std::vector<float> acc(static_cast<size_t>(d));
  for (const Window& w : windows) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::vector<int32_t> members;
    members.reserve(static_cast<size_t>(w.size()));
    for (int r = w.r0; r < w.r1; ++r) {
      for (int c = w.c0; c < w.c1; ++c) {
        const int32_t p = r * grid.w + c;
        members.push_back(p);
        const float* row = features.data.data() + int64_t{p} * d;
        for (int64_t k = 0; k < d; ++k) acc[static_cast<size_t>(k)] += row[k];
      }
    }
    const float inv = 1.0f / static_cast<float>(members.size());
    for (float v : acc) tokens.push_back(v * inv);
    groups.push_back(std::move(members));
  }
}

void attention_statistics(std::span<const float> attn, int heads, int64_t tokens, std::vector<float>* received,
                          std::vector<float>* cls_attention) {
  const int64_t t = tokens;
  if (static_cast<int64_t>(attn.size()) != int64_t{heads} * t * t) {
    throw Error("attention maps: expected [" + std::to_string(heads) + " x " + std::to_string(t) + " x " +
                std::to_string(t) + "] floats, got " + std::to_string(attn.size()));
  }
  if (received) {
    // mean over heads first, then over queries (the order of torch's .mean(1).mean(1))
    std::vector<float> head_mean(static_cast<size_t>(t * t), 0.0f);
    for (int h = 0; h < heads; ++h) {
      const float* map = attn.data() + int64_t{h} * t * t;
      for (int64_t i = 0; i < t * t; ++i) head_mean[static_cast<size_t>(i)] += map[i];
    }
    received->assign(static_cast<size_t>(t), 0.0f);
    std::vector<double> acc(static_cast<size_t>(t), 0.0);
    for (int64_t q = 0; q < t; ++q) {
      for (int64_t k = 0; k < t; ++k) acc[static_cast<size_t>(k)] += head_mean[static_cast<size_t>(q * t + k)] / heads;
    }
    for (int64_t k = 0; k < t; ++k) (*received)[static_cast<size_t>(k)] = static_cast<float>(acc[static_cast<size_t>(k)] / t);
  }
  if (cls_attention) {
    cls_attention->assign(static_cast<size_t>(t), 0.0f);
    for (int h = 0; h < heads; ++h) {
      const float* row = attn.data() + int64_t{h} * t * t;  // query 0 of head h
      for (int64_t k = 0; k < t; ++k) (*cls_attention)[static_cast<size_t>(k)] += row[k];
    }
    for (float& v : *cls_attention) v /= static_cast<float>(heads);
  }
}

void check_finite(std::span<const float> values, std::string_view method, std::string_view what) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw Error(std::string(method) + ": " + std::string(what) + " contains NaN or Inf at index " +
                  std::to_string(i));
    }
  }
}

void gather_rows(const MatrixView& m, std::span<const int32_t> rows, std::vector<float>& out) {
  for (int32_t r : rows) {
    auto row = m.row(r);
    out.insert(out.end(), row.begin(), row.end());
  }
}

}  // namespace vtprune::reduce
