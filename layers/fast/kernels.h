// The fast kernels as the rest of Norma sees them: one table of entry points
// per copy (isa.h: each file here is compiled once per x86-64 ISA level), and
// kernels(), which picks the copy for kernel_policy() (core/kernel_policy.h).
// The ops' dispatch points (batchnorm2d_kernels(), conv2d_forward /
// conv2d_backward, max_pool2d) call through it. Built with NORMA_FAST_KERNELS
// only; conv2d.h, batchnorm2d.h and maxpool2x2.h document the kernels.
#pragma once
#include <cstdint>

#include "../../core/kernel_policy.h"
#include "../ref/conv2d.h"
#include "../ref/pool2d.h"

namespace norma::nn {
struct BatchNorm2dKernels;  // batchnorm2d_op.h
}

namespace norma::nn::fast {

struct Kernels {
  const BatchNorm2dKernels* batchnorm2d;
  void (*conv2d_im2col_forward)(float* y, const float* x, const float* w, const float* b, const ConvShape& s);
  void (*conv2d_im2col_backward)(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                 const ConvShape& s);
  int (*winograd_row_tile)(int64_t summed_channels);
  void (*conv2d_winograd_forward)(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                                  const ConvEpilogue* e);
  void (*conv2d_winograd_backward)(float* dx, float* dw, const float* dy, const float* x, const float* w,
                                   const ConvShape& s);
  void (*conv2d_direct_forward)(float* y, const float* x, const float* w, const float* b, const ConvShape& s,
                                const ConvEpilogue* e);
  void (*conv2d_direct_backward_weight)(float* dw, const float* dy, const float* x, const ConvShape& s);
  bool (*maxpool2x2_applies)(const PoolShape& s);
  void (*maxpool2x2_forward)(float* y, int32_t* arg, const float* x, const PoolShape& s);
  void (*maxpool2x2_backward)(float* dx, const float* dy, const int32_t* arg, const PoolShape& s);
};

// Each copy's table (table.cpp).
namespace baseline { const Kernels& table(); }
namespace avx2 { const Kernels& table(); }
namespace avx512 { const Kernels& table(); }

// The table for `isa` (automatic: cpu_isa()); kernels() for kernel_isa().
const Kernels& kernels(Isa isa);
const Kernels& kernels();

// conv2d_direct_forward's error for an epilogue it cannot apply, thrown from
// kernels.cpp: fail() is a template, and instantiated in a per-ISA file it
// would be compiled with that level's flags (isa.h).
[[noreturn]] void fail_direct_epilogue(int64_t OW);

}  // namespace norma::nn::fast
