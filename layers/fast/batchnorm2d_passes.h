// The NCHW passes over one channel that the fast BatchNorm2d kernels share
// (batchnorm2d_nchw.cpp, batchnorm2d_pool.cpp), and the NHWC bodies
// (batchnorm2d_nhwc.cpp) the kernels call for that layout. Names as in
// ref/batchnorm2d.h.
#pragma once
#include <algorithm>
#include <cstdint>
#include <utility>

#include "../ref/batchnorm2d.h"
#include "simd.h"

namespace norma::nn::fast::NORMA_ISA {

// A channel's N planes lie C HW floats apart and each starts cold: the
// hardware prefetchers stop at 4 KiB pages, a 32x32 plane's size. So the
// first passes over a channel go through each plane kSegment floats at a time
// and ask for the same segment of the next image's plane (next floats on) as
// they go; a whole plane asked for at once, the prefetches waited on each other.
constexpr int64_t kSegment = 256;

// Sum of f(value, c) over channel c of an NCHW tensor, in double: its N planes
// are contiguous runs of HW floats. simd lets the sum be split across vector
// lanes; without it every add waits for the one before and the pass runs at a
// quarter of its speed. (f takes the value, not an index: an indexed term made
// the compiler gather element by element.)
template <class F>
double nchw_channel_sum(const float* x, int64_t c, int64_t N, int64_t C, int64_t HW, F f) {
  double s = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* p = x + (n * C + c) * HW;
    const int64_t next = n + 1 < N ? C * HW : 0;
    for (int64_t i0 = 0; i0 < HW; i0 += kSegment) {
      const int64_t i1 = std::min(HW, i0 + kSegment);
      if (next) prefetch_floats(p + next + i0, i1 - i0);
#pragma omp simd reduction(+ : s)
      for (int64_t i = i0; i < i1; ++i) s += f(p[i], c);
    }
  }
  return s;
}

// mean and var (biased) of channel c of an NCHW tensor: two passes, or
// BrainPy's one (E[x^2] - E[x]^2, clamped at 0).
inline void nchw_channel_stats(double& mean, double& var, const float* x, int64_t c, int64_t N, int64_t C,
                               int64_t HW, VarianceMethod method) {
  const double M = double(N * HW);
  mean = nchw_channel_sum(x, c, N, C, HW, [](float v, int64_t) { return double(v); }) / M;
  if (method == VarianceMethod::two_pass) {
    const double m = mean;
    var = nchw_channel_sum(x, c, N, C, HW, [m](float v, int64_t) {
            const double d = v - m;
            return d * d;
          }) / M;
  } else {
    var = nchw_channel_sum(x, c, N, C, HW, [](float v, int64_t) { return double(v) * v; }) / M;
    var = std::max(0.0, var - mean * mean);
  }
}

// The normalisation of one run of values of a channel: y = (x - m) * scale + shift,
// then max(y, 0) with the fused ReLU (NaN gives 0, as relu). y may be x.
inline void normalize_run(float* y, const float* x, double m, double scale, double shift, int64_t n, bool relu) {
  const SplitMean sm(m);
  const float sc = float(scale), sh = float(shift);
  if (relu)
    for (int64_t i = 0; i < n; ++i) {
      const float v = bn_value(sm.centre(x[i]), sc, sh);
      y[i] = v > 0 ? v : 0.0f;
    }
  else
    for (int64_t i = 0; i < n; ++i) y[i] = bn_value(sm.centre(x[i]), sc, sh);
}

