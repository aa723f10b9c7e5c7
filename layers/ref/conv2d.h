// The reference convolution kernels: the definition each fast kernel
// (layers/fast/conv2d.h) must equal, and what runs with the fast kernels off
// (KernelPolicy::fast false, NORMA_KERNELS=reference, or a build without them).
// im2col, then one sgemm per image n and group g:
//   col (Cg kh kw, OH OW) = im2col(x[n, g])    y[n, g] = W_g (Kg, Cg kh kw) @ col  (+ b)
// and backward, with col2im the adjoint of im2col:
//   dW_g += dy[n, g] @ col^T    dcol = W_g^T @ dy[n, g]    dx[n, g] = col2im(dcol)
//   db[k] = the sum of dy[:, k]
// Raw contiguous NCHW pointers. The shapes and the epilogue are declared here,
// below the op and the module (layers/conv2d.h), so the kernels need nothing above them.
#pragma once
#include <cstdint>

namespace norma::nn {

// A size for each spatial dim; an int means the same for both.
struct Size2 {
  Size2(int64_t v) : h(v), w(v) {}  // NOLINT: implicit, like libtorch's ExpandingArray
  Size2(int64_t h, int64_t w) : h(h), w(w) {}
  int64_t h, w;
};

// Every size a conv2d kernel needs, validated once (letters: N batch, C input
// channels, H/W input height/width, K output channels, OH/OW output size).
struct ConvShape {
  int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, groups, OH, OW;
};
// An eval-mode BatchNorm2d and a ReLU (and a 2x2 max pool) applied as the
// output is written, for inference: each output v of channel k becomes
// relu(((v - hi[k]) - lo[k]) * scale[k] + shift[k]) (BatchNorm2d::eval_affine's
// coefficients, the same float arithmetic as its kernels), then, with pool,
// the max of each 2x2 window (stride 2); y is then (N, K, OH / 2, OW / 2).
struct ConvEpilogue {
  const float *hi, *lo, *scale, *shift;  // K each
  bool pool = false;
};

}  // namespace norma::nn

namespace norma::nn::ref {

// b may be null.
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
// dx, dw and db may each be null when not needed; each is overwritten.
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s);
// db alone, summed in double (the fast paths take it from here too).
void conv2d_backward_bias(float* db, const float* dy, const ConvShape& s);

}  // namespace norma::nn::ref
