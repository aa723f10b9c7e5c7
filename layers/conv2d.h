// Conv2d on NCHW tensors: x (N, C, H, W) * weight (K, C/groups, kh, kw) + bias (K)
// -> y (N, K, OH, OW) with OH = (H + 2 ph - dh (kh - 1) - 1) / sh + 1 (likewise OW).
//
// Fast paths: Winograd F(4x2, 3x3) for the stride-1 3x3 convolutions of a CNN
// (conv2d_winograd.cpp, 3x fewer multiplies), direct loops for few input
// channels (conv2d_direct.cpp, the RGB layer), otherwise im2col + OpenBLAS
// sgemm, per image and group:
//   col (C/g*kh*kw, OH*OW) = im2col(x[n, g])     y[n, g] = W_g (K/g, C/g*kh*kw) @ col
// and backward:
//   dW_g += dy[n, g] @ col^T     dcol = W_g^T @ dy[n, g]     dx[n, g] += col2im(dcol)
//   db[k] = sum of dy[:, k]
// The naive loops beside it are the test oracle.
//
// Layout: NCHW only. An NHWC tensor must be permuted to NCHW first (a view:
// x.permute({0, 3, 1, 2})); conv2d then copies it to contiguous NCHW.
#pragma once
#include "module.h"

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
ConvShape conv2d_shape(const Shape& x, const Shape& weight, Size2 stride, Size2 padding, Size2 dilation,
                       int64_t groups);

// ---- kernels on raw contiguous NCHW pointers (b, db may be null)
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
// dx, dw, db may each be null when not needed; dw and db are overwritten, dx is overwritten.
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s);
void conv2d_forward_naive(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
void conv2d_backward_naive(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                           const ConvShape& s);

// ---- an eval-mode BatchNorm2d and a ReLU (and a 2x2 max pool) applied as the
// output is written, for inference: each output v of channel k becomes
// relu(((v - hi[k]) - lo[k]) * scale[k] + shift[k]) (BatchNorm2d::eval_affine's
// coefficients, the same float arithmetic as its kernels), then, with pool,
// the max of each 2x2 window (stride 2); y is then (N, K, OH / 2, OW / 2).
struct ConvEpilogue {
  const float *hi, *lo, *scale, *shift;  // K each
  bool pool = false;
};
// Whether conv2d_forward_epilogue can run s: the Winograd path (with the
// pool, where it takes F(4x2) tiles), or the direct path over whole rows
// (without it).
bool conv2d_epilogue_applies(const ConvShape& s, bool pool);
void conv2d_forward_epilogue(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue& e);

// ---- Winograd F(4x2, 3x3) (conv2d_winograd.cpp): 3x3, stride 1, dilation 1, one
// group, padding <= 2, at least 16 channels in and out. conv2d_forward and
// conv2d_backward take this path where it applies; NORMA_WINOGRAD=0 turns it off.
// NORMA_WINOGRAD_F44=n makes the forward and dx convolutions that sum at most
// n channels take F(4x4, 3x3) tiles instead (dw stays on F(4x2)): 4x fewer
// multiplies than direct convolution, but 2-3x F(4x2)'s float32 error, so off
// unless asked for. conv2d_winograd_row_tile gives the outputs per tile along a
// row for a sum over so many channels: 4 (F(4x4)) or 2.
bool conv2d_winograd_applies(const ConvShape& s);
int conv2d_winograd_row_tile(int64_t summed_channels);
void conv2d_winograd_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue* e = nullptr);  // e: with the pool only on F(4x2) tiles
// dx and dw (either may be null) are overwritten; conv2d_backward computes db.
void conv2d_winograd_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                              const ConvShape& s);

// ---- direct convolution (conv2d_direct.cpp) for few input channels: stride 1,
// one group, C*kh*kw <= 64 (the RGB input layer). conv2d_forward and the weight
// gradient of conv2d_backward take it where it applies (dx stays on im2col);
// NORMA_DIRECT_CONV=0 turns it off.
bool conv2d_direct_applies(const ConvShape& s);
void conv2d_direct_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                           const ConvEpilogue* e = nullptr);  // e: only where OW % 32 == 0, no pool
// dw is overwritten; conv2d_backward computes db.
void conv2d_direct_backward_weight(float* dw, const float* dy, const float* x, const ConvShape& s);

// ---- the op: one autograd node. bias may be an undefined Tensor.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride = 1, Size2 padding = 0,
              Size2 dilation = 1, int64_t groups = 1);

struct Conv2dOptions {
  Conv2dOptions(int64_t in_channels, int64_t out_channels, Size2 kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
#define NORMA_ARG(T, name) \
  Conv2dOptions& name(T v) { name##_ = v; return *this; } \
  T name##_
  NORMA_ARG(int64_t, in_channels);
  NORMA_ARG(int64_t, out_channels);
  NORMA_ARG(Size2, kernel_size);
  NORMA_ARG(Size2, stride) = 1;
  NORMA_ARG(Size2, padding) = 0;
  NORMA_ARG(Size2, dilation) = 1;
  NORMA_ARG(int64_t, groups) = 1;
  NORMA_ARG(bool, bias) = true;
#undef NORMA_ARG
};

class Conv2d : public Module {
 public:
  explicit Conv2d(const Conv2dOptions& options);
  Conv2d(int64_t in_channels, int64_t out_channels, Size2 kernel_size, Size2 stride = 1, Size2 padding = 0,
         Size2 dilation = 1, int64_t groups = 1, bool bias = true);
  Tensor forward(const Tensor& x) override;
  // PyTorch's default: kaiming_uniform_(a = sqrt(5)) for the weight, U(+-1/sqrt(fan_in)) for the bias.
  void reset_parameters();
  std::string name() const override { return "Conv2d"; }
  std::string extra_repr() const override;

  Conv2dOptions options;
  Tensor weight;  // (K, C/groups, kh, kw)
  Tensor bias;    // (K), undefined without bias
};

}  // namespace norma::nn
