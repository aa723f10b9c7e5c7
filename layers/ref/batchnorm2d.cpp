// BatchNorm2d's reference kernels: each channel's values in a plain loop,
// sums in double, the elementwise arithmetic in float through SplitMean,
// scale_shift and bn_value exactly as the fast kernels round it.
#include "batchnorm2d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pool2d.h"  // max_of_window

namespace norma::nn::ref {

namespace {

// Where value i (0 <= i < HW) of channel c of image n is.
int64_t at(int64_t n, int64_t c, int64_t i, int64_t C, int64_t HW, Layout layout) {
  return layout == Layout::NCHW ? (n * C + c) * HW + i : (n * HW + i) * C + c;
}

// f(j) for the index j of each of channel c's M values, image by image.
template <class F>
void each_value(int64_t c, int64_t N, int64_t C, int64_t HW, Layout layout, F f) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < HW; ++i) f(at(n, c, i, C, HW, layout));
}

// The fused ReLU forward: max(v, 0), a NaN giving 0 (NaN > 0 is false).
float relu_value(float v) { return v > 0 ? v : 0.0f; }

// The fused ReLU backward: g where the forward's output r was positive, else
// 0 (also for a NaN g, as ReLU's own backward gives).
float relu_grad(float g, float r) { return r > 0 ? g : 0.0f; }

}  // namespace

void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method) {
  const double M = double(N * HW);
#pragma omp parallel for
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0, sum2 = 0;
    each_value(c, N, C, HW, layout, [&](int64_t j) { sum += x[j]; });
    mean[c] = sum / M;
    if (method == VarianceMethod::two_pass) {  // squared deviations from the mean
      each_value(c, N, C, HW, layout, [&](int64_t j) {
        const double d = x[j] - mean[c];
        sum2 += d * d;
      });
      var[c] = sum2 / M;
    } else {  // BrainPy: E[x^2] - E[x]^2, clamped at 0
      each_value(c, N, C, HW, layout, [&](int64_t j) { sum2 += double(x[j]) * x[j]; });
      var[c] = std::max(0.0, sum2 / M - mean[c] * mean[c]);
    }
  }
}

void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout, bool relu) {
#pragma omp parallel for
  for (int64_t c = 0; c < C; ++c) {
    const SplitMean sm(mean[c]);
    const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
    each_value(c, N, C, HW, layout, [&](int64_t j) {
      const float v = bn_value(sm.centre(x[j]), ss.scale, ss.shift);
      y[j] = relu ? relu_value(v) : v;
    });
  }
}

void batchnorm2d_forward_train(float* y, double* mean, double* var, double* invstd, const float* x, const float* gamma,
                               const float* beta, double eps, int64_t N, int64_t C, int64_t HW, Layout layout,
                               VarianceMethod method, bool relu) {
  batchnorm2d_stats(mean, var, x, N, C, HW, layout, method);
  for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  batchnorm2d_forward(y, x, mean, invstd, gamma, beta, N, C, HW, layout, relu);
}

void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout, bool relu, const float* gamma, const float* beta) {
  // sum(dy * xhat) = invstd * sum(dy * (x - mean)), x - mean formed per value
  // (sum(dy * x) - mean * sum(dy) would cancel when |mean| >> std).
#pragma omp parallel for
  for (int64_t c = 0; c < C; ++c) {
    const SplitMean sm(mean[c]);
    const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
    double a = 0, b = 0;
    each_value(c, N, C, HW, layout, [&](int64_t j) {
      const float g = relu ? relu_grad(dy[j], bn_value(sm.centre(x[j]), ss.scale, ss.shift)) : dy[j];
      a += g, b += g * (x[j] - mean[c]);
    });
    sum_dy[c] = a, sum_dy_xhat[c] = b * invstd[c];
  }
}

