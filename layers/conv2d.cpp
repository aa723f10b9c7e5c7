// N batch, C input channels, H/W input size, K output channels, OH/OW output size,
// g group; Cg = C/groups and Kg = K/groups channels per group.
#include "conv2d.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "../core/autograd.h"
#include "../core/blas_threads.h"
#include "init.h"

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

// ---------------------------------------------------------------- naive oracle

void conv2d_forward_naive(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          double acc = b ? b[k] : 0.0;
          const int64_t g = k / Kg;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                acc += double(x[((n * s.C + g * Cg + c) * s.H + ih) * s.W + iw]) *
                       w[((k * Cg + c) * s.kh + i) * s.kw + j];
              }
          y[((n * s.K + k) * s.OH + oh) * s.OW + ow] = float(acc);
        }
}

void conv2d_backward_naive(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                           const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  if (dx) std::fill_n(dx, s.N * s.C * s.H * s.W, 0.0f);
  if (dw) std::fill_n(dw, s.K * Cg * s.kh * s.kw, 0.0f);
  if (db) std::fill_n(db, s.K, 0.0f);
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          const float d = dy[((n * s.K + k) * s.OH + oh) * s.OW + ow];
          const int64_t g = k / Kg;
          if (db) db[k] += d;
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t i = 0; i < s.kh; ++i)
              for (int64_t j = 0; j < s.kw; ++j) {
                int64_t ih = oh * s.sh - s.ph + i * s.dh, iw = ow * s.sw - s.pw + j * s.dw;
                if (ih < 0 || ih >= s.H || iw < 0 || iw >= s.W) continue;
                int64_t xi = ((n * s.C + g * Cg + c) * s.H + ih) * s.W + iw;
                int64_t wi = ((k * Cg + c) * s.kh + i) * s.kw + j;
                if (dx) dx[xi] += d * w[wi];
                if (dw) dw[wi] += d * x[xi];
              }
        }
}

// ---------------------------------------------------------------- im2col + sgemm

namespace {

// The outputs ow whose input column iw = ow*sw + off (off = j*dw - pw) falls
// inside [0, W): [lo, hi). Outside it the kernel tap reads padding. Computing
// the range once per tap turns the inner loops into plain copies and adds
// (im2col's per-element bounds test cost as much as the GEMM's packing).
struct ColSpan {
  int64_t off, lo, hi;
};
ColSpan col_span(const ConvShape& s, int64_t j) {
  const int64_t off = j * s.dw - s.pw;
  const int64_t lo = std::min(off >= 0 ? 0 : (-off + s.sw - 1) / s.sw, s.OW);
  const int64_t hi = s.W - 1 - off < 0 ? 0 : std::min((s.W - 1 - off) / s.sw + 1, s.OW);
  return {off, lo, std::max(lo, hi)};
}

// col (Cg*kh*kw, OH*OW) from the Cg channels of one image starting at x.
void im2col(float* col, const float* x, const ConvShape& s, int64_t Cg) {
  const int64_t L = s.OH * s.OW;
#pragma omp parallel for collapse(2) schedule(static) if (Cg * s.kh * s.kw * L >= (1 << 15))
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        float* row = col + ((c * s.kh + i) * s.kw + j) * L;
        const float* plane = x + c * s.H * s.W;
        const auto [off, lo, hi] = col_span(s, j);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + i * s.dh;
          float* out = row + oh * s.OW;
          if (ih < 0 || ih >= s.H) {
            std::fill_n(out, s.OW, 0.0f);
            continue;
          }
          const float* in = plane + ih * s.W;
          std::fill(out, out + lo, 0.0f);
          if (s.sw == 1)
            std::copy(in + lo + off, in + hi + off, out + lo);
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * s.sw + off];
          std::fill(out + hi, out + s.OW, 0.0f);
        }
      }
}

// dx += col2im(col): the adjoint of im2col. Parallel over channels (each owns its plane).
void col2im_add(float* dx, const float* col, const ConvShape& s, int64_t Cg) {
  const int64_t L = s.OH * s.OW;
#pragma omp parallel for schedule(static) if (Cg * s.kh * s.kw * L >= (1 << 15))
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j) {
        const float* row = col + ((c * s.kh + i) * s.kw + j) * L;
        float* plane = dx + c * s.H * s.W;
        const auto [off, lo, hi] = col_span(s, j);
        for (int64_t oh = 0; oh < s.OH; ++oh) {
          const int64_t ih = oh * s.sh - s.ph + i * s.dh;
          if (ih < 0 || ih >= s.H) continue;
          float* out = plane + ih * s.W;
          const float* in = row + oh * s.OW;
          if (s.sw == 1)
            for (int64_t ow = lo; ow < hi; ++ow) out[ow + off] += in[ow];
          else
            for (int64_t ow = lo; ow < hi; ++ow) out[ow * s.sw + off] += in[ow];
        }
      }
}

}  // namespace

