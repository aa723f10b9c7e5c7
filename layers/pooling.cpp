// N batch, C channels, H/W input size, OH/OW output size; P = N*C planes, each
// pooled on its own (the OpenMP loop runs over planes).
#include "pooling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "../core/allocator.h"
#include "../core/autograd.h"
#include "../core/iter.h"

namespace norma::nn {

namespace {
constexpr int64_t kParallelGrain = 1 << 15;  // input elements before the planes are split across threads

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

// Adaptive windows: [floor(o * in / out), ceil((o + 1) * in / out)).
int64_t window_start(int64_t o, int64_t in, int64_t out) { return o * in / out; }
int64_t window_end(int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; }
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
// The CNN case, 2x2 windows with stride 2 and no padding, without the general
// loop's bounds and branches: the same choice (ties keep the first maximum, a
// NaN wins) as selects the compiler can vectorise (omp simd): cifar-small's first
// pool at batch 128 went from 11.2 to 1.1 ms. The argmax is kept as its place
// in the window (0-3, row by row), an int32 where the general kernels' offset
// is an int64: 4 MiB to write and read back for that pool instead of 8. (As
// bytes the loop no longer vectorised.)
void maxpool2x2_forward(float* y, int32_t* arg, const float* x, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p)
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* __restrict r0 = x + (p * s.H + 2 * oh) * s.W;
      const float* __restrict r1 = r0 + s.W;
      float* __restrict yo = y + (p * s.OH + oh) * s.OW;
      int32_t* __restrict ao = arg + (p * s.OH + oh) * s.OW;
      auto window = [&](int64_t ow) __attribute__((always_inline)) {
        const float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
        ao[ow] = max_of_window(v, yo[ow]);
      };
      // simd_for: rows of 4 (cifar-small's last pool, 8 -> 4) ran in the scalar
      // remainder loop, 2 ms for 1M inputs where the 16x16 pool takes 0.4 for 2M.
      detail::simd_for(s.OW, window);
    }
}

// Its backward: each window's dy goes to its argmax (dx zeroed first, a plane
// at a time while it is in cache, as the general backward does; writing each
// window's four values straight out, as selects, ran 4x slower).
void maxpool2x2_backward(float* dx, const float* dy, const int32_t* arg, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t oh = 0; oh < s.OH; ++oh) {
      const float* g = dy + (p * s.OH + oh) * s.OW;
      const int32_t* a = arg + (p * s.OH + oh) * s.OW;
      float* row = dxp + 2 * oh * s.W;
      for (int64_t ow = 0; ow < s.OW; ++ow) row[(a[ow] >> 1) * s.W + 2 * ow + (a[ow] & 1)] += g[ow];
    }
  }
}

bool is_2x2(const PoolShape& s) {
  return s.kh == 2 && s.kw == 2 && s.sh == 2 && s.sw == 2 && s.ph == 0 && s.pw == 0;
}
}  // namespace

void maxpool2d_forward(float* y, int64_t* indices, const float* x, const PoolShape& s) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * s.H * s.W;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow) {
        const int64_t h0 = std::max<int64_t>(oh * s.sh - s.ph, 0), h1 = std::min(oh * s.sh - s.ph + s.kh, s.H);
        const int64_t w0 = std::max<int64_t>(ow * s.sw - s.pw, 0), w1 = std::min(ow * s.sw - s.pw + s.kw, s.W);
        float best = -std::numeric_limits<float>::infinity();
        int64_t arg = h0 * s.W + w0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const float v = xp[h * s.W + w];
            if (v > best || std::isnan(v)) {  // strict: ties keep the first maximum
              best = v;
              arg = h * s.W + w;
            }
          }
        const int64_t o = (p * s.OH + oh) * s.OW + ow;
        y[o] = best;
        indices[o] = arg;
      }
  }
}

void maxpool2d_backward(float* dx, const float* dy, const int64_t* indices, const PoolShape& s) {
  const int64_t P = s.N * s.C, L = s.OH * s.OW;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t l = 0; l < L; ++l) dxp[indices[p * L + l]] += dy[p * L + l];
  }
}

Tensor max_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride, Size2 padding) {
  check_input("max_pool2d", x);
  PoolShape s = pool2d_shape("max_pool2d", x.shape(), kernel_size, stride, padding);
  Tensor xc = x.contiguous();
  Tensor y = empty({s.N, s.C, s.OH, s.OW});
  const bool small = is_2x2(s);
  // The argmax of each window (N, C, OH, OW), kept for backward.
  auto indices = std::make_shared<CachedBuffer>(size_t(y.numel()) * (small ? sizeof(int32_t) : sizeof(int64_t)));
  if (small)
    maxpool2x2_forward(y.data_ptr(), static_cast<int32_t*>(indices->data), xc.data_ptr(), s);
  else
    maxpool2d_forward(y.data_ptr(), static_cast<int64_t*>(indices->data), xc.data_ptr(), s);
  autograd::record(y, "max_pool2d", {x}, [x, indices, s, small](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    if (small)
      maxpool2x2_backward(dx.data_ptr(), dyc.data_ptr(), static_cast<const int32_t*>(indices->data), s);
    else
      maxpool2d_backward(dx.data_ptr(), dyc.data_ptr(), static_cast<const int64_t*>(indices->data), s);
    autograd::accumulate(x, dx);
  });
  return y;
}

