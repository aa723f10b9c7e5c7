// Conv2d: shape checks, the one place that chooses the kernels (reference or
// fast), the op and the module. The kernels: layers/ref/conv2d.cpp, layers/fast/.
#include "conv2d.h"

#include <cmath>

#include "../core/autograd.h"
#include "../core/kernel_policy.h"
#include "init.h"
#include "ref/conv2d.h"
#if NORMA_FAST_KERNELS
#include "fast/kernels.h"
#endif

namespace norma::nn {

ConvShape conv2d_shape(const Shape& x, const Shape& w, Size2 stride, Size2 padding, Size2 dilation,
                       int64_t groups) {
  if (x.size() != 4) fail("conv2d: input must be 4-D (N, C, H, W), got {}", x);
  if (w.size() != 4) fail("conv2d: weight must be 4-D (K, C/groups, kh, kw), got {}", w);
  if (stride.h < 1 || stride.w < 1 || dilation.h < 1 || dilation.w < 1 || padding.h < 0 || padding.w < 0)
    fail("conv2d: stride ({}, {}) and dilation ({}, {}) must be >= 1 and padding ({}, {}) >= 0", stride.h,
         stride.w, dilation.h, dilation.w, padding.h, padding.w);
  if (groups < 1 || x[1] % groups != 0 || w[0] % groups != 0)
    fail("conv2d: groups {} must divide both input channels {} (input {}) and output channels {} (weight {})",
         groups, x[1], x, w[0], w);
  if (x[1] != w[1] * groups)
    fail("conv2d: input {} has {} channels but weight {} expects {}", x, x[1], w, w[1] * groups);
  // An empty batch (N = 0) gives an empty output, as in PyTorch; empty planes do not.
  if (x[1] < 1 || x[2] < 1 || x[3] < 1)
    fail("conv2d: input {} must have non-zero channels, height and width", x);
  if (w[2] < 1 || w[3] < 1) fail("conv2d: weight {} has an empty kernel ({}, {})", w, w[2], w[3]);
  ConvShape s{x[0], x[1], x[2], x[3], w[0], w[2], w[3], stride.h, stride.w, padding.h, padding.w,
              dilation.h, dilation.w, groups, 0, 0};
  const int64_t ekh = s.dh * (s.kh - 1) + 1, ekw = s.dw * (s.kw - 1) + 1;  // dilated kernel
  if (ekh > s.H + 2 * s.ph || ekw > s.W + 2 * s.pw)
    fail("conv2d: kernel ({}, {}) (dilated ({}, {})) is larger than the padded input ({}, {}) of input {}", s.kh,
         s.kw, ekh, ekw, s.H + 2 * s.ph, s.W + 2 * s.pw, x);
  s.OH = (s.H + 2 * s.ph - ekh) / s.sh + 1;
  s.OW = (s.W + 2 * s.pw - ekw) / s.sw + 1;
  return s;
}

// ---------------------------------------------------------------- which kernel runs

bool conv2d_winograd_applies(const ConvShape& s) {
  // KernelPolicy::winograd off (NORMA_WINOGRAD=0): to measure what it buys, or to rule it out.
  const bool enabled = kernel_policy().fast && kernel_policy().winograd;
  // Few channels leave the 16 products too thin to beat im2col's one (the RGB input layer).
  return enabled && s.kh == 3 && s.kw == 3 && s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1 &&
         s.groups == 1 && s.N > 0 && s.ph <= 2 && s.pw <= 2 && s.C >= 16 && s.K >= 16;
}

// F(4x4) is opt-in because of its error: on data at PyTorch's scale (weights
// 1/sqrt(9 C)) it stays within the golden tolerance up to 32 channels
// (scripts/winograd_error.py), but on all-randn data, as the golden fixtures
// are made, it reached 1.9x that tolerance at 16 channels where F(4x2) stayed
// at 0.9, and failed conv_winograd_pad0_odd.
bool conv2d_direct_applies(const ConvShape& s) {
  // KernelPolicy::direct_conv off (NORMA_DIRECT_CONV=0): to measure what it buys, or to rule it out.
  const bool enabled = kernel_policy().fast && kernel_policy().direct_conv;
  return enabled && s.sh == 1 && s.sw == 1 && s.groups == 1 && s.N > 0 && s.K > 0 && s.OH > 0 && s.OW > 0 &&
         s.C * s.kh * s.kw <= 64;
}

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
#if NORMA_FAST_KERNELS
  if (kernel_policy().fast) {
    const fast::Kernels& k = fast::kernels();
    if (conv2d_winograd_applies(s)) return k.conv2d_winograd_forward(y, x, w, b, s, nullptr);
    if (conv2d_direct_applies(s)) return k.conv2d_direct_forward(y, x, w, b, s, nullptr);
    return k.conv2d_im2col_forward(y, x, w, b, s);
  }
#endif
  ref::conv2d_forward(y, x, w, b, s);
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s) {
#if NORMA_FAST_KERNELS
  if (kernel_policy().fast) {
    const fast::Kernels& k = fast::kernels();
    if (db) ref::conv2d_backward_bias(db, dy, s);
    if (conv2d_winograd_applies(s)) return k.conv2d_winograd_backward(dx, dw, dy, x, w, s);
    if (dw && conv2d_direct_applies(s)) {  // dx, if wanted, still goes through im2col
      k.conv2d_direct_backward_weight(dw, dy, x, s);
      dw = nullptr;
    }
    return k.conv2d_im2col_backward(dx, dw, dy, x, w, s);
  }
#endif
  ref::conv2d_backward(dx, dw, db, dy, x, w, s);
}

