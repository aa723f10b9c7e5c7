// Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015) for 3x3 kernels with stride 1,
// dilation 1 and one group: the shape of every cifar-small conv but the first.
//
// A 4x4 input tile d and a 3x3 filter g give a 2x2 output tile
//   Y = A^T [ (G g G^T) .* (B^T d B) ] A
// with
//   B^T = [1  0 -1  0]    G = [1    0    0  ]    A^T = [1  1  1  0]
//         [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
//         [0 -1  1  0]        [1/2 -1/2  1/2]
//         [0  1  0 -1]        [0    0    1  ]
// 16 multiplies per tile where direct convolution takes 36. Summed over input
// channels, each of the 16 positions xi of the 4x4 tile is one matrix product:
//   M[xi] (K, P) = U[xi] (K, C) @ V[xi] (C, P)
// with U = G g G^T per filter, V = B^T d B per tile (P tiles) and Y = A^T M A.
//
// Backward, from the same identity:
//   dx: a stride-1 convolution of dy with each filter flipped and its channels
//       swapped, padding 2 - p: the forward above with other weights.
//   dw: dM = A dY A^T per tile, dU[xi] = sum over tiles dM[xi] @ V[xi]^T,
//       dg = G^T dU G. dM is stored tile-major, (P, K) per xi, and dU
//       transposed, (C, K): dU[xi]^T = V[xi] (C, P) @ dM[xi] (P, K) is then a
//       plain product, which OpenBLAS ran 1.3-2x faster than the one with a
//       transposed operand (it packs a transposed operand slowly).
//
// Letters: N batch, C input channels, K output channels, H/W input size, OH/OW
// output size, TH/TW tiles per column/row (2x2 outputs each), P tiles in a block.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "../core/blas_threads.h"
#include "../core/iter.h"
#include "conv2d.h"

