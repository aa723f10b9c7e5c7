// Which kernels the op batch_norm2d (batchnorm2d.h) runs: the reference ones
// (ref/batchnorm2d.h) or the fast ones (fast/batchnorm2d.h), as a table with
// the same signatures, picked at one dispatch point from kernel_policy().
#pragma once
#include "ref/batchnorm2d.h"

namespace norma::nn {

struct BatchNorm2dKernels {
  decltype(&ref::batchnorm2d_stats) stats;
  decltype(&ref::batchnorm2d_forward) forward;
  // stats, invstd, then forward: the fast NCHW kernel does it a channel at a time.
  decltype(&ref::batchnorm2d_forward_train) forward_train;
  decltype(&ref::batchnorm2d_backward) backward;
  decltype(&ref::batchnorm2d_backward_reduce) backward_reduce;
  decltype(&ref::batchnorm2d_backward_dx) backward_dx;
  decltype(&ref::batchnorm2d_pool_forward) pool_forward;
  decltype(&ref::batchnorm2d_pool_forward_train) pool_forward_train;
  decltype(&ref::batchnorm2d_pool_backward) pool_backward;
};

// The reference kernels; the fast ones, or null in a build without them
// (-DNORMA_FAST_KERNELS=OFF). Tests hold the two equal.
const BatchNorm2dKernels& batchnorm2d_reference_kernels();
const BatchNorm2dKernels* batchnorm2d_fast_kernels();

// The dispatch point: the fast kernels when kernel_policy().fast, else the
// reference ones. batch_norm2d asks once per call, and its backward runs the
// table its forward ran.
const BatchNorm2dKernels& batchnorm2d_kernels();

}  // namespace norma::nn
