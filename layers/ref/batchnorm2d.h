// BatchNorm2d's reference kernels: plain loops that define what the fast
// kernels (layers/fast/batchnorm2d.h, same signatures) must compute, and the
// float arithmetic every kernel shares. The formulas: layers/batchnorm2d.h.
//
// N batch, C channels, HW = H*W positions; M = N*HW values per channel. NCHW
// puts value i of channel c of image n at (n*C + c)*HW + i, NHWC at
// (n*HW + i)*C + c. Sums are in double; mean and invstd are double (C each).
// gamma/beta null mean 1/0. relu fuses a ReLU after the normalisation:
// y = max(bn(x), 0), a NaN giving 0 as relu does; in the backward dy counts
// only where that output was positive, recomputed from x, gamma and beta.
#pragma once
#include <cstdint>

#include "../batchnorm_options.h"

namespace norma::nn {

// ---- the float arithmetic of a normalised value, shared by every kernel
// (and by BatchNorm2d::eval_affine for fusions that must repeat it to the bit).

// mean as hi + lo, hi its float rounding: then (x - hi) - lo is x - mean to
// float precision in float arithmetic, where a plain x - float(mean) would
// lose log2(|mean| / std) bits (x - hi is exact when x is within a factor 2
// of hi). The passes over the values run in float with it, twice the lanes of
// double, and still keep |mean| >> std (1e4 +- 1) float32-accurate.
struct SplitMean {
  float hi, lo;
  explicit SplitMean(double m) : hi(float(m)), lo(float(m - double(float(m)))) {}
  float centre(float x) const { return (x - hi) - lo; }
};

// One normalised value from x - mean (xc): every kernel goes through this, so
// that the fused ReLU's backward, which recomputes the forward's output to
// find where it was positive, gets the same float arithmetic to the bit
// (whether the compiler fuses the multiply and add into one instruction).
inline float bn_value(float xc, float scale, float shift) { return xc * scale + shift; }

// A channel's scale and shift as the forward uses them. The fused ReLU's
// backward recomputes the forward's output r = bn_value(x - mean, scale, shift)
// from x, which it reads anyway, instead of reading r back from memory: one
// tensor less in each pass. beta null is 0.
struct ScaleShift {
  float scale, shift;
};
inline ScaleShift scale_shift(const double* invstd, const float* gamma, const float* beta, int64_t c) {
  return {float(invstd[c] * (gamma ? gamma[c] : 1.0f)), beta ? beta[c] : 0.0f};
}

namespace ref {

// Batch statistics of each channel (biased var), two passes or BrainPy's one.
void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method);
// y = (x - mean) * invstd * gamma + beta. y may be x (in place).
void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout, bool relu = false);
// The training forward: batchnorm2d_stats, invstd = 1 / sqrt(var + eps), batchnorm2d_forward.
void batchnorm2d_forward_train(float* y, double* mean, double* var, double* invstd, const float* x, const float* gamma,
                               const float* beta, double eps, int64_t N, int64_t C, int64_t HW, Layout layout,
                               VarianceMethod method, bool relu = false);
// The backward in two halves (what SyncBatchNorm all-reduces in between): the
// two reductions per channel, sum_dy = sum(dy) and sum_dy_xhat = sum(dy * xhat),
// then dx = invstd * gamma * (dy - sum_dy/M - xhat * sum_dy_xhat/M) with M
// values behind the statistics (dx = dy * gamma * invstd without batch_stats:
// the statistics were constants).
void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout, bool relu = false, const float* gamma = nullptr,
                                 const float* beta = nullptr);
void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats, bool relu = false,
                             const float* beta = nullptr);
// Both halves: dx (may be null), dgamma = sum_dy_xhat and dbeta = sum_dy (may be null).
void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats, bool relu = false, const float* beta = nullptr);

// With a 2x2, stride-2 max pool after the normalisation (and the ReLU), NCHW,
// x (N, C, H, W): y (N, C, H/2, W/2) is max_pool2d of the normalised values
// and arg (same shape) the max's place in its window (0-3, row by row; ties
// keep the first, a NaN wins, as max_of_window in pooling.h). The backward
// takes dy (N, C, H/2, W/2) back through the pool, then the backward above.
void batchnorm2d_pool_forward(float* y, int32_t* arg, const float* x, const double* mean, const double* invstd,
                              const float* gamma, const float* beta, int64_t N, int64_t C, int64_t H, int64_t W,
                              bool relu);
void batchnorm2d_pool_forward_train(float* y, int32_t* arg, double* mean, double* var, double* invstd, const float* x,
                                    const float* gamma, const float* beta, double eps, int64_t N, int64_t C, int64_t H,
                                    int64_t W, VarianceMethod method, bool relu);
void batchnorm2d_pool_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const int32_t* arg,
                               const float* x, const double* mean, const double* invstd, const float* gamma,
                               const float* beta, int64_t N, int64_t C, int64_t H, int64_t W, bool batch_stats,
                               bool relu);

}  // namespace ref
}  // namespace norma::nn
