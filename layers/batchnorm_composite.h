// BatchNorm2d composed from primitive ops (mean, sub, mul, rsqrt, add), so that
// autograd derives its backward. The oracle for the fused batch_norm2d and the
// formula written out one step per line: read this before batchnorm2d.cpp.
//
// Per channel c, reducing over the M = N*H*W values of that channel
// (dims {0, 2, 3} for NCHW, {0, 1, 2} for NHWC; kept as size-1 dims so every
// per-channel tensor broadcasts against x):
//   mu      = mean(x)                            (batch) or running_mean
//   var     = mean((x - mu)^2)                   (two-pass, biased)
//           = max(0, mean(x^2) - mu^2)           (one-pass, BrainPy)
//                                                or running_var
//   invstd  = rsqrt(var + eps)
//   xhat    = (x - mu) * invstd
//   y       = xhat * gamma + beta                (affine; gamma, beta detached when !affine_grad)
// With batch statistics and args.momentum = p >= 0 the running buffers are
// updated in place, outside the graph:
//   running_mean <- (1 - p) running_mean + p mu
//   running_var  <- (1 - p) running_var  + p var * M / (M - 1)   (unbiased; biased: p var)
//
// The backward is whatever autograd derives through mean, sub, mul and rsqrt:
// with batch statistics dx gets three paths (through x - mu, through mu and
// through var) which sum to the closed form of the fused kernel,
//   dx = invstd * gamma * (dy - sum(dy)/M - xhat * sum(dy * xhat)/M);
// with running statistics mu and var are constants and dx = dy * gamma * invstd.
//
// Agreement with the fused op (tests/bn_composite_test.cpp): about 1e-6
// relative. The fused kernel accumulates in double and rounds once; here every
// intermediate (x - mu, its square, var, invstd, xhat, y) is a float32 tensor,
// and the gradient's three paths are summed in float32, so each adds a rounding
// of u = 2^-24 ~ 6e-8 and dx, where the three terms nearly cancel, carries an
// absolute error of a few 1e-7 times the scale of dy * gamma * invstd. Two
// inputs cost digits here and not in the fused op: mu rounded to float32
// shifts xhat by u |mu| / std (so |mean| >> std, e.g. 1e4 vs 1, is the fused
// kernel's job), and one-pass variance cancels, losing u E[x^2] / var.
// It also costs about ten passes over x and as many temporaries: a teaching
// and testing tool, not the training path.
#pragma once
#include "batchnorm2d.h"

namespace norma::nn {

// Same arguments, semantics and errors as batch_norm2d (batchnorm2d.h):
// x (N, C, H, W) or (N, H, W, C) per args.layout; weight, bias (C) or
// undefined (affine off); running_mean, running_var (C), read when
// !args.use_batch_stats and updated when args.use_batch_stats && args.momentum >= 0.
// With args.inplace the result is copied over x and x is returned.
Tensor batch_norm2d_composite(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                              const Tensor& running_var, const BatchNormArgs& args);

}  // namespace norma::nn