// sum(dy) and sum(dy (x - mean)) over channel c of NCHW tensors, in one sweep,
// (x - mean) formed per element (sum(dy x) - mean sum(dy) would cancel). With
// relu (the fused ReLU), dy counts only where the forward's output was positive.
// dy_plane(n) gives image n's plane of dy and the next image's (to prefetch, or
// null): a plane of the tensor, or one the fused pool's backward fills in.
template <class Planes>
void nchw_grad_sums(double& sum_dy, double& sum_dy_xc, Planes dy_plane, const float* x, const ScaleShift* relu,
                    double m, int64_t c, int64_t N, int64_t C, int64_t HW) {
  const SplitMean sm(m);
  double a = 0, b = 0;
  for (int64_t n = 0; n < N; ++n) {
    const int64_t o = (n * C + c) * HW, next = n + 1 < N ? C * HW : 0;
    const std::pair<const float*, const float*> planes = dy_plane(n);
    const float *g = planes.first, *g_next = planes.second;  // (clang 14 cannot use structured bindings under omp simd)
    const float* xp = x + o;
    for (int64_t i0 = 0; i0 < HW; i0 += kSegment) {
      const int64_t i1 = std::min(HW, i0 + kSegment);
      if (g_next) prefetch_floats(g_next + i0, i1 - i0);
      if (next) prefetch_floats(xp + next + i0, i1 - i0);
      if (relu) {
        const float sc = relu->scale, sh = relu->shift;
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = i0; i < i1; ++i) {
          const float gi = relu_masked(g[i], bn_value(sm.centre(xp[i]), sc, sh));
          a += gi, b += gi * (xp[i] - m);
        }
      } else {
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = i0; i < i1; ++i) a += g[i], b += g[i] * (xp[i] - m);
      }
    }
  }
  sum_dy = a, sum_dy_xc = b;
}

// Channel c's planes of an NCHW tensor, for nchw_grad_sums.
struct TensorPlanes {
  const float* t;
  int64_t c, N, C, HW;
  std::pair<const float*, const float*> operator()(int64_t n) const {
    const float* p = t + (n * C + c) * HW;
    return {p, n + 1 < N ? p + C * HW : nullptr};
  }
};

// Per-channel constants of dx = k (dy - mean_dy - (x - mean) q) (see batchnorm2d_backward_dx).
struct DxCoefficients {
  double k, mean_dy, q;
};
inline DxCoefficients dx_coefficients(double invstd, const float* gamma, int64_t c, double sum_dy,
                                      double sum_dy_xhat, double M, bool batch_stats) {
  return {invstd * (gamma ? gamma[c] : 1.0f), batch_stats ? sum_dy / M : 0.0,
          batch_stats ? invstd * sum_dy_xhat / M : 0.0};
}

// dx over one run of values of a channel. Without batch_stats x plays no part
// but the fused ReLU's (and an infinite x must not turn dx into NaN). relu as
// in nchw_grad_sums.
inline void dx_run(float* __restrict d, const float* __restrict g, const float* __restrict xp,
                   const ScaleShift* relu, DxCoefficients k, double m, int64_t n, bool batch_stats) {
  const SplitMean sm(m);
  const float kk = float(k.k), mdy = float(k.mean_dy), q = float(k.q);
  const float sc = relu ? relu->scale : 0.0f, sh = relu ? relu->shift : 0.0f;
  if (relu && batch_stats)
    for (int64_t i = 0; i < n; ++i) {
      const float xc = sm.centre(xp[i]);
      d[i] = kk * (relu_masked(g[i], bn_value(xc, sc, sh)) - mdy - xc * q);
    }
  else if (relu)
    for (int64_t i = 0; i < n; ++i) d[i] = kk * relu_masked(g[i], bn_value(sm.centre(xp[i]), sc, sh));
  else if (batch_stats)
    for (int64_t i = 0; i < n; ++i) d[i] = kk * (g[i] - mdy - sm.centre(xp[i]) * q);
  else
    for (int64_t i = 0; i < n; ++i) d[i] = kk * g[i];
}

// The NHWC bodies of batchnorm2d_stats, _forward, _backward_reduce and _backward_dx.
void nhwc_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, VarianceMethod method);
void nhwc_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                  const float* beta, int64_t N, int64_t C, int64_t HW, bool relu);
void nhwc_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x, const double* mean,
                          const double* invstd, int64_t N, int64_t C, int64_t HW, bool relu, const float* gamma,
                          const float* beta);
void nhwc_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                      const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                      int64_t C, int64_t HW, bool batch_stats, bool relu, const float* beta);

}  // namespace norma::nn::fast::NORMA_ISA