void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats, bool relu, const float* beta) {
  // dx = k (dy - mean_dy - (x - mean) q) with k = invstd gamma, mean_dy = sum_dy / M,
  // q = invstd sum_dy_xhat / M: the constants in double, rounded to float once.
  // With fixed statistics dx = k dy, x not read but by the fused ReLU (an
  // infinite x must not turn dx into NaN).
#pragma omp parallel for
  for (int64_t c = 0; c < C; ++c) {
    const SplitMean sm(mean[c]);
    const ScaleShift ss = scale_shift(invstd, gamma, beta, c);
    const float k = float(invstd[c] * (gamma ? gamma[c] : 1.0f));
    const float mean_dy = batch_stats ? float(sum_dy[c] / M) : 0.0f;
    const float q = batch_stats ? float(invstd[c] * sum_dy_xhat[c] / M) : 0.0f;
    each_value(c, N, C, HW, layout, [&](int64_t j) {
      const float g = relu ? relu_grad(dy[j], bn_value(sm.centre(x[j]), ss.scale, ss.shift)) : dy[j];
      dx[j] = batch_stats ? k * (g - mean_dy - sm.centre(x[j]) * q) : k * g;
    });
  }
}

void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats, bool relu, const float* beta) {
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dy, x, mean, invstd, N, C, HW, layout, relu, gamma,
                              beta);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(sum_dy[c]);
    if (dgamma) dgamma[c] = float(sum_dy_xhat[c]);
  }
  if (dx)
    batchnorm2d_backward_dx(dx, dy, x, mean, invstd, gamma, sum_dy.data(), sum_dy_xhat.data(), double(N * HW), N, C,
                            HW, layout, batch_stats, relu, beta);
}

// ---- with a 2x2 max pool: the kernels above on the full-size values, and the
// pool between them and the caller. A last odd row or column is in no window.

void batchnorm2d_pool_forward(float* y, int32_t* arg, const float* x, const double* mean, const double* invstd,
                              const float* gamma, const float* beta, int64_t N, int64_t C, int64_t H, int64_t W,
                              bool relu) {
  const int64_t OH = H / 2, OW = W / 2;
  std::vector<float> t(size_t(N * C * H * W));  // the normalised values (through the ReLU)
  batchnorm2d_forward(t.data(), x, mean, invstd, gamma, beta, N, C, H * W, Layout::NCHW, relu);
#pragma omp parallel for
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const float* w = t.data() + (p * H + 2 * oh) * W + 2 * ow;
        const float v[4] = {w[0], w[1], w[W], w[W + 1]};
        const int64_t o = (p * OH + oh) * OW + ow;
        arg[o] = max_of_window(v, y[o]);
      }
}

void batchnorm2d_pool_forward_train(float* y, int32_t* arg, double* mean, double* var, double* invstd, const float* x,
                                    const float* gamma, const float* beta, double eps, int64_t N, int64_t C, int64_t H,
                                    int64_t W, VarianceMethod method, bool relu) {
  batchnorm2d_stats(mean, var, x, N, C, H * W, Layout::NCHW, method);
  for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  batchnorm2d_pool_forward(y, arg, x, mean, invstd, gamma, beta, N, C, H, W, relu);
}

void batchnorm2d_pool_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const int32_t* arg,
                               const float* x, const double* mean, const double* invstd, const float* gamma,
                               const float* beta, int64_t N, int64_t C, int64_t H, int64_t W, bool batch_stats,
                               bool relu) {
  // The pool's backward: each window's dy added into zeros at its max's place
  // (0 + dy: a -0 becomes +0, as in max_pool2d's backward), 0 elsewhere.
  const int64_t OH = H / 2, OW = W / 2;
  std::vector<float> g(size_t(N * C * H * W), 0.0f);
#pragma omp parallel for
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t o = (p * OH + oh) * OW + ow, a = arg[o];
        g[(p * H + 2 * oh + a / 2) * W + 2 * ow + a % 2] += dy[o];
      }
  batchnorm2d_backward(dx, dgamma, dbeta, g.data(), x, mean, invstd, gamma, N, C, H * W, Layout::NCHW, batch_stats,
                       relu, beta);
}

}  // namespace norma::nn::ref
