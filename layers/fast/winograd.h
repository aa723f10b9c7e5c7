// The Winograd kernels' shared parts (layers/fast/winograd*.cpp): the tiling
// of one convolution, the one-dimensional transforms, and the transforms the
// driver (winograd.cpp) calls. Internal to those files.
//
// Winograd convolution (Lavin & Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2015) for 3x3 kernels with stride 1, dilation 1 and one
// group: the shape of every cifar-small conv but the first. Tiles are F(4x2, 3x3):
// F(4, 3) down the columns and F(2, 3) along the rows, nested; or, opt-in,
// F(4x4, 3x3): F(4, 3) both ways.
//
// A 6x4 input tile d and a 3x3 filter g give a 4x2 output tile
//   Y = A4^T [ (G4 g G2^T) .* (B4^T d B2) ] A2
// with F(2, 3)'s matrices along the rows
//   B2^T = [1  0 -1  0]   G2 = [1    0    0  ]   A2^T = [1  1  1  0]
//          [0  1  1  0]        [1/2  1/2  1/2]          [0  1 -1 -1]
//          [0 -1  1  0]        [1/2 -1/2  1/2]
//          [0  1  0 -1]        [0    0    1  ]
// and F(4, 3)'s down the columns, on the points 0, -1, 1, -1/2, 2 (and infinity):
//   B4^T = [2  3 -4 -3  2  0]   G4 = [ 1/2     0     0  ]   A4^T = [1  1  1   1    1  0]
//          [0  2  1 -5  2  0]        [ 1/6  -1/6   1/6  ]          [0 -1  1 -1/2   2  0]
//          [0 -2 -5 -1  2  0]        [-1/6  -1/6  -1/6  ]          [0  1  1  1/4   4  0]
//          [0  2 -1 -2  1  0]        [-16/15 8/15 -4/15 ]          [0 -1  1 -1/8   8  1]
//          [0 -1 -2  1  2  0]        [ 1/30  1/15  2/15 ]
//          [0  2  3 -4 -3  2]        [ 0      0     1/2 ]
// (rows of B4^T doubled and of G4 halved, which is exact, so B4^T is integers).
// 24 multiplies per tile of 8 outputs where direct convolution takes 72, and
// F(2x2, 3x3) 32. Float32 error, scripts/winograd_error.py against float64
// direct convolution: about 3x F(2x2, 3x3)'s, a third of the golden tests'
// tolerance at 128 channels. Lavin & Gray's points (0, +-1, +-2) gave 1.4-2x
// more.
//
// F(4x4, 3x3), Y = A4^T [ (G4 g G4^T) .* (B4^T d B4) ] A4 on 6x6 input tiles:
// 36 multiplies per 16 outputs, a quarter fewer again, but 2-3x F(4x2)'s
// error. So it is opt-in (NORMA_WINOGRAD_F44, winograd_row_tile), and
// only for the forward and dx convolutions: dw, whose sums run over every tile
// of the batch, keeps F(4x2).
//
// Summed over input channels, each of the 24 positions xi of the 6x4 tile (36
// of the 6x6) is one matrix product:
//   M[xi] (K, P) = U[xi] (K, C) @ V[xi] (C, P)
// with U = G4 g G2^T per filter, V = B4^T d B2 per tile (P tiles) and Y = A4^T M A2.
//
// Backward, from the same identity:
//   dx: a stride-1 convolution of dy with each filter flipped and its channels
//       swapped, padding 2 - p: the forward above with other weights.
//   dw: dM = A4 dY A2^T per tile, dU[xi] = sum over tiles dM[xi] @ V[xi]^T,
//       dg = G4^T dU G2. dM is stored tile-major, (P, K) per xi, and dU
//       transposed, (C, K): dU[xi]^T = V[xi] (C, P) @ dM[xi] (P, K) is then a
//       plain product, which OpenBLAS runs faster than the one with a
//       transposed operand (it packs a transposed operand slowly).
//
// Letters: N batch, C input channels, K output channels, H/W input size, OH/OW
// output size, TH/TW tiles per column/row (4 x tw outputs each, tw 2 or 4), P tiles
// in a block, xi = (tw + 2) i + j the tile position in row i (of 6) and column j.
#pragma once
#pragma GCC diagnostic ignored "-Wpsabi"  // see v8 below

#include <cstdint>

#include "../ref/conv2d.h"
#include "simd.h"