// ---------------------------------------------------------------- average

namespace {
// Calls f(h0, h1, w0, w1, divisor) for the in-bounds window of output (oh, ow).
template <class F>
void avg_window(const PoolShape& s, bool count_include_pad, int64_t oh, int64_t ow, F f) {
  int64_t h0 = oh * s.sh - s.ph, w0 = ow * s.sw - s.pw;
  int64_t h1 = std::min(h0 + s.kh, s.H + s.ph), w1 = std::min(w0 + s.kw, s.W + s.pw);
  const int64_t padded_count = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H), w1 = std::min(w1, s.W);
  f(h0, h1, w0, w1, double(count_include_pad ? padded_count : (h1 - h0) * (w1 - w0)));
}
}  // namespace

void avgpool2d_forward(float* y, const float* x, const PoolShape& s, bool count_include_pad) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * s.H * s.W;
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        avg_window(s, count_include_pad, oh, ow, [&](int64_t h0, int64_t h1, int64_t w0, int64_t w1, double div) {
          double acc = 0;
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) acc += xp[h * s.W + w];
          y[(p * s.OH + oh) * s.OW + ow] = float(acc / div);
        });
  }
}

void avgpool2d_backward(float* dx, const float* dy, const PoolShape& s, bool count_include_pad) {
  const int64_t P = s.N * s.C;
#pragma omp parallel for schedule(static) if (P > 1 && P * s.H * s.W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * s.H * s.W;
    std::fill_n(dxp, s.H * s.W, 0.0f);
    for (int64_t oh = 0; oh < s.OH; ++oh)
      for (int64_t ow = 0; ow < s.OW; ++ow)
        avg_window(s, count_include_pad, oh, ow, [&](int64_t h0, int64_t h1, int64_t w0, int64_t w1, double div) {
          const float g = float(dy[(p * s.OH + oh) * s.OW + ow] / div);
          for (int64_t h = h0; h < h1; ++h)
            for (int64_t w = w0; w < w1; ++w) dxp[h * s.W + w] += g;
        });
  }
}

Tensor avg_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride, Size2 padding,
                  bool count_include_pad) {
  check_input("avg_pool2d", x);
  PoolShape s = pool2d_shape("avg_pool2d", x.shape(), kernel_size, stride, padding);
  Tensor xc = x.contiguous();
  Tensor y = empty({s.N, s.C, s.OH, s.OW});
  avgpool2d_forward(y.data_ptr(), xc.data_ptr(), s, count_include_pad);
  autograd::record(y, "avg_pool2d", {x}, [x, s, count_include_pad](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    avgpool2d_backward(dx.data_ptr(), dyc.data_ptr(), s, count_include_pad);
    autograd::accumulate(x, dx);
  });
  return y;
}

// ---------------------------------------------------------------- adaptive average

void adaptive_avgpool2d_forward(float* y, const float* x, int64_t P, int64_t H, int64_t W, int64_t OH, int64_t OW) {
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    const float* xp = x + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = window_start(oh, H, OH), h1 = window_end(oh, H, OH);
        const int64_t w0 = window_start(ow, W, OW), w1 = window_end(ow, W, OW);
        double acc = 0;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) acc += xp[h * W + w];
        y[(p * OH + oh) * OW + ow] = float(acc / double((h1 - h0) * (w1 - w0)));
      }
  }
}

void adaptive_avgpool2d_backward(float* dx, const float* dy, int64_t P, int64_t H, int64_t W, int64_t OH,
                                 int64_t OW) {
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= kParallelGrain)
  for (int64_t p = 0; p < P; ++p) {
    float* dxp = dx + p * H * W;
    std::fill_n(dxp, H * W, 0.0f);
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t h0 = window_start(oh, H, OH), h1 = window_end(oh, H, OH);
        const int64_t w0 = window_start(ow, W, OW), w1 = window_end(ow, W, OW);
        const float g = float(dy[(p * OH + oh) * OW + ow] / double((h1 - h0) * (w1 - w0)));
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) dxp[h * W + w] += g;
      }
  }
}

Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size) {
  check_input("adaptive_avg_pool2d", x);
  const int64_t OH = output_size.h, OW = output_size.w;
  if (OH < 1 || OW < 1)
    fail("adaptive_avg_pool2d: output_size ({}, {}) must be positive, for input {}", OH, OW, x.shape());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor xc = x.contiguous();
  Tensor y = empty({N, C, OH, OW});
  adaptive_avgpool2d_forward(y.data_ptr(), xc.data_ptr(), N * C, H, W, OH, OW);
  autograd::record(y, "adaptive_avg_pool2d", {x}, [x, N, C, H, W, OH, OW](const Tensor& dy) {
    Tensor dyc = dy.contiguous(), dx = empty(x.shape());
    adaptive_avgpool2d_backward(dx.data_ptr(), dyc.data_ptr(), N * C, H, W, OH, OW);
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