namespace norma::nn {

namespace {

struct Geom {  // the tiling of one stride-1 3x3 convolution
  int64_t N, C, K, H, W, ph, pw, OH, OW, TH, TW;
};

Geom geom(int64_t N, int64_t C, int64_t K, int64_t H, int64_t W, int64_t ph, int64_t pw) {
  const int64_t OH = H + 2 * ph - 2, OW = W + 2 * pw - 2;
  return {N, C, K, H, W, ph, pw, OH, OW, (OH + 1) / 2, (OW + 1) / 2};
}

// Work is split into blocks of whole tile rows (n, ty) whose V (16 C P floats)
// and M (16 K P floats) together fit in this many bytes, the L2 of one core on
// the machines this was tuned on (1 MiB per core on Zen 4/5 and Skylake-X), so
// each xi's sgemm reads and writes L2, not L3. P is also rounded down to a
// multiple of 64: OpenBLAS's kernels ran 13-30% slower on 40, 84 or 168 columns.
// Measured on one thread (64 -> 64 channels at 16x16): 105 GF/s with 256 tiles
// (2 MiB), 167 GF/s with 128 (1 MiB); 32 -> 32 at 32x32, whose dw products
// want long sums, ran dw at 130 GF/s with 256 tiles and 110 with 128.
constexpr int64_t kBlockBytes = int64_t(1) << 20;

// U (16, Ko, Ci) = G g G^T for every filter g of w (K, C, 3, 3). With flip, the
// filters of dx's convolution: g[c][k] = w[k][c] rotated 180 degrees (Ko = C, Ci = K).
void filter_transform(float* U, const float* w, int64_t K, int64_t C, bool flip) {
  const int64_t Ko = flip ? C : K, Ci = flip ? K : C;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      const float* g = w + (k * C + c) * 9;
      float f[3][3], t[4][3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) f[a][b] = flip ? g[(2 - a) * 3 + (2 - b)] : g[a * 3 + b];
      for (int b = 0; b < 3; ++b) {  // t = G f
        t[0][b] = f[0][b];
        t[1][b] = 0.5f * (f[0][b] + f[1][b] + f[2][b]);
        t[2][b] = 0.5f * (f[0][b] - f[1][b] + f[2][b]);
        t[3][b] = f[2][b];
      }
      const int64_t o = flip ? c : k, i = flip ? k : c;
      for (int a = 0; a < 4; ++a) {  // U = t G^T
        const float u[4] = {t[a][0], 0.5f * (t[a][0] + t[a][1] + t[a][2]), 0.5f * (t[a][0] - t[a][1] + t[a][2]),
                            t[a][2]};
        for (int b = 0; b < 4; ++b) U[((a * 4 + b) * Ko + o) * Ci + i] = u[b];
      }
    }
}

// dw (K, C, 3, 3) = G^T dU G from dU (16, C, K): the adjoint of filter_transform.
void filter_transform_backward(float* dw, const float* dU, int64_t K, int64_t C) {
  for (int64_t k = 0; k < K; ++k)
    for (int64_t c = 0; c < C; ++c) {
      float u[4][4], t[3][4];
      for (int xi = 0; xi < 16; ++xi) u[xi / 4][xi % 4] = dU[(xi * C + c) * K + k];
      for (int b = 0; b < 4; ++b) {  // t = G^T u
        t[0][b] = u[0][b] + 0.5f * (u[1][b] + u[2][b]);
        t[1][b] = 0.5f * (u[1][b] - u[2][b]);
        t[2][b] = 0.5f * (u[1][b] + u[2][b]) + u[3][b];
      }
      float* g = dw + (k * C + c) * 9;
      for (int a = 0; a < 3; ++a) {  // dg = t G
        g[a * 3 + 0] = t[a][0] + 0.5f * (t[a][1] + t[a][2]);
        g[a * 3 + 1] = 0.5f * (t[a][1] - t[a][2]);
        g[a * 3 + 2] = 0.5f * (t[a][1] + t[a][2]) + t[a][3];
      }
    }
}

// The 16 planes of V (16, C, P) or M (16, K, P) lie this far apart: one cache
// line more than the plane, so the transforms' 16 streams do not all map to the
// same L1 set (with the plane a multiple of 4 KiB they evict each other).
int64_t plane_stride(int64_t channels, int64_t P) { return channels * P + 16; }

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

// Scratch floats for input_transform: a zero-padded copy of the input rows
// one block reads, 2 TW + 2 columns wide (every tile's four columns inside it).
int64_t padded_width(const Geom& g) { return 2 * g.TW + 2; }
int64_t padded_floats(const Geom& g, int64_t tile_rows) { return (2 * tile_rows + 2) * padded_width(g); }

// V (16, C, P) = B^T d B for every tile of tile rows [r0, r1) of x (N, C, H, W).
// pad: the thread's padded rows from its Workspace, zeroed when that was made
// (only the columns of the input are written here, so the side padding stays zero).
// Each plane's rows are copied in once, padding included; the transform then
// reads tile columns 2tx..2tx+3 without bounds tests, and vectorises over tx.
void input_transform(float* V, const float* x, const Geom& g, int64_t r0, int64_t r1, float* pad) {
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.C, P), Wp = padded_width(g);
  for (int64_t c = 0; c < g.C; ++c)
    for_each_image_segment(g, r0, r1, [&](int64_t n, int64_t ty0, int64_t ty1, int64_t r) {
      const float* plane = x + (n * g.C + c) * g.H * g.W;
      for (int64_t l = 0; l < 2 * (ty1 - ty0) + 2; ++l) {
        const int64_t ih = 2 * ty0 - g.ph + l;
        float* dst = pad + l * Wp + g.pw;
        if (ih >= 0 && ih < g.H)
          std::copy_n(plane + ih * g.W, g.W, dst);
        else
          std::fill_n(dst, g.W, 0.0f);
      }
      // The copy above waits on memory: hardware prefetchers stop at 4 KiB
      // pages, a 32x32 plane's size, so each plane starts cold. Ask for the
      // next channel's rows while this one's tiles are computed, a share of
      // them each tile row: issued all at once, the prefetches waited on each
      // other. Measured on one thread, x of 128x32x32x32 out of cache: 3.7 ms
      // without, 3.4-3.5 all at once, 2.7-3.0 spread.
      const int64_t lo = std::max<int64_t>(0, 2 * ty0 - g.ph) * g.W;
      const int64_t hi = c + 1 < g.C ? std::min(g.H, 2 * ty1 - g.ph + 2) * g.W : lo;
      const int64_t share = ((hi - lo + ty1 - ty0 - 1) / (ty1 - ty0) + 15) / 16 * 16;
      const float* next = plane + g.H * g.W;
      for (int64_t ty = ty0; ty < ty1; ++ty) {
        const int64_t p0 = lo + (ty - ty0) * share;
        detail::prefetch_floats(next + p0, std::min(hi, p0 + share) - p0);
        const float* __restrict d0 = pad + 2 * (ty - ty0) * Wp;
        const float *__restrict d1 = d0 + Wp, *__restrict d2 = d1 + Wp, *__restrict d3 = d2 + Wp;
        float* __restrict v = V + c * P + (r - r0 + ty - ty0) * g.TW;
        detail::simd_for(g.TW, [&](int64_t tx) __attribute__((always_inline)) {
          float t[4][4];  // rows: B^T d, for each of the tile's four columns j
          for (int j = 0; j < 4; ++j) {
            const int64_t q = 2 * tx + j;
            t[0][j] = d0[q] - d2[q], t[1][j] = d1[q] + d2[q], t[2][j] = d2[q] - d1[q], t[3][j] = d1[q] - d3[q];
          }
          for (int i = 0; i < 4; ++i) {  // columns: (B^T d) B
            v[(4 * i) * ld + tx] = t[i][0] - t[i][2];
            v[(4 * i + 1) * ld + tx] = t[i][1] + t[i][2];
            v[(4 * i + 2) * ld + tx] = t[i][2] - t[i][1];
            v[(4 * i + 3) * ld + tx] = t[i][1] - t[i][3];
          }
        });
      }
    });
}