namespace norma::nn::fast::NORMA_ISA::winograd {

// 8 floats as a GCC vector (one AVX register, two SSE ones), for the loops
// whose code the vectoriser left mostly scalar: the input transform's, and the
// transposition of dy in output_transform_backward. Helpers internal and
// inlined, so no call crosses the ABI -Wpsabi warns of (silenced at the top
// of each file, above simd.h, whose load_vector is where it would warn).
typedef float v8 __attribute__((vector_size(32)));
typedef float v16 __attribute__((vector_size(64)));  // (the transforms' rows paths)
inline v8 load8(const float* p) { return load_vector<v8>(p); }
inline void store8(float* p, v8 v) { store_vector(p, v); }

// Vectors of L floats: GCC vectors, one AVX-512 register at 16 where the CPU
// has them (two AVX ones where not).
template <int L>
struct VecOf;
template <>
struct VecOf<8> {
  using type = v8;
};
template <>
struct VecOf<16> {
  using type = v16;
};
template <int L>
using vec = typename VecOf<L>::type;  // (an alias template drops vector_size)

struct Geom {  // the tiling of one stride-1 3x3 convolution
  int64_t N, C, K, H, W, ph, pw, OH, OW, TH, TW;
  int tw;                                  // outputs per tile along a row: 2 (F(4x2)) or 4 (F(4x4))
  int xi() const { return 6 * (tw + 2); }  // positions of a tile: 6 rows x (tw + 2) columns
  int chunk() const { return 8 / tw; }     // tiles whose columns start in 8 floats of a row
};

// TW is rounded up to whole chunks: 8 floats of a row, 8 / tw tiles (see
// input_transform), which the extra tiles, outside the output, fill.
inline Geom geom(int64_t N, int64_t C, int64_t K, int64_t H, int64_t W, int64_t ph, int64_t pw, int tw) {
  const int64_t OH = H + 2 * ph - 2, OW = W + 2 * pw - 2, chunk = 8 / tw;
  return {N, C, K, H, W, ph, pw, OH, OW, (OH + 3) / 4, ((OW + tw - 1) / tw + chunk - 1) / chunk * chunk, tw};
}

// The planes of V (xi, C, P) or M (xi, K, P) lie this far apart: one cache
// line more than the plane, so the transforms' 24 or 36 streams do not all map to the
// same L1 set (with the plane a multiple of 4 KiB they evict each other).
inline int64_t plane_stride(int64_t channels, int64_t P) { return channels * P + 16; }

// Scratch floats for input_transform's general path: six rows of the column
// transform's output t for each tile row of a block, and 32 floats that the
// row pass reads into, running past t's last row. Rows tw TW + 2 columns wide
// (every tile's tw + 2 columns inside them), rounded up to whole vectors of 8.
inline int64_t t_width(const Geom& g) { return (g.tw * g.TW + 2 + 7) / 8 * 8; }
inline int64_t t_floats(const Geom& g, int64_t tile_rows) { return 6 * tile_rows * t_width(g) + 32; }

// The one-dimensional transforms, each written out once. Along a column (F(4, 3)):
// t = B4^T d (6 -> 6), y = A4^T m (6 -> 4) and its adjoint q = A4 y (4 -> 6).
// Templated so the same lines serve floats and the transforms' vector lanes.
template <class T>
inline void col_bt(T t[6], const T d[6]) {
  t[0] = 2 * (d[0] + d[4]) + 3 * (d[1] - d[3]) - 4 * d[2];
  t[1] = 2 * (d[1] + d[4]) + d[2] - 5 * d[3];
  t[2] = 2 * (d[4] - d[1]) - 5 * d[2] - d[3];
  t[3] = 2 * (d[1] - d[3]) - d[2] + d[4];
  t[4] = 2 * (d[4] - d[2]) + d[3] - d[1];
  t[5] = 2 * (d[1] + d[5]) + 3 * (d[2] - d[4]) - 4 * d[3];
}
template <class T>
inline void col_at(T y[4], const T m[6]) {
  const T s = m[1] + m[2], e = m[2] - m[1];
  y[0] = m[0] + s + m[3] + m[4];
  y[1] = e - 0.5f * m[3] + 2 * m[4];
  y[2] = s + 0.25f * m[3] + 4 * m[4];
  y[3] = e - 0.125f * m[3] + 8 * m[4] + m[5];
}
template <class T>
inline void col_a(T q[6], const T y[4]) {
  q[0] = y[0];
  q[1] = y[0] - y[1] + y[2] - y[3];
  q[2] = y[0] + y[1] + y[2] + y[3];
  q[3] = y[0] - 0.5f * y[1] + 0.25f * y[2] - 0.125f * y[3];
  q[4] = y[0] + 2 * y[1] + 4 * y[2] + 8 * y[3];
  q[5] = y[3];
}

// ---- the transforms (winograd_transforms.cpp: filters and inputs;
// winograd_output.cpp: outputs). [r0, r1) are the tile rows of a block: tile
// row r is row r % TH of image r / TH.

// U (xi, Ko, Ci) = G4 g G2^T (or G4 g G4^T) for every filter g of w (K, C, 3, 3).
// With flip, the filters of dx's convolution: g[c][k] = w[k][c] rotated 180
// degrees (Ko = C, Ci = K).
void filter_transform(float* U, const float* w, int64_t K, int64_t C, bool flip, int tw);
// dw (K, C, 3, 3) = G4^T dU G2 from T slices of dU (24, C, K), the threads'
// partial sums: the adjoint of filter_transform on F(4x2) tiles.
void filter_transform_backward(float* dw, const float* dU, int T, int64_t K, int64_t C);
// V (xi, C, P) = B4^T d B2 (or B4^T d B4) for every tile of the block; t is
// t_floats(g, tile rows) of scratch, zeroed once when it was allocated.
void input_transform(float* V, const float* x, const Geom& g, int64_t r0, int64_t r1, float* t);
// y (N, K, OH, OW) = A4^T M A2 (+ bias, then the epilogue e if not null) from
// M (xi, K, P) (A4^T M A4 on F(4x4) tiles).
void output_transform(float* y, const float* M, const float* bias, const Geom& g, int64_t r0, int64_t r1,
                      const ConvEpilogue* e);
// dM (24, P, K) = A4 dY A2^T, the adjoint of output_transform, tile-major;
// s is scratch for 8 TW K floats.
void output_transform_backward(float* dM, const float* dy, const Geom& g, int64_t r0, int64_t r1, float* s);

}  // namespace norma::nn::fast::NORMA_ISA::winograd
