// The fast convolution kernels, beside the reference ones they must equal
// (layers/ref/conv2d.h; tests/conv_kernels_test.cpp holds them equal). Only
// conv2d_forward / conv2d_backward (layers/conv2d.cpp) choose among them, from
// kernel_policy() and conv2d_winograd_applies / conv2d_direct_applies. Built
// only with NORMA_FAST_KERNELS (layers/fast/CMakeLists.txt).
//
// Letters as in layers/conv2d.h. Every kernel takes raw contiguous NCHW
// pointers; b may be null; outputs are overwritten.
#pragma once
#include "../ref/conv2d.h"
#include "isa.h"

namespace norma::nn::fast::NORMA_ISA {

// ---- im2col + sgemm (conv2d_im2col.cpp), the general path: the reference's
// algorithm with the batch split over OpenMP threads (each with its own col
// buffer and a single-threaded sgemm) and im2col's bounds tests hoisted out
// of its inner loops. Any shape. dx and dw may each be null; db is the
// caller's (ref::conv2d_backward_bias).
void conv2d_im2col_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
void conv2d_im2col_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                            const ConvShape& s);

// ---- Winograd F(4x2, 3x3) and F(4x4, 3x3) (winograd.h has the algebra;
// winograd.cpp, winograd_transforms.cpp, winograd_output.cpp), where
// conv2d_winograd_applies: 3x3, stride 1, dilation 1, one group, padding <= 2,
// at least 16 channels in and out. The forward and dx convolutions summing at
// most KernelPolicy::winograd_f44_channels channels take F(4x4) tiles
// (winograd_row_tile): 4x fewer multiplies than direct convolution, but
// 2-3x F(4x2)'s float32 error; dw stays on F(4x2). e: the inference epilogue,
// with the pool only on F(4x2) tiles.
// The outputs per tile along a row for a sum over so many channels: 4 (F(4x4))
// or 2 (F(4x2)).
int winograd_row_tile(int64_t summed_channels);
void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue* e = nullptr);
// dx and dw (either may be null); db is the caller's.
void conv2d_winograd_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                              const ConvShape& s);

// ---- direct convolution (conv2d_direct.cpp) for few input channels, where
// conv2d_direct_applies: stride 1, one group, C*kh*kw <= 64 (the RGB input
// layer), whose im2col product is too thin for sgemm. The forward and the
// weight gradient; dx stays on im2col. e: only where OW % 32 == 0, no pool.
void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                           const ConvEpilogue* e = nullptr);
void conv2d_direct_backward_weight(float* dw, const float* dy, const float* x, const ConvShape& s);

}  // namespace norma::nn::fast::NORMA_ISA
