// The reference convolution kernels: the definition each fast kernel
// (layers/fast/conv2d.h) must equal, and what runs with the fast kernels off
// (KernelPolicy::fast false, NORMA_KERNELS=reference, or a build without them).
// im2col, then one sgemm per image n and group g:
//   col (Cg kh kw, OH OW) = im2col(x[n, g])    y[n, g] = W_g (Kg, Cg kh kw) @ col  (+ b)
// and backward, with col2im the adjoint of im2col:
//   dW_g += dy[n, g] @ col^T    dcol = W_g^T @ dy[n, g]    dx[n, g] = col2im(dcol)
//   db[k] = the sum of dy[:, k]
// Letters as in layers/conv2d.h. Raw contiguous NCHW pointers.
#pragma once
#include "../conv2d.h"

namespace norma::nn::ref {

// b may be null.
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
// dx, dw and db may each be null when not needed; each is overwritten.
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s);
// db alone, summed in double (the fast paths take it from here too).
void conv2d_backward_bias(float* db, const float* dy, const ConvShape& s);

}  // namespace norma::nn::ref
