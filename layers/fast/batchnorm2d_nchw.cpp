// The fast BatchNorm2d kernels (fast/batchnorm2d.h): the NCHW bodies, and
// each kernel's entry point, which hands NHWC to batchnorm2d_nhwc.cpp. NCHW
// puts channel c of image n at (n*C + c)*HW: threads take whole channels (or
// planes), and training goes a channel at a time while it is in cache.
#include "batchnorm2d.h"

#include <cmath>
#include <vector>

#include "batchnorm2d_passes.h"

namespace norma::nn::fast::NORMA_ISA {

void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method) {
  if (layout == Layout::NHWC) return nhwc_stats(mean, var, x, N, C, HW, method);
  // Threads over channels, each channel's passes one after the other.
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) nchw_channel_stats(mean[c], var[c], x, c, N, C, HW, method);
}

void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout, bool relu) {
  // y = (x - mean) * scale + shift with scale = gamma * invstd and shift = beta,
  // x - mean through SplitMean so |mean| >> std loses nothing.
  if (layout == Layout::NHWC) return nhwc_forward(y, x, mean, invstd, gamma, beta, N, C, HW, relu);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    const double scale = invstd[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    normalize_run(y + p * HW, x + p * HW, mean[c], scale, shift, HW, relu);
  }
}

void batchnorm2d_forward_train(float* y, double* mean, double* var, double* invstd, const float* x, const float* gamma,
                               const float* beta, double eps, int64_t N, int64_t C, int64_t HW, Layout layout,
                               VarianceMethod method, bool relu) {
  if (layout == Layout::NHWC) {  // a channel is every C-th float: nothing to gain from going channel by channel
    batchnorm2d_stats(mean, var, x, N, C, HW, layout, method);
    for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    batchnorm2d_forward(y, x, mean, invstd, gamma, beta, N, C, HW, layout, relu);
    return;
  }
  // NCHW, a channel at a time: its statistics, then its normalisation while its
  // planes are still in L2 (a channel of a (128, 64, 32, 32) batch is 512 KiB),
  // so x comes from memory once where the two kernels one after the other read it
  // three times.
  const bool stream = streams(N * C * HW);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    nchw_channel_stats(mean[c], var[c], x, c, N, C, HW, method);
    invstd[c] = 1.0 / std::sqrt(var[c] + eps);
    const double scale = invstd[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t o = (n * C + c) * HW;
      stream_run(y + o, HW, stream, [&](float* out, int64_t i, int64_t len) {
        normalize_run(out, x + o + i, mean[c], scale, shift, len, relu);
      });
    }
    if (stream) stream_fence();
  }
}

void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout, bool relu, const float* gamma, const float* beta) {
  if (layout == Layout::NHWC)
    return nhwc_backward_reduce(sum_dy, sum_dy_xhat, dy, x, mean, invstd, N, C, HW, relu, gamma, beta);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    const ScaleShift fr = scale_shift(invstd, gamma, beta, c);
    nchw_grad_sums(sum_dy[c], sum_dy_xhat[c], TensorPlanes{dy, c, N, C, HW}, x, relu ? &fr : nullptr, mean[c], c,
                   N, C, HW);
    sum_dy_xhat[c] *= invstd[c];
  }
}

void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats, bool relu, const float* beta) {
  // One pass: dx = k (dy - sum_dy/M - xhat sum_dy_xhat/M) with k = invstd * gamma and
  // xhat = (x - mean) invstd, or dx = k dy when the statistics were constants.
  // Per channel: dx = k (dy - mean_dy - (x - mean) q) with q = invstd sum_dy_xhat / M.
  if (layout == Layout::NHWC)
    return nhwc_backward_dx(dx, dy, x, mean, invstd, gamma, sum_dy, sum_dy_xhat, M, N, C, HW, batch_stats, relu,
                            beta);
  std::vector<DxCoefficients> k(C);
  std::vector<ScaleShift> fr(C);
  for (int64_t c = 0; c < C; ++c) {
    k[c] = dx_coefficients(invstd[c], gamma, c, sum_dy[c], sum_dy_xhat[c], M, batch_stats);
    fr[c] = scale_shift(invstd, gamma, beta, c);
  }
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t p = 0; p < N * C; ++p) {
    const int64_t c = p % C;
    dx_run(dx + p * HW, dy + p * HW, x + p * HW, relu ? &fr[c] : nullptr, k[c], mean[c], HW, batch_stats);
  }
}

void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats, bool relu, const float* beta) {
  const double M = double(N * HW);
  if (layout == Layout::NCHW && dx) {
    // A channel at a time, as batchnorm2d_forward_train: its two sums, then its
    // dx while its planes of dy and x are still in L2, the images in reverse
    // (the last read are the likeliest still there: a channel of (128, 32, 32,
    // 32)'s dy and x is 1 MiB, an L2's size).
    const bool stream = streams(N * C * HW);
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t c = 0; c < C; ++c) {
      double sum_dy, sum_dy_xhat;
      const ScaleShift fr = scale_shift(invstd, gamma, beta, c);
      nchw_grad_sums(sum_dy, sum_dy_xhat, TensorPlanes{dy, c, N, C, HW}, x, relu ? &fr : nullptr, mean[c], c, N, C,
                     HW);
      sum_dy_xhat *= invstd[c];
      if (dbeta) dbeta[c] = float(sum_dy);
      if (dgamma) dgamma[c] = float(sum_dy_xhat);
      const DxCoefficients k = dx_coefficients(invstd[c], gamma, c, sum_dy, sum_dy_xhat, M, batch_stats);
      for (int64_t n = N - 1; n >= 0; --n) {
        const int64_t o = (n * C + c) * HW;
        stream_run(dx + o, HW, stream, [&](float* out, int64_t i, int64_t len) {
          dx_run(out, dy + o + i, x + o + i, relu ? &fr : nullptr, k, mean[c], len, batch_stats);
        });
      }
      if (stream) stream_fence();
    }
    return;
  }
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dy, x, mean, invstd, N, C, HW, layout, relu, gamma,
                              beta);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(sum_dy[c]);
    if (dgamma) dgamma[c] = float(sum_dy_xhat[c]);
  }
  if (dx)
    batchnorm2d_backward_dx(dx, dy, x, mean, invstd, gamma, sum_dy.data(), sum_dy_xhat.data(), M, N, C, HW, layout,
                            batch_stats, relu, beta);
}

}  // namespace norma::nn::fast::NORMA_ISA
