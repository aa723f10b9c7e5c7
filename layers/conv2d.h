// Conv2d on NCHW tensors: x (N, C, H, W) * weight (K, C/groups, kh, kw) + bias (K)
// -> y (N, K, OH, OW) with OH = (H + 2 ph - dh (kh - 1) - 1) / sh + 1 (likewise OW).
//
// A reader's path: the module Conv2d -> the op conv2d (conv2d.cpp) -> the
// kernels, chosen at one place, conv2d_forward / conv2d_backward:
//   reference (layers/ref/conv2d.h), the definition: im2col + one sgemm per
//     image and group, forward and backward;
//   fast (layers/fast/conv2d.h), only with KernelPolicy::fast: Winograd
//     F(4x2, 3x3) (or F(4x4)) for the stride-1 3x3 convolutions of a CNN
//     (conv2d_winograd_applies), direct loops for few input channels, the RGB
//     layer (conv2d_direct_applies), else im2col + sgemm with the batch split
//     over threads. Each equals the reference up to float rounding
//     (tests/conv_kernels_test.cpp); tests/conv_naive.h, seven plain loops,
//     checks the reference.
//
// Layout: NCHW only. An NHWC tensor must be permuted to NCHW first (a view:
// x.permute({0, 3, 1, 2})); conv2d then copies it to contiguous NCHW.
#pragma once
#include "../core/arg.h"
#include "module.h"
#include "ref/conv2d.h"

namespace norma::nn {

ConvShape conv2d_shape(const Shape& x, const Shape& weight, Size2 stride, Size2 padding, Size2 dilation,
                       int64_t groups);

// ---- the kernels chosen by kernel_policy(), on raw contiguous NCHW pointers
// (b, db may be null): the fast ones where they apply, else the reference.
void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
// dx, dw, db may each be null when not needed; each is overwritten.
void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s);

// Whether conv2d_forward and conv2d_backward take the Winograd kernels for s
// (KernelPolicy::fast and ::winograd; 3x3, stride 1, dilation 1, one group,
// padding <= 2, at least 16 channels in and out).
bool conv2d_winograd_applies(const ConvShape& s);
// Whether they take the direct kernels (KernelPolicy::fast and ::direct_conv;
// stride 1, one group, C*kh*kw <= 64): the forward and dw; dx stays on im2col.
bool conv2d_direct_applies(const ConvShape& s);

// ---- an eval-mode BatchNorm2d and a ReLU (and a 2x2 max pool) applied as the
// output is written (ConvEpilogue, layers/ref/conv2d.h), for inference.
// Whether conv2d_forward_epilogue can run s: the Winograd path (with the
// pool, where it takes F(4x2) tiles), or the direct path over whole rows
// (without it). Always false with the fast kernels off: there is no
// reference epilogue (fuse.cpp then runs the ops one by one).
bool conv2d_epilogue_applies(const ConvShape& s, bool pool);
void conv2d_forward_epilogue(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue& e);

// ---- the op: one autograd node. bias may be an undefined Tensor.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride = 1, Size2 padding = 0,
              Size2 dilation = 1, int64_t groups = 1);

struct Conv2dOptions {
  Conv2dOptions(int64_t in_channels, int64_t out_channels, Size2 kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  NORMA_ARG(int64_t, in_channels);
  NORMA_ARG(int64_t, out_channels);
  NORMA_ARG(Size2, kernel_size);
  NORMA_ARG(Size2, stride) = 1;
  NORMA_ARG(Size2, padding) = 0;
  NORMA_ARG(Size2, dilation) = 1;
  NORMA_ARG(int64_t, groups) = 1;
  NORMA_ARG(bool, bias) = true;
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
