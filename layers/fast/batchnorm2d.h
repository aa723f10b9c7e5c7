// BatchNorm2d's fast kernels: the reference kernels' signatures and results
// (layers/ref/batchnorm2d.h documents both), within float rounding of sums
// taken in another order, plus threads over channels or rows, 512-bit vectors,
// prefetches, streaming stores, and training a channel at a time while it is
// in cache. Built with NORMA_FAST_KERNELS only.
#pragma once
#include <cstdint>

#include "../batchnorm_options.h"
#include "isa.h"

namespace norma::nn::fast::NORMA_ISA {

void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method);
void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout, bool relu = false);
void batchnorm2d_forward_train(float* y, double* mean, double* var, double* invstd, const float* x, const float* gamma,
                               const float* beta, double eps, int64_t N, int64_t C, int64_t HW, Layout layout,
                               VarianceMethod method, bool relu = false);
void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout, bool relu = false, const float* gamma = nullptr,
                                 const float* beta = nullptr);
void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats, bool relu = false,
                             const float* beta = nullptr);
void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats, bool relu = false, const float* beta = nullptr);

// With the 2x2 max pool (NCHW).
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

}  // namespace norma::nn::fast::NORMA_ISA