// y (N, K, OH, OW) = A^T M A (+ bias) for tile rows [r0, r1), from M (16, K, P).
// s is scratch for 4 TW floats.
void output_transform(float* y, const float* M, const float* bias, const Geom& g, int64_t r0, int64_t r1,
                      float* s) {
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.K, P), half = g.OW / 2;
  float *__restrict y00 = s, *__restrict y01 = s + g.TW, *__restrict y10 = s + 2 * g.TW,
        *__restrict y11 = s + 3 * g.TW;
  for (int64_t k = 0; k < g.K; ++k)
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / g.TH, ty = r % g.TH;
      const float* __restrict m = M + k * P + (r - r0) * g.TW;
      detail::simd_for(g.TW, [&](int64_t tx) __attribute__((always_inline)) {
        float S[4], R[4];  // rows: A^T M
        for (int j = 0; j < 4; ++j) {
          const float m0 = m[j * ld + tx], m1 = m[(4 + j) * ld + tx], m2 = m[(8 + j) * ld + tx],
                      m3 = m[(12 + j) * ld + tx];
          S[j] = m0 + m1 + m2, R[j] = m1 - m2 - m3;
        }
        y00[tx] = S[0] + S[1] + S[2], y01[tx] = S[1] - S[2] - S[3];  // columns: (A^T M) A
        y10[tx] = R[0] + R[1] + R[2], y11[tx] = R[1] - R[2] - R[3];
      });
      const float b = bias ? bias[k] : 0.0f;
      for (int a = 0; a < 2 && 2 * ty + a < g.OH; ++a) {
        float* __restrict out = y + ((n * g.K + k) * g.OH + 2 * ty + a) * g.OW;
        const float *__restrict even = a ? y10 : y00, *__restrict odd = a ? y11 : y01;
        detail::simd_for(half, [&](int64_t tx) __attribute__((always_inline)) {
          out[2 * tx] = even[tx] + b, out[2 * tx + 1] = odd[tx] + b;
        });
        if (g.OW & 1) out[g.OW - 1] = even[half] + b;  // the last tile's right column is outside
        // As in input_transform: the next channel's plane starts cold; fetch
        // its row for writing while this channel's tiles are computed.
        if (k + 1 < g.K) detail::prefetch_floats<true>(out + g.OH * g.OW, g.OW);
      }
    }
}

