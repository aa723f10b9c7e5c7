// Winograd's output transforms (winograd.h has the algebra): Y = A^T M A, with
// the bias and the inference epilogue (BatchNorm2d, ReLU, 2x2 max pool) applied
// as Y is written, and its adjoint dM = A dY A^T for dw.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "winograd.h"

namespace norma::nn::fast::NORMA_ISA::winograd {

namespace {

// b[i][j] <- b[j][i]: three rounds of 8 two-vector shuffles (dy's
// transposition in output_transform_backward).
inline void transpose8(v8 b[8]) {
  v8 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {  // pairs of rows, interleaved within each half
    t[i] = __builtin_shufflevector(b[i], b[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(b[i], b[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {  // quads: columns j and j + 4 of four rows
    u[i] = __builtin_shufflevector(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = __builtin_shufflevector(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = __builtin_shufflevector(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = __builtin_shufflevector(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int j = 0; j < 4; ++j) {  // the halves of rows 0-3 and 4-7
    b[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    b[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// The inverses of the input transform's deinterleaving loads: out[m] (L floats each, L = 8 or
// 16) gets elements L m .. L m + L - 1 of even[0] odd[0] even[1] odd[1] ...
// (2 lanes), or (8 floats) of q[0][0] q[1][0] q[2][0] q[3][0] q[0][1] ...
// (4 lanes).
template <class V>
inline void interleave(V out[2], V even, V odd) {
  if constexpr (sizeof(V) == 64) {
    out[0] = __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    out[1] = __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  } else {
    out[0] = __builtin_shufflevector(even, odd, 0, 8, 1, 9, 2, 10, 3, 11);
    out[1] = __builtin_shufflevector(even, odd, 4, 12, 5, 13, 6, 14, 7, 15);
  }
}
inline void interleave8x4(v8 out[4], const v8 q[4]) {
  v8 a[2], b[2];  // q[0] q[1] and q[2] q[3] in pairs
  interleave(a, q[0], q[1]);
  interleave(b, q[2], q[3]);
  out[0] = __builtin_shufflevector(a[0], b[0], 0, 1, 8, 9, 2, 3, 10, 11);
  out[1] = __builtin_shufflevector(a[0], b[0], 4, 5, 12, 13, 6, 7, 14, 15);
  out[2] = __builtin_shufflevector(a[1], b[1], 0, 1, 8, 9, 2, 3, 10, 11);
  out[3] = __builtin_shufflevector(a[1], b[1], 4, 5, 12, 13, 6, 7, 14, 15);
}

// Where the outputs of each chunk of tile rows [r0, r1) go (see input_transform):
// the offset of its first output in y's channel 0, its rows (up to 4) and the
// outputs of its 8 columns inside the image (8; fewer, or none, past OW).
struct OutChunk {
  int64_t offset;
  int rows, n;
};
std::vector<OutChunk> out_chunks(const Geom& g, int64_t r0, int64_t r1) {
  std::vector<OutChunk> out((r1 - r0) * g.TW / g.chunk());
  for (size_t ch = 0; ch < out.size(); ++ch) {
    const int64_t q = int64_t(ch) * g.chunk(), r = r0 + q / g.TW, tx = q % g.TW, n = r / g.TH, ty = r % g.TH;
    out[ch] = {(n * g.K * g.OH + 4 * ty) * g.OW + g.tw * tx, int(std::min<int64_t>(4, g.OH - 4 * ty)),
               int(std::clamp<int64_t>(g.OW - g.tw * tx, 0, 8))};
  }
  return out;
}

// Output row a of a chunk, the 8 floats o, to y (yk: the channel's plane), and
// a prefetch for writing the same place `next` floats on (the next channel's
// plane, or none): as in input_transform, each plane starts cold.
inline void store_chunk_row(float* yk, const OutChunk& c, int a, v8 o, int64_t OW, int64_t next) {
  if (a >= c.rows || c.n == 0) return;
  float* row = yk + c.offset + a * OW;
  if (c.n == 8) {
    store8(row, o);
  } else {
    float buf[8];
    store8(buf, o);
    std::copy_n(buf, c.n, row);
  }
  if (next) prefetch_floats<true>(row + next, c.n);
}

// With the epilogue's pool (F(4x2) tiles, each 2 windows high, one wide):
// where the pooled outputs of each 4-tile chunk go in channel 0 of the
// (N, K, OH / 2, OW / 2) output, its pooled rows (up to 2) and columns (up to 4).
std::vector<OutChunk> pool_chunks(const Geom& g, int64_t r0, int64_t r1) {
  const int64_t PH = g.OH / 2, PW = g.OW / 2;
  std::vector<OutChunk> out((r1 - r0) * g.TW / g.chunk());
  for (size_t ch = 0; ch < out.size(); ++ch) {
    const int64_t q = int64_t(ch) * g.chunk(), r = r0 + q / g.TW, tx = q % g.TW, n = r / g.TH, ty = r % g.TH;
    out[ch] = {(n * g.K * PH + 2 * ty) * PW + tx, int(std::clamp<int64_t>(PH - 2 * ty, 0, 2)),
               int(std::clamp<int64_t>(PW - tx, 0, 4))};
  }
  return out;
}

// a * b + c as BatchNorm2d's kernels round it: in one FMA where the CPU has
// them (GCC contracts the expression there, and this file is built without
// contraction), else a product and a sum.
template <class V>
inline V mul_add(V a, V b, V c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) return (V)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#endif
#if defined(__FMA__)
  if constexpr (sizeof(V) == 32) return (V)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
  V r;
  for (size_t i = 0; i < sizeof(V) / sizeof(float); ++i) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
  return r;
#else
  return a * b + c;
#endif
}

// What the output transforms make of outputs v of channel k: v + bias, then
// with an epilogue its BatchNorm2d and ReLU in BatchNorm2d's float arithmetic
// (normalize_run's): ((v - hi) - lo) * scale + shift, then v > 0 ? v : 0
// (NaN gives 0).
template <class V>
struct ChannelOut {
  bool affine;
  V bias, hi{}, lo{}, scale{}, shift{};
  ChannelOut(const float* b, const ConvEpilogue* e, int64_t k) : affine(e), bias(V{} + (b ? b[k] : 0.0f)) {
    if (e) hi = V{} + e->hi[k], lo = V{} + e->lo[k], scale = V{} + e->scale[k], shift = V{} + e->shift[k];
  }
  V operator()(V v) const {
    v = v + bias;
    if (!affine) return v;
    v = mul_add((v - hi) - lo, scale, shift);
    return v > V{} ? v : V{};
  }
};

// The rows of A4^T M for 8 tiles: R[a][j] for each of the tile's Cols columns
// j, from the planes of M at m, ld apart.
template <int Cols, class V>
inline void columns_at(V R[4][Cols], const float* m, int64_t ld) {
  for (int j = 0; j < Cols; ++j) {
    V col[6], rc[4];
    for (int i = 0; i < 6; ++i) col[i] = load_vector<V>(m + (Cols * i + j) * ld);
    col_at(rc, col);
    for (int a = 0; a < 4; ++a) R[a][j] = rc[a];
  }
}

// output_transform for F(4x2) tiles where the tiles cover the output exactly
// (OW = 2 TW, OH a multiple of 4) and a tile row is whole groups of L tiles,
// without the pool: each group's four output rows are 2 L floats of y each,
// stored whole, with no per-chunk bookkeeping.
template <int L>
void output_transform_rows(float* y, const float* M, const float* bias, const Geom& g, int64_t r0, int64_t r1,
                           const ConvEpilogue* e) {
  using V = vec<L>;
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.K, P), plane = g.OH * g.OW;
  for (int64_t k = 0; k < g.K; ++k) {
    const ChannelOut<V> out(bias, e, k);
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.TH, ty = r % g.TH;
      float* yr = y + (n * g.K + k) * plane + 4 * ty * g.OW;
      const float* m = M + k * P + (r - r0) * g.TW;
      if (k + 1 < g.K) prefetch_floats<true>(yr + plane, 4 * g.OW);  // the next channel's rows
      for (int64_t tx0 = 0; tx0 < g.TW; tx0 += L) {
        V R[4][4];
        columns_at<4>(R, m + tx0, ld);
        for (int a = 0; a < 4; ++a) {  // columns: (A4^T M) A2, then back in order
          V o[2];
          interleave(o, out(R[a][0] + R[a][1] + R[a][2]), out(R[a][1] - R[a][2] - R[a][3]));
          float* row = yr + a * g.OW + 2 * tx0;
          store_vector(row, o[0]);
          store_vector(row + L, o[1]);
        }
      }
    }
  }
}

}  // namespace

// In 8-float vectors, 8
// tiles at a time in the order of M, the columns of each output row put back
// in order with shuffles, then written a chunk at a time. The last 8 tiles
// may read up to 7 floats past P: the slack after the plane (plane_stride).
// (Written as scalar loops over tiles, gcc vectorised F(4x4)'s with 4 lanes
// and spills, and it ran far slower than F(4x2)'s; the F(4x2) one ran unvectorised
// where a tile row had fewer than 8 tiles.)
void output_transform(float* y, const float* M, const float* bias, const Geom& g, int64_t r0, int64_t r1,
                      const ConvEpilogue* e) {
  const bool pool = e && e->pool;  // (F(4x2) tiles only: conv2d_winograd_forward)
  if (g.tw == 2 && !pool && g.OW == 2 * g.TW && g.OH % 4 == 0) {
    if (g.TW % 16 == 0) return output_transform_rows<16>(y, M, bias, g, r0, r1, e);
    if (g.TW % 8 == 0) return output_transform_rows<8>(y, M, bias, g, r0, r1, e);
  }
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.K, P);
  const int64_t plane = pool ? (g.OH / 2) * (g.OW / 2) : g.OH * g.OW;
  const std::vector<OutChunk> chunks = pool ? pool_chunks(g, r0, r1) : out_chunks(g, r0, r1);
  const int64_t n_chunks = int64_t(chunks.size());
  for (int64_t k = 0; k < g.K; ++k) {
    const ChannelOut<v8> out(bias, e, k);
    const float* __restrict m = M + k * P;
    float* yk = y + k * plane;
    const int64_t next = k + 1 < g.K ? plane : 0;
    for (int64_t q0 = 0; q0 < P; q0 += 8) {
      const OutChunk* c = chunks.data() + q0 / g.chunk();
      const int64_t nc = std::min<int64_t>(g.tw, n_chunks - q0 / g.chunk());  // chunks of these 8 tiles
      if (g.tw == 2) {
        v8 R[4][4];
        columns_at<4>(R, m + q0, ld);
        v8 even[4], odd[4];
        for (int a = 0; a < 4; ++a)  // columns: (A4^T M) A2
          even[a] = out(R[a][0] + R[a][1] + R[a][2]), odd[a] = out(R[a][1] - R[a][2] - R[a][3]);
        if (pool) {  // a tile's two windows, rows 0-1 and 2-3, in two pooled rows of 4-tile chunks
          for (int a = 0; a < 2; ++a) {
            const v8 p0 = even[2 * a] > odd[2 * a] ? even[2 * a] : odd[2 * a];
            const v8 p1 = even[2 * a + 1] > odd[2 * a + 1] ? even[2 * a + 1] : odd[2 * a + 1];
            float v[8];
            store8(v, p0 > p1 ? p0 : p1);  // the ReLU left no NaN, and a tie is one value
            for (int64_t h = 0; h < nc; ++h)
              if (a < c[h].rows) std::copy_n(v + 4 * h, c[h].n, yk + c[h].offset + a * (g.OW / 2));
          }
          continue;
        }
        for (int a = 0; a < 4; ++a) {
          v8 o[2];
          interleave(o, even[a], odd[a]);
          for (int64_t h = 0; h < nc; ++h) store_chunk_row(yk, c[h], a, o[h], g.OW, next);
        }
      } else {
        v8 R[4][6];
        columns_at<6>(R, m + q0, ld);
        for (int a = 0; a < 4; ++a) {  // columns: (A4^T M) A4
          v8 q[4], o[4];
          col_at(q, R[a]);
          for (int j = 0; j < 4; ++j) q[j] = out(q[j]);
          interleave8x4(o, q);
          for (int64_t h = 0; h < nc; ++h) store_chunk_row(yk, c[h], a, o[h], g.OW, next);
        }
      }
    }
  }
}

// s holds the four dy rows of a tile row, transposed to (4, 2 TW, K) (a quarter of what
// transposing dM would move), so the transform runs over k with unit stride.
void output_transform_backward(float* dM, const float* dy, const Geom& g, int64_t r0, int64_t r1, float* s) {
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.K, P), Wd = 2 * g.TW, K = g.K;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.TH, ty = r % g.TH;
    for (int a = 0; a < 4; ++a) {
      const int64_t oh = 4 * ty + a;
      float* __restrict d = s + a * Wd * K;
      if (oh >= g.OH) {  // below the last output row
        std::fill_n(d, Wd * K, 0.0f);
        continue;
      }
      const float* __restrict rows = dy + (n * K * g.OH + oh) * g.OW;
      const int64_t plane = g.OH * g.OW;
      int64_t k0 = 0;
      // In 8 x 8 blocks through registers (transpose8); the compiler's code
      // for 4 x 4 blocks written as scalar loops, which this replaced, ran
      // largely on scalar loads and stores.
      for (; k0 + 8 <= K; k0 += 8) {
        const float* __restrict row = rows + k0 * plane;
        int64_t w0 = 0;
        for (; w0 + 8 <= g.OW; w0 += 8) {
          v8 b[8];
          for (int i = 0; i < 8; ++i) b[i] = load8(row + i * plane + w0);
          transpose8(b);
          for (int j = 0; j < 8; ++j) store8(d + (w0 + j) * K + k0, b[j]);
        }
        for (int i = 0; i < 8; ++i)
          for (int64_t ow = w0; ow < g.OW; ++ow) d[ow * K + k0 + i] = row[i * plane + ow];
      }
      for (int64_t k = k0; k < K; ++k)
        for (int64_t ow = 0; ow < g.OW; ++ow) d[ow * K + k] = rows[k * plane + ow];
      // Each of the K planes is its own stream, too many for the hardware
      // prefetchers: ask for the row four below (the next tile row's) by hand.
      if (oh + 4 < g.OH)
        for (int64_t k = 0; k < K; ++k) prefetch_floats(rows + k * plane + 4 * g.OW, g.OW);
      std::fill_n(d + g.OW * K, (Wd - g.OW) * K, 0.0f);  // columns of tiles outside the output
    }
    for (int64_t tx = 0; tx < g.TW; ++tx) {
      const float* __restrict e = s + 2 * tx * K;  // row 4ty + a, column 2tx at e + a Wd K, 2tx + 1 at + K
      float* __restrict m = dM + ((r - r0) * g.TW + tx) * K;
      simd_for(K, [&](int64_t k) __attribute__((always_inline)) {
        float ye[4], yo[4], qe[6], qo[6];  // rows: A4 dY, for the even and the odd column
        for (int a = 0; a < 4; ++a) ye[a] = e[a * Wd * K + k], yo[a] = e[a * Wd * K + K + k];
        col_a(qe, ye);
        col_a(qo, yo);
        for (int i = 0; i < 6; ++i) {  // columns: (A4 dY) A2^T = (e, e + o, e - o, -o)
          m[(4 * i) * ld + k] = qe[i];
          m[(4 * i + 1) * ld + k] = qe[i] + qo[i];
          m[(4 * i + 2) * ld + k] = qe[i] - qo[i];
          m[(4 * i + 3) * ld + k] = -qo[i];
        }
      });
    }
  }
}

}  // namespace norma::nn::fast::NORMA_ISA::winograd
