// Winograd's filter and input transforms (winograd.h has the algebra): U = G g G^T
// for the filters (and its adjoint for dw), V = B^T d B for the input tiles.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "winograd.h"

namespace norma::nn::fast::NORMA_ISA::winograd {

namespace {

// G4 of winograd.h, in double for the filter transforms and their adjoint.
constexpr double kG4[6][3] = {{0.5, 0, 0},
                              {1.0 / 6, -1.0 / 6, 1.0 / 6},
                              {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                              {-16.0 / 15, 8.0 / 15, -4.0 / 15},
                              {1.0 / 30, 1.0 / 15, 2.0 / 15},
                              {0, 0, 0.5}};

}  // namespace

// In double (it runs once per call), rounded once to float.
void filter_transform(float* U, const float* w, int64_t K, int64_t C, bool flip, int tw) {
  const int64_t Ko = flip ? C : K, Ci = flip ? K : C;
  const int cols = tw + 2, xis = 6 * cols;
  // Over all threads: serial, the three filter transforms of a step left the
  // other cores idle. Each filter o of U is gathered in u (xi, Ci) and copied
  // out a row at a time: stored one float at a time to its 24 or 36 planes,
  // the stores took most of the time.
#pragma omp parallel
  {
    std::vector<float> u(size_t(xis * Ci));
#pragma omp for schedule(static)
    for (int64_t o = 0; o < Ko; ++o) {
      for (int64_t in = 0; in < Ci; ++in) {
        const float* g = flip ? w + (in * C + o) * 9 : w + (o * C + in) * 9;
        double f[3][3], t[6][3];
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) f[a][b] = flip ? g[(2 - a) * 3 + (2 - b)] : g[a * 3 + b];
        for (int i = 0; i < 6; ++i)  // t = G4 f
          for (int b = 0; b < 3; ++b) t[i][b] = kG4[i][0] * f[0][b] + kG4[i][1] * f[1][b] + kG4[i][2] * f[2][b];
        for (int i = 0; i < 6; ++i) {  // t G2^T or t G4^T
          const double u2[4] = {t[i][0], 0.5 * (t[i][0] + t[i][1] + t[i][2]), 0.5 * (t[i][0] - t[i][1] + t[i][2]),
                                t[i][2]};
          for (int j = 0; j < cols; ++j)
            u[(cols * i + j) * Ci + in] =
                float(tw == 2 ? u2[j] : kG4[j][0] * t[i][0] + kG4[j][1] * t[i][1] + kG4[j][2] * t[i][2]);
        }
      }
      for (int xi = 0; xi < xis; ++xi) std::copy_n(u.data() + xi * Ci, Ci, U + (xi * Ko + o) * Ci);
    }
  }
}

// The slices of dU are added in thread order (float, as they were summed
// before), so the result is the same every run. F(4x2) tiles only: the only
// ones dw takes.
void filter_transform_backward(float* dw, const float* dU, int T, int64_t K, int64_t C) {
  const int64_t KC = 24 * K * C;
#pragma omp parallel
  {
    std::vector<double> ub(size_t(24 * K));  // dU[xi][c][k] for all xi, k of one c: contiguous reads
    // (The slices are added into u a slice at a time, which vectorises; summed
    // per element instead, over t innermost, it ran slower.)
    std::vector<float> u(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t c = 0; c < C; ++c) {
      for (int xi = 0; xi < 24; ++xi) {
        const float* d = dU + (xi * C + c) * K;
        std::copy_n(d, K, u.data());
        for (int t = 1; t < T; ++t)
          for (int64_t k = 0; k < K; ++k) u[k] += d[t * KC + k];
        std::copy_n(u.data(), K, ub.data() + xi * K);
      }
      for (int64_t k = 0; k < K; ++k) {
        double t[3][4];
        for (int a = 0; a < 3; ++a)  // t = G4^T u
          for (int j = 0; j < 4; ++j) {
            t[a][j] = 0;
            for (int i = 0; i < 6; ++i) t[a][j] += kG4[i][a] * ub[(4 * i + j) * K + k];
          }
        float* g = dw + (k * C + c) * 9;
        for (int a = 0; a < 3; ++a) {  // dg = t G2
          g[a * 3 + 0] = float(t[a][0] + 0.5 * (t[a][1] + t[a][2]));
          g[a * 3 + 1] = float(0.5 * (t[a][1] - t[a][2]));
          g[a * 3 + 2] = float(0.5 * (t[a][1] + t[a][2]) + t[a][3]);
        }
      }
    }
  }
}

namespace {

// The even and the odd elements of the 8 floats at p[0] + o then the 8 at p[1] + o.
inline void load8_deinterleaved(const float* const p[2], int64_t o, v8& even, v8& odd) {
  const v8 a = load8(p[0] + o), b = load8(p[1] + o);
  even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
  odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
}

// Elements 4 j + e of the 32 floats at p[0] + o, p[1] + o, p[2] + o, p[3] + o
// (8 each), for j = 0..7, into q[e] (e = 0..3).
inline void load8_deinterleaved4(const float* const p[4], int64_t o, v8 q[4]) {
  const v8 a = load8(p[0] + o), b = load8(p[1] + o), c = load8(p[2] + o), d = load8(p[3] + o);
  const v8 ab01 = __builtin_shufflevector(a, b, 0, 4, 8, 12, 1, 5, 9, 13);  // e = 0, 1 of j = 0..3
  const v8 ab23 = __builtin_shufflevector(a, b, 2, 6, 10, 14, 3, 7, 11, 15);
  const v8 cd01 = __builtin_shufflevector(c, d, 0, 4, 8, 12, 1, 5, 9, 13);  // of j = 4..7
  const v8 cd23 = __builtin_shufflevector(c, d, 2, 6, 10, 14, 3, 7, 11, 15);
  q[0] = __builtin_shufflevector(ab01, cd01, 0, 1, 2, 3, 8, 9, 10, 11);
  q[1] = __builtin_shufflevector(ab01, cd01, 4, 5, 6, 7, 12, 13, 14, 15);
  q[2] = __builtin_shufflevector(ab23, cd23, 0, 1, 2, 3, 8, 9, 10, 11);
  q[3] = __builtin_shufflevector(ab23, cd23, 4, 5, 6, 7, 12, 13, 14, 15);
}


// The tile rows [r0, r1) of a block, cut where the image changes: tile rows
// [ty0, ty1) of image n, starting at block row r. f(n, ty0, ty1, r).
template <class F>
void for_each_image_segment(const Geom& g, int64_t r0, int64_t r1, F f) {
  for (int64_t r = r0; r < r1;) {
    const int64_t n = r / g.TH, ty0 = r % g.TH, ty1 = std::min(g.TH, ty0 + (r1 - r));
    f(n, ty0, ty1, r);
    r += ty1 - ty0;
  }
}

// The L floats of row from column j0 on, zero outside its columns [0, W): a
// masked load, which reads nothing outside them, where AVX-512 is there.
template <int L>
inline vec<L> load_clipped(const float* row, int64_t j0, int64_t W) {
  const int64_t lo = std::max<int64_t>(0, -j0), hi = std::min<int64_t>(L, W - j0);
#if defined(__AVX512F__) && defined(__AVX512VL__)
  const unsigned m = hi > lo ? ((1u << hi) - 1) & ~((1u << lo) - 1) : 0;
  if constexpr (L == 16)
    return (vec<L>)_mm512_maskz_loadu_ps(__mmask16(m), row + j0);
  else
    return (vec<L>)_mm256_maskz_loadu_ps(__mmask8(m), row + j0);
#else
  float b[L] = {};
  for (int64_t i = lo; i < hi; ++i) b[i] = row[j0 + i];
  return load_vector<vec<L>>(b);
#endif
}

// The six input rows of tile row ty of a plane (null: a padding row).
inline void tile_input_rows(const float* rows[6], const float* plane, const Geom& g, int64_t ty) {
  for (int l = 0; l < 6; ++l) {
    const int64_t ih = 4 * ty - g.ph + l;
    rows[l] = ih >= 0 && ih < g.H ? plane + ih * g.W : nullptr;
  }
}

// Hardware prefetchers stop at 4 KiB pages, a 32x32 plane's size, so each
// plane starts cold. The input transforms ask for the next channel's rows of
// tile rows [ty0, ty1) while this one's tiles are computed, a share of them
// each tile row: issued all at once, the prefetches waited on each other.
struct NextChannelRows {
  const float* next;  // the next channel's plane
  int64_t lo, hi, share;
  NextChannelRows(const float* plane, const Geom& g, int64_t c, int64_t ty0, int64_t ty1)
      : next(plane + g.H * g.W),
        lo(std::max<int64_t>(0, 4 * ty0 - g.ph) * g.W),
        hi(c + 1 < g.C ? std::min(g.H, 4 * ty1 - g.ph + 2) * g.W : lo),
        share(((hi - lo + ty1 - ty0 - 1) / (ty1 - ty0) + 15) / 16 * 16) {}
  void prefetch(int64_t i) const {  // the share of the i-th tile row
    const int64_t p0 = lo + i * share;
    prefetch_floats(next + p0, std::min(hi, p0 + share) - p0);
  }
};

// For each channel c of x, in order: tile_row(c, i, rows) for each tile row
// of [r0, r1) (i its place in the block, rows its six input rows), with the
// next channel's rows prefetched along the way, then channel_done(c).
template <class TileRow, class ChannelDone>
void for_each_tile_row(const float* x, const Geom& g, int64_t r0, int64_t r1, TileRow tile_row,
                       ChannelDone channel_done) {
  for (int64_t c = 0; c < g.C; ++c) {
    for_each_image_segment(g, r0, r1, [&](int64_t n, int64_t ty0, int64_t ty1, int64_t r) {
      const float* plane = x + (n * g.C + c) * g.H * g.W;
      const NextChannelRows next(plane, g, c, ty0, ty1);
      for (int64_t ty = ty0; ty < ty1; ++ty) {
        next.prefetch(ty - ty0);
        const float* rows[6];
        tile_input_rows(rows, plane, g, ty);
        tile_row(c, r - r0 + ty - ty0, rows);
      }
    });
    channel_done(c);
  }
}

// t = B4^T d for the L columns from j0 on of a tile row's six input rows
// (null: a padding row), zero outside x's columns [0, W).
template <int L>
inline void columns_bt(vec<L> t[6], const float* const rows[6], int64_t j0, int64_t W) {
  vec<L> d[6];
  const bool inside = j0 >= 0 && j0 + L <= W;
  for (int l = 0; l < 6; ++l)
    d[l] = !rows[l] ? vec<L>{} : inside ? load_vector<vec<L>>(rows[l] + j0) : load_clipped<L>(rows[l], j0, W);
  col_bt(t, d);
}

// input_transform for F(4x2) tiles where a tile row is whole groups of L
// tiles (TW % L == 0), all in registers: a group's 2 L + 2 columns are
// three vectors a, b, c of B4^T d (c is the next group's a), and B2 along
// the rows takes, for each of the six rows, columns 2tx (e0), 2tx + 1 (o0),
// 2tx + 2 (e2) and 2tx + 3 (o2) of the group's L tiles with four shuffles.
// The general path below goes through a row of scratch, which this one saves.
template <int L>
void input_transform_rows(float* V, const float* x, const Geom& g, int64_t r0, int64_t r1) {
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.C, P);
  for_each_tile_row(
      x, g, r0, r1,
      [&](int64_t c, int64_t i_row, const float* const rows[6]) {
        float* __restrict v = V + c * P + i_row * g.TW;
        vec<L> a[6], b[6], cc[6];
        columns_bt<L>(a, rows, -g.pw, g.W);
        for (int64_t tx0 = 0; tx0 < g.TW; tx0 += L) {
          const int64_t j0 = 2 * tx0 - g.pw;
          columns_bt<L>(b, rows, j0 + L, g.W);
          columns_bt<L>(cc, rows, j0 + 2 * L, g.W);
          for (int i = 0; i < 6; ++i) {
            vec<L> e0, o0, e2, o2;
            if constexpr (L == 16) {
              e0 = __builtin_shufflevector(a[i], b[i], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
              o0 = __builtin_shufflevector(a[i], b[i], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
              e2 = __builtin_shufflevector(e0, cc[i], 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
              o2 = __builtin_shufflevector(o0, cc[i], 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17);
            } else {
              e0 = __builtin_shufflevector(a[i], b[i], 0, 2, 4, 6, 8, 10, 12, 14);
              o0 = __builtin_shufflevector(a[i], b[i], 1, 3, 5, 7, 9, 11, 13, 15);
              e2 = __builtin_shufflevector(e0, cc[i], 1, 2, 3, 4, 5, 6, 7, 8);
              o2 = __builtin_shufflevector(o0, cc[i], 1, 2, 3, 4, 5, 6, 7, 9);
            }
            float* vi = v + 4 * i * ld + tx0;
            store_vector(vi, e0 - e2);
            store_vector(vi + ld, o0 + e2);
            store_vector(vi + 2 * ld, e2 - o0);
            store_vector(vi + 3 * ld, o0 - o2);
            a[i] = cc[i];
          }
        }
      },
      [](int64_t) {});
}

}  // namespace

// Per channel, B4^T runs down the columns of each tile row's six
// input rows, read from x where they are inside it (with masked loads at its
// left and right edges), zero where they are padding; then
// B2 (or B4) along the columns of each tile, for 8 tiles at a time in the
// order of V: 8 floats of a row of t (a chunk) hold the first columns of
// 4 tiles (2 with B4), so 8 tiles are two chunks (four), from one tile row
// or, in narrow images, from several. (As one loop over tiles, reading every
// column with stride 2, gcc vectorised it with 4 lanes only; a copy of the
// rows with their padding, read before, cost more than the masked loads.) The last 8 tiles may run past P, writing up to 7
// floats into the next channel's slots, written again later, or into the 16
// floats of slack after a plane (plane_stride).
void input_transform(float* V, const float* x, const Geom& g, int64_t r0, int64_t r1, float* __restrict t) {
  if (g.tw == 2 && g.TW % 16 == 0) return input_transform_rows<16>(V, x, g, r0, r1);
  if (g.tw == 2 && g.TW % 8 == 0) return input_transform_rows<8>(V, x, g, r0, r1);
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.C, P), Wp = t_width(g);  // t: (r1 - r0, 6, Wp)
  const int64_t chunks = P / g.chunk();
  std::vector<int64_t> at(chunks);  // where each chunk starts in its tile row's first row of t
  for (int64_t ch = 0; ch < chunks; ++ch) {
    const int64_t q = ch * g.chunk();
    at[ch] = q / g.TW * 6 * Wp + g.tw * (q % g.TW);
  }
  auto column_pass = [&](int64_t, int64_t i_row, const float* const rows[6]) {
    float* tr = t + i_row * 6 * Wp;
    for (int64_t q = 0; q < Wp; q += 8) {  // B4^T down the columns; q is x's column q - pw
      v8 tc[6];
      columns_bt<8>(tc, rows, q - g.pw, g.W);
      for (int i = 0; i < 6; ++i) store8(tr + i * Wp + q, tc[i]);
    }
  };
  for_each_tile_row(x, g, r0, r1, column_pass, [&](int64_t c) {
    float* __restrict v = V + c * P;
    for (int64_t q0 = 0; q0 < P; q0 += 8) {  // B2 (or B4) along the rows, 8 tiles at a time
      const float* src[4];  // the chunks of these 8 tiles (the last one again past P)
      for (int m = 0; m < g.tw; ++m) src[m] = t + at[std::min(q0 / g.chunk() + m, chunks - 1)];
      for (int i = 0; i < 6; ++i)
        if (g.tw == 2) {
          v8 e0, o0, e2, o2;  // columns 2tx, 2tx + 1, 2tx + 2, 2tx + 3 of 8 tiles
          load8_deinterleaved(src, i * Wp, e0, o0);
          load8_deinterleaved(src, i * Wp + 2, e2, o2);
          float* vi = v + 4 * i * ld + q0;
          store8(vi, e0 - e2);
          store8(vi + ld, o0 + e2);
          store8(vi + 2 * ld, e2 - o0);
          store8(vi + 3 * ld, o0 - o2);
        } else {
          v8 col[6], next[4], tc[6];  // columns 4tx .. 4tx + 5 of 8 tiles
          load8_deinterleaved4(src, i * Wp, col);
          load8_deinterleaved4(src, i * Wp + 4, next);
          col[4] = next[0], col[5] = next[1];
          col_bt(tc, col);
          for (int j = 0; j < 6; ++j) store8(v + (6 * i + j) * ld + q0, tc[j]);
        }
    }
  });
}

}  // namespace norma::nn::fast::NORMA_ISA::winograd