// dM (16, P, K) = A dY A^T for tile rows [r0, r1) of dy (N, K, OH, OW), the
// adjoint of output_transform, tile-major. s is scratch for 4 TW K floats: the
// two dy rows of a tile row, transposed to (2, 2 TW, K) (a quarter of what
// transposing dM would move), so the transform runs over k with unit stride.
void output_transform_backward(float* dM, const float* dy, const Geom& g, int64_t r0, int64_t r1, float* s) {
  const int64_t P = (r1 - r0) * g.TW, ld = plane_stride(g.K, P), Wd = 2 * g.TW, K = g.K;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.TH, ty = r % g.TH;
    for (int a = 0; a < 2; ++a) {
      const int64_t oh = 2 * ty + a;
      float* __restrict d = s + a * Wd * K;
      if (oh >= g.OH) {  // below the last output row
        std::fill_n(d, Wd * K, 0.0f);
        continue;
      }
      const float* __restrict rows = dy + (n * K * g.OH + oh) * g.OW;
      const int64_t plane = g.OH * g.OW;
      int64_t k0 = 0;
      // In 4 x 4 blocks through registers: on one thread 20-25% faster than
      // element by element (3.5 -> 2.8 ms on 128x32x32x32), 8 x 8 in between.
      for (; k0 + 4 <= K; k0 += 4) {
        const float* __restrict row = rows + k0 * plane;
        int64_t w0 = 0;
        for (; w0 + 4 <= g.OW; w0 += 4) {
          float b[4][4];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) b[j][i] = row[i * plane + w0 + j];
          for (int j = 0; j < 4; ++j)
            for (int i = 0; i < 4; ++i) d[(w0 + j) * K + k0 + i] = b[j][i];
        }
        for (int i = 0; i < 4; ++i)
          for (int64_t ow = w0; ow < g.OW; ++ow) d[ow * K + k0 + i] = row[i * plane + ow];
      }
      for (int64_t k = k0; k < K; ++k)
        for (int64_t ow = 0; ow < g.OW; ++ow) d[ow * K + k] = rows[k * plane + ow];
      // Each of the K planes is its own stream, too many for the hardware
      // prefetchers: ask for the row two below (the next tile row's) by hand.
      if (oh + 2 < g.OH)
        for (int64_t k = 0; k < K; ++k) detail::prefetch_floats(rows + k * plane + 2 * g.OW, g.OW);
      if (g.OW & 1) std::fill_n(d + g.OW * K, K, 0.0f);  // the last tile's right column is outside
    }
    for (int64_t tx = 0; tx < g.TW; ++tx) {
      const float *__restrict e0 = s + 2 * tx * K, *__restrict o0 = e0 + K;  // row 2ty, columns 2tx and 2tx+1
      const float *__restrict e1 = e0 + Wd * K, *__restrict o1 = e1 + K;     // row 2ty + 1
      float* __restrict m = dM + ((r - r0) * g.TW + tx) * K;
      detail::simd_for(K, [&](int64_t k) __attribute__((always_inline)) {
        // rows: A dY = (y0, y0 + y1, y0 - y1, -y1); columns likewise
        const float qe[4] = {e0[k], e0[k] + e1[k], e0[k] - e1[k], -e1[k]};
        const float qo[4] = {o0[k], o0[k] + o1[k], o0[k] - o1[k], -o1[k]};
        for (int i = 0; i < 4; ++i) {
          m[(4 * i) * ld + k] = qe[i];
          m[(4 * i + 1) * ld + k] = qe[i] + qo[i];
          m[(4 * i + 2) * ld + k] = qe[i] - qo[i];
          m[(4 * i + 3) * ld + k] = -qo[i];
        }
      });
    }
  }
}

int64_t block_tiles(const Geom& g) {
  const int64_t fit = kBlockBytes / (16 * (g.C + g.K) * int64_t(sizeof(float)));
  return std::max<int64_t>(64, fit / 64 * 64);
}

// The blocks of tile rows: block i is rows [i * rows_per_block, ...).
struct Blocks {
  int64_t rows, per_block, count, max_tiles;
  explicit Blocks(const Geom& g)
      : rows(g.N * g.TH),
        per_block(std::max<int64_t>(1, block_tiles(g) / g.TW)),
        count((rows + per_block - 1) / per_block),
        max_tiles(std::min(rows, per_block) * g.TW) {}
  int64_t begin(int64_t i) const { return i * per_block; }
  int64_t end(int64_t i) const { return std::min(rows, (i + 1) * per_block); }
};

// Threads over blocks, each with its own buffers and a single-threaded sgemm.
int threads_for(const Blocks& b) { return int(std::min<int64_t>(omp_get_max_threads(), b.count)); }

// Each thread's buffers: V (16 planes of C x P), M (16 of K x P) or dM (16 of P x K),
// the padded input rows (zeroed here, once) and 4 TW K floats of scratch. From
// the caching allocator, which hands the same memory back next call.
struct Workspace {
  int64_t Vn, Mn, padn, per_thread;
  Tensor buf;
  Workspace(const Geom& g, const Blocks& b, int T)
      : Vn(16 * plane_stride(g.C, b.max_tiles)),
        Mn(16 * plane_stride(g.K, b.max_tiles)),
        padn(padded_floats(g, std::min(b.rows, b.per_block))),
        per_thread(Vn + Mn + padn + 4 * g.TW * g.K),
        buf(empty({T * per_thread})) {
    for (int t = 0; t < T; ++t) std::fill_n(pad(t), padn, 0.0f);
  }
  float* V(int t) const { return buf.data_ptr() + t * per_thread; }
  float* M(int t) const { return V(t) + Vn; }
  float* pad(int t) const { return M(t) + Mn; }
  float* scratch(int t) const { return pad(t) + padn; }
};

