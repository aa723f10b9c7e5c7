// Pooling: shape checks, the ops (each choosing its kernels at one place) and
// the modules. The kernels: layers/ref/pool2d.cpp, layers/fast/maxpool2x2.cpp.
#include "pooling.h"

#include <memory>

#include "../core/allocator.h"
#include "../core/autograd.h"
#include "../core/kernel_policy.h"
#include "ref/pool2d.h"
#if NORMA_FAST_KERNELS
#include "fast/kernels.h"
#endif

namespace norma::nn {

namespace {
void check_pool_args(const char* op, Size2 k, Size2 s, Size2 p, const std::string& where) {
  if (k.h < 1 || k.w < 1) fail("{}: kernel_size ({}, {}) must be positive{}", op, k.h, k.w, where);
  if (s.h < 1 || s.w < 1) fail("{}: stride ({}, {}) must be positive{}", op, s.h, s.w, where);
  if (p.h < 0 || p.w < 0) fail("{}: padding ({}, {}) must be non-negative{}", op, p.h, p.w, where);
  if (p.h > k.h / 2 || p.w > k.w / 2)
    fail("{}: pad should be at most half of kernel size, but got padding ({}, {}) and kernel_size ({}, {}){}", op,
         p.h, p.w, k.h, k.w, where);
}

void check_input(const char* op, const Tensor& x) {
  if (!x.defined()) fail("{}: input is an undefined tensor", op);
  if (x.dim() != 4) fail("{}: input must be 4-D (N, C, H, W), got {}", op, x.shape());
  if (x.size(1) < 1 || x.size(2) < 1 || x.size(3) < 1)
    fail("{}: input {} must have non-zero channels, height and width", op, x.shape());
}

// "2" when both sizes agree, else "(2, 3)", as PyTorch prints its arguments.
std::string size2_repr(Size2 s) { return s.h == s.w ? std::to_string(s.h) : fmt::format("({}, {})", s.h, s.w); }
}  // namespace

PoolShape pool2d_shape(const char* op, const Shape& x, Size2 k, std::optional<Size2> stride, Size2 p) {
  if (x.size() != 4) fail("{}: input must be 4-D (N, C, H, W), got {}", op, x);
  Size2 s = stride.value_or(k);
  check_pool_args(op, k, s, p, fmt::format(" for input {}", x));
  if (k.h > x[2] + 2 * p.h || k.w > x[3] + 2 * p.w)
    fail("{}: kernel ({}, {}) is larger than the padded input ({}, {}) of input {}", op, k.h, k.w, x[2] + 2 * p.h,
         x[3] + 2 * p.w, x);
  return {x[0], x[1], x[2], x[3], k.h, k.w, s.h, s.w, p.h, p.w,
          (x[2] + 2 * p.h - k.h) / s.h + 1, (x[3] + 2 * p.w - k.w) / s.w + 1};
}

// ---------------------------------------------------------------- max

namespace {

// The one choice of max_pool2d's kernels: the fast 2x2 one (argmax as an
// int32 place in the window) where it applies, else the reference (argmax as
// an int64 offset in the plane).
bool use_fast_2x2(const PoolShape& s) {
#if NORMA_FAST_KERNELS
  return kernel_policy().fast && fast::kernels().maxpool2x2_applies(s);
#else
  (void)s;
  return false;
#endif
}

void maxpool_forward(float* y, void* indices, const float* x, const PoolShape& s, bool fast_2x2) {
#if NORMA_FAST_KERNELS
  if (fast_2x2) return fast::kernels().maxpool2x2_forward(y, static_cast<int32_t*>(indices), x, s);
#endif
  (void)fast_2x2;
  ref::maxpool2d_forward(y, static_cast<int64_t*>(indices), x, s);
}

void maxpool_backward(float* dx, const float* dy, const void* indices, const PoolShape& s, bool fast_2x2) {
#if NORMA_FAST_KERNELS
  if (fast_2x2) return fast::kernels().maxpool2x2_backward(dx, dy, static_cast<const int32_t*>(indices), s);
#endif
  (void)fast_2x2;
  ref::maxpool2d_backward(dx, dy, static_cast<const int64_t*>(indices), s);
}

}  // namespace

Tensor max_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride, Size2 padding) {
  check_input("max_pool2d", x);
  PoolShape s = pool2d_shape("max_pool2d", x.shape(), kernel_size, stride, padding);
  Tensor xc = x.contiguous();
  Tensor y = empty({s.N, s.C, s.OH, s.OW});
  const bool fast_2x2 = use_fast_2x2(s);
  // The argmax of each window (N, C, OH, OW), kept for backward.
  auto indices = std::make_shared<CachedBuffer>(size_t(y.numel()) * (fast_2x2 ? sizeof(int32_t) : sizeof(int64_t)));
  maxpool_forward(y.data_ptr(), indices->data, xc.data_ptr(), s, fast_2x2);
  autograd::record(y, "max_pool2d", {x}, [x, indices, s, fast_2x2](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    maxpool_backward(dx.data_ptr(), dyc.data_ptr(), indices->data, s, fast_2x2);
    autograd::accumulate(x, dx);
  });
  return y;
}