bool conv2d_epilogue_applies(const ConvShape& s, bool pool) {
#if NORMA_FAST_KERNELS
  // The pool only on F(4x2) tiles: where conv2d_forward would take F(4x4)
  // (NORMA_WINOGRAD_F44), F(4x2) would round differently from it.
  if (conv2d_winograd_applies(s)) return !pool || fast::kernels().winograd_row_tile(s.C) == 2;
  return !pool && conv2d_direct_applies(s) && s.OW % 32 == 0;
#else
  (void)s, (void)pool;
  return false;
#endif
}

void conv2d_forward_epilogue(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue& e) {
  if (!conv2d_epilogue_applies(s, e.pool))
    fail("conv2d_forward_epilogue: no fused path for input ({}, {}, {}, {}) and {} output channels of {}x{} "
         "(conv2d_epilogue_applies is false)", s.N, s.C, s.H, s.W, s.K, s.kh, s.kw);
#if NORMA_FAST_KERNELS  // (without the fast kernels nothing applies)
  if (conv2d_winograd_applies(s)) return fast::kernels().conv2d_winograd_forward(y, x, w, b, s, &e);
  fast::kernels().conv2d_direct_forward(y, x, w, b, s, &e);
#else
  (void)y, (void)x, (void)w, (void)b;
#endif
}

// ---------------------------------------------------------------- the op

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Size2 stride, Size2 padding,
              Size2 dilation, int64_t groups) {
  if (!x.defined() || !weight.defined()) fail("conv2d: input and weight must be defined tensors");
  ConvShape s = conv2d_shape(x.shape(), weight.shape(), stride, padding, dilation, groups);
  if (bias.defined() && bias.shape() != Shape{s.K})
    fail("conv2d: bias {} does not match the {} output channels of weight {}", bias.shape(), s.K, weight.shape());
  Tensor xc = x.contiguous(), wc = weight.contiguous();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = empty({s.N, s.K, s.OH, s.OW});
  conv2d_forward(y.data_ptr(), xc.data_ptr(), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr, s);
  autograd::record(y, "conv2d", {x, weight, bias}, [x, weight, bias, xc, wc, s](const Tensor& dy) {
    Tensor dyc = dy.contiguous();
    Tensor dx = x.requires_grad() ? empty(x.shape()) : Tensor();
    Tensor dw = weight.requires_grad() ? empty(weight.shape()) : Tensor();
    Tensor db = bias.requires_grad() ? empty(bias.shape()) : Tensor();
    conv2d_backward(dx.defined() ? dx.data_ptr() : nullptr, dw.defined() ? dw.data_ptr() : nullptr,
                    db.defined() ? db.data_ptr() : nullptr, dyc.data_ptr(), xc.data_ptr(), wc.data_ptr(), s);
    autograd::accumulate(x, dx);
    autograd::accumulate(weight, dw);
    autograd::accumulate(bias, db);
  }, {xc, wc});
  return y;
}

// ---------------------------------------------------------------- the module

// ---------------------------------------------------------------- the module

Conv2d::Conv2d(const Conv2dOptions& o) : options(o) {
  if (o.in_channels_ <= 0 || o.out_channels_ <= 0 || o.kernel_size_.h <= 0 || o.kernel_size_.w <= 0)
    fail("Conv2d: in_channels {}, out_channels {} and kernel_size ({}, {}) must be positive", o.in_channels_,
         o.out_channels_, o.kernel_size_.h, o.kernel_size_.w);
  if (o.groups_ < 1 || o.in_channels_ % o.groups_ || o.out_channels_ % o.groups_)
    fail("Conv2d: groups {} must divide in_channels {} and out_channels {}", o.groups_, o.in_channels_,
         o.out_channels_);
  if (o.stride_.h < 1 || o.stride_.w < 1 || o.dilation_.h < 1 || o.dilation_.w < 1 || o.padding_.h < 0 ||
      o.padding_.w < 0)
    fail("Conv2d: stride ({}, {}) and dilation ({}, {}) must be >= 1 and padding ({}, {}) >= 0", o.stride_.h,
         o.stride_.w, o.dilation_.h, o.dilation_.w, o.padding_.h, o.padding_.w);
  weight = register_parameter(
      "weight", empty({o.out_channels_, o.in_channels_ / o.groups_, o.kernel_size_.h, o.kernel_size_.w}));
  if (o.bias_) bias = register_parameter("bias", empty({o.out_channels_}));
  reset_parameters();
}

Conv2d::Conv2d(int64_t in, int64_t out, Size2 k, Size2 stride, Size2 padding, Size2 dilation, int64_t groups,
               bool with_bias)
    : Conv2d(Conv2dOptions(in, out, k).stride(stride).padding(padding).dilation(dilation).groups(groups).bias(
          with_bias)) {}

void Conv2d::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(double(init::calculate_fan_in_and_fan_out(weight).first));
    init::uniform_(bias, -bound, bound);
  }
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight, bias, options.stride_, options.padding_, options.dilation_, options.groups_);
}

std::string Conv2d::extra_repr() const {
  const auto& o = options;
  std::string s = fmt::format("{}, {}, kernel_size=({}, {}), stride=({}, {})", o.in_channels_, o.out_channels_,
                              o.kernel_size_.h, o.kernel_size_.w, o.stride_.h, o.stride_.w);
  if (o.padding_.h || o.padding_.w) s += fmt::format(", padding=({}, {})", o.padding_.h, o.padding_.w);
  if (o.dilation_.h != 1 || o.dilation_.w != 1) s += fmt::format(", dilation=({}, {})", o.dilation_.h, o.dilation_.w);
  if (o.groups_ != 1) s += fmt::format(", groups={}", o.groups_);
  if (!o.bias_) s += ", bias=False";
  return s;
}

}  // namespace norma::nn
