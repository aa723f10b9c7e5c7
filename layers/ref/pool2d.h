// The reference pooling kernels (max, average, adaptive average; the rules in
// layers/pooling.h): the definition the fast 2x2 max pool
// (layers/fast/maxpool2x2.h) must equal, and what runs for every other pool.
// Raw contiguous NCHW pointers; backwards overwrite dx.
#pragma once
#include "../pooling.h"

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