// ---------------------------------------------------------------- average

Tensor avg_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride, Size2 padding,
                  bool count_include_pad) {
  check_input("avg_pool2d", x);
  PoolShape s = pool2d_shape("avg_pool2d", x.shape(), kernel_size, stride, padding);
  Tensor xc = x.contiguous();
  Tensor y = empty({s.N, s.C, s.OH, s.OW});
  ref::avgpool2d_forward(y.data_ptr(), xc.data_ptr(), s, count_include_pad);
  autograd::record(y, "avg_pool2d", {x}, [x, s, count_include_pad](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    ref::avgpool2d_backward(dx.data_ptr(), dyc.data_ptr(), s, count_include_pad);
    autograd::accumulate(x, dx);
  });
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size) {
  check_input("adaptive_avg_pool2d", x);
  const int64_t OH = output_size.h, OW = output_size.w;
  if (OH < 1 || OW < 1)
    fail("adaptive_avg_pool2d: output_size ({}, {}) must be positive, for input {}", OH, OW, x.shape());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor xc = x.contiguous();
  Tensor y = empty({N, C, OH, OW});
  ref::adaptive_avgpool2d_forward(y.data_ptr(), xc.data_ptr(), N * C, H, W, OH, OW);
  autograd::record(y, "adaptive_avg_pool2d", {x}, [x, N, C, H, W, OH, OW](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    ref::adaptive_avgpool2d_backward(dx.data_ptr(), dyc.data_ptr(), N * C, H, W, OH, OW);
    autograd::accumulate(x, dx);
  });
  return y;
}

// ---------------------------------------------------------------- modules

MaxPool2d::MaxPool2d(Size2 k, std::optional<Size2> s, Size2 p) : kernel_size(k), stride(s.value_or(k)), padding(p) {
  check_pool_args("MaxPool2d", kernel_size, stride, padding, "");
}

std::string MaxPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}, dilation=1, ceil_mode=False", size2_repr(kernel_size),
                     size2_repr(stride), size2_repr(padding));
}

AvgPool2d::AvgPool2d(Size2 k, std::optional<Size2> s, Size2 p, bool count_include_pad)
    : kernel_size(k), stride(s.value_or(k)), padding(p), count_include_pad(count_include_pad) {
  check_pool_args("AvgPool2d", kernel_size, stride, padding, "");
}

std::string AvgPool2d::extra_repr() const {
  return fmt::format("kernel_size={}, stride={}, padding={}", size2_repr(kernel_size), size2_repr(stride),
                     size2_repr(padding));
}

AdaptiveAvgPool2d::AdaptiveAvgPool2d(Size2 output_size) : output_size(output_size) {
  if (output_size.h < 1 || output_size.w < 1)
    fail("AdaptiveAvgPool2d: output_size ({}, {}) must be positive", output_size.h, output_size.w);
}

std::string AdaptiveAvgPool2d::extra_repr() const { return "output_size=" + size2_repr(output_size); }

}  // namespace norma::nn