// Images are independent, so the batch is split across OpenMP threads, each
// with its own col buffer and a single-threaded sgemm (see blas_threads.h). A
// batch smaller than the thread count keeps OpenBLAS's threads instead.
namespace {

bool split_batch(const ConvShape& s) { return omp_get_max_threads() > 1 && s.N >= omp_get_max_threads(); }

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const float* b, const ConvShape& s) {
  if (conv2d_winograd_applies(s)) return conv2d_winograd_forward(y, x, w, b, s);
  if (conv2d_direct_applies(s)) return conv2d_direct_forward(y, x, w, b, s);
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, L = s.OH * s.OW, R = Cg * s.kh * s.kw;
  const bool split = split_batch(s);
  const int T = split ? omp_get_max_threads() : 1;
  Tensor col_buf = empty({T * R * L});  // the caching allocator hands the same memory back next call
  std::optional<BlasThreads> one_thread;
  if (split) one_thread.emplace(1);
#pragma omp parallel for schedule(static) if (split)
  for (int64_t n = 0; n < s.N; ++n) {
    float* col = col_buf.data_ptr() + (split ? omp_get_thread_num() : 0) * R * L;
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(col, x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
      float* yg = y + (n * s.K + g * Kg) * L;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(Kg), int(L), int(R), 1.0f, w + g * Kg * R,
                  int(R), col, int(L), 0.0f, yg, int(L));
      if (b)
        for (int64_t k = 0; k < Kg; ++k) {
          const float bk = b[g * Kg + k];
          for (int64_t l = 0; l < L; ++l) yg[k * L + l] += bk;
        }
    }
  }
}

void conv2d_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                     const ConvShape& s) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, L = s.OH * s.OW, R = Cg * s.kh * s.kw;
  if (db) {
    for (int64_t k = 0; k < s.K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t l = 0; l < L; ++l) acc += dy[(n * s.K + k) * L + l];
      db[k] = float(acc);
    }
  }
  if (conv2d_winograd_applies(s)) return conv2d_winograd_backward(dx, dw, dy, x, w, s);
  if (dw && conv2d_direct_applies(s)) {  // dx, if wanted, still goes through im2col below
    conv2d_direct_backward_weight(dw, dy, x, s);
    dw = nullptr;
    if (!dx) return;
  }
  const bool split = split_batch(s);
  const int T = split ? omp_get_max_threads() : 1;
  Tensor col_buf = empty({T * R * L});
  // Each thread sums its images' dweight into its own slice; the slices are
  // added in thread order afterwards, so the result is the same every run.
  Tensor dw_buf = dw ? zeros({T * s.K * R}) : Tensor();
  if (dx) std::fill_n(dx, s.N * s.C * s.H * s.W, 0.0f);
  std::optional<BlasThreads> one_thread;
  if (split) one_thread.emplace(1);
#pragma omp parallel for schedule(static) if (split)
  for (int64_t n = 0; n < s.N; ++n) {
    const int t = split ? omp_get_thread_num() : 0;
    float* col = col_buf.data_ptr() + t * R * L;
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* dyg = dy + (n * s.K + g * Kg) * L;
      if (dw) {
        im2col(col, x + (n * s.C + g * Cg) * s.H * s.W, s, Cg);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(Kg), int(R), int(L), 1.0f, dyg, int(L), col,
                    int(L), 1.0f, dw_buf.data_ptr() + t * s.K * R + g * Kg * R, int(R));
      }
      if (dx) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(R), int(L), int(Kg), 1.0f, w + g * Kg * R,
                    int(R), dyg, int(L), 0.0f, col, int(L));
        col2im_add(dx + (n * s.C + g * Cg) * s.H * s.W, col, s, Cg);
      }
    }
  }
  if (dw) {
    const float* parts = dw_buf.data_ptr();
    for (int64_t i = 0; i < s.K * R; ++i) {
      float acc = parts[i];
      for (int t = 1; t < T; ++t) acc += parts[t * s.K * R + i];
      dw[i] = acc;
    }
  }
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

bool conv2d_epilogue_applies(const ConvShape& s, bool pool) {
  // The pool only on F(4x2) tiles: where conv2d_forward would take F(4x4)
  // (NORMA_WINOGRAD_F44), F(4x2) would round differently from it.
  if (conv2d_winograd_applies(s)) return !pool || conv2d_winograd_row_tile(s.C) == 2;
  return !pool && conv2d_direct_applies(s) && s.OW % 32 == 0;
}

void conv2d_forward_epilogue(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                             const ConvEpilogue& e) {
  if (!conv2d_epilogue_applies(s, e.pool))
    fail("conv2d_forward_epilogue: no fused path for input ({}, {}, {}, {}) and {} output channels of {}x{} "
         "(conv2d_epilogue_applies is false)", s.N, s.C, s.H, s.W, s.K, s.kh, s.kw);
  if (conv2d_winograd_applies(s)) return conv2d_winograd_forward(y, x, w, b, s, &e);
  conv2d_direct_forward(y, x, w, b, s, &e);
}

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