// y = the convolution of x with the transformed filters U (16, K, C), + bias.
void winograd_conv(float* y, const float* x, const float* U, const float* bias, const Geom& g) {
  const Blocks blocks(g);
  const int T = threads_for(blocks);
  const Workspace ws(g, blocks, T);
  std::optional<BlasThreads> one_thread;
  if (T > 1) one_thread.emplace(1);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t i = 0; i < blocks.count; ++i) {
    const int t = omp_get_thread_num();
    float *V = ws.V(t), *M = ws.M(t), *s = ws.scratch(t);
    const int64_t r0 = blocks.begin(i), r1 = blocks.end(i), P = (r1 - r0) * g.TW;
    const int64_t ldV = plane_stride(g.C, P), ldM = plane_stride(g.K, P);
    input_transform(V, x, g, r0, r1, ws.pad(t));
    for (int xi = 0; xi < 16; ++xi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(g.K), int(P), int(g.C), 1.0f, U + xi * g.K * g.C,
                  int(g.C), V + xi * ldV, int(P), 0.0f, M + xi * ldM, int(P));
    output_transform(y, M, bias, g, r0, r1, s);
  }
}

}  // namespace

bool conv2d_winograd_applies(const ConvShape& s) {
  // NORMA_WINOGRAD=0 turns it off (to measure what it buys, or to rule it out).
  static const bool enabled = [] {
    const char* v = std::getenv("NORMA_WINOGRAD");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  // Few channels leave the 16 products too thin to beat im2col's one (the RGB input layer).
  return enabled && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.groups == 1 && s.N > 0 && s.ph <= 2 && s.pw <= 2 && s.C >= 16 && s.K >= 16;
}

void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
  const Geom g = geom(s.N, s.C, s.K, s.H, s.W, s.ph, s.pw);
  Tensor U = empty({16 * s.K * s.C});
  filter_transform(U.data_ptr(), w, s.K, s.C, false);
  winograd_conv(y, x, U.data_ptr(), b, g);
}

void conv2d_winograd_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                              const ConvShape& s) {
  if (dx) {  // dx = dy convolved with the flipped, channel-swapped filters, padding 2 - p
    const Geom gx = geom(s.N, s.K, s.C, s.OH, s.OW, 2 - s.ph, 2 - s.pw);
    Tensor U = empty({16 * s.C * s.K});
    filter_transform(U.data_ptr(), w, s.K, s.C, true);
    winograd_conv(dx, dy, U.data_ptr(), nullptr, gx);
  }
  if (!dw) return;
  const Geom g = geom(s.N, s.C, s.K, s.H, s.W, s.ph, s.pw);
  const Blocks blocks(g);
  const int T = threads_for(blocks);
  const int64_t KC = 16 * g.K * g.C;
  const Workspace ws(g, blocks, T);
  // Each thread sums its blocks' dU into its own slice; the slices are added in
  // thread order afterwards, so the result is the same every run.
  Tensor dU = zeros({T * KC});
  std::optional<BlasThreads> one_thread;
  if (T > 1) one_thread.emplace(1);
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
  for (int64_t i = 0; i < blocks.count; ++i) {
    const int t = omp_get_thread_num();
    float *V = ws.V(t), *dM = ws.M(t), *s = ws.scratch(t), *dUt = dU.data_ptr() + t * KC;
    const int64_t r0 = blocks.begin(i), r1 = blocks.end(i), P = (r1 - r0) * g.TW;
    const int64_t ldV = plane_stride(g.C, P), ldM = plane_stride(g.K, P);
    input_transform(V, x, g, r0, r1, ws.pad(t));
    output_transform_backward(dM, dy, g, r0, r1, s);
    for (int xi = 0; xi < 16; ++xi)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(g.C), int(g.K), int(P), 1.0f, V + xi * ldV,
                  int(P), dM + xi * ldM, int(g.K), 1.0f, dUt + xi * g.C * g.K, int(g.K));
  }
  float* sum = dU.data_ptr();
  for (int t = 1; t < T; ++t)
    for (int64_t j = 0; j < KC; ++j) sum[j] += sum[t * KC + j];
  filter_transform_backward(dw, sum, g.K, g.C);
}

}  // namespace norma::nn
