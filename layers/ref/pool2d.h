// The reference pooling kernels (max, average, adaptive average; the rules in
// layers/pooling.h): the definition the fast 2x2 max pool
// (layers/fast/maxpool2x2.h) must equal, and what runs for every other pool.
// Raw contiguous NCHW pointers; backwards overwrite dx.
#pragma once
#include <cstdint>

namespace norma::nn {

// Every size a pooling kernel needs, validated once by pool2d_shape (layers/pooling.h).
struct PoolShape {
  int64_t N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW;
};

// The max of a 2x2 window's four values (row by row) as max_pool2d chooses it:
// a strictly larger value takes over, so ties keep the first, and a NaN wins.
// Returns its place (0-3). Selects, no branches: the loops that call it
// vectorise (max_pool2d's 2x2 kernel, and BatchNorm2d's fused pool).
inline int max_of_window(const float (&v)[4], float& best) {
  best = v[0];
  int a = 0;
  for (int j = 1; j < 4; ++j) {
    const bool take = v[j] > best || v[j] != v[j];
    best = take ? v[j] : best;
    a = take ? j : a;
  }
  return a;
}

}  // namespace norma::nn

namespace norma::nn::ref {

// Input elements (N*C*H*W) from which the planes are split across OpenMP threads.
constexpr int64_t kParallelGrain = 1 << 15;

// indices (N, C, OH, OW) receive the argmax as an offset h * W + w in its plane.
void maxpool2d_forward(float* y, int64_t* indices, const float* x, const PoolShape& s);
void maxpool2d_backward(float* dx, const float* dy, const int64_t* indices, const PoolShape& s);
void avgpool2d_forward(float* y, const float* x, const PoolShape& s, bool count_include_pad);
void avgpool2d_backward(float* dx, const float* dy, const PoolShape& s, bool count_include_pad);
// P = N * C planes of H x W -> OH x OW.
void adaptive_avgpool2d_forward(float* y, const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW);
void adaptive_avgpool2d_backward(float* dx, const float* dy, int64_t P, int64_t H, int64_t W, int64_t OH,
                                 int64_t OW);

}  // namespace norma::nn::ref
