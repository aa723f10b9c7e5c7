// The fast max pool for the CNN case, 2x2 windows with stride 2 and no
// padding, beside the reference it must equal (ref::maxpool2d_forward /
// backward; tests/pooling_test.cpp holds them equal). max_pool2d
// (layers/pooling.cpp) chooses it. Built only with NORMA_FAST_KERNELS.
#pragma once
#include <cstdint>

#include "../ref/pool2d.h"
#include "isa.h"

namespace norma::nn::fast::NORMA_ISA {

// Whether s is that case.
bool maxpool2x2_applies(const PoolShape& s);
// The same choice as the reference (ties keep the first maximum, a NaN wins),
// but the argmax is kept as its place in the window (0-3, row by row), an
// int32, where the reference keeps an int64 offset in the plane.
void maxpool2x2_forward(float* y, int32_t* arg, const float* x, const PoolShape& s);
// dx is overwritten.
void maxpool2x2_backward(float* dx, const float* dy, const int32_t* arg, const PoolShape& s);

}  // namespace norma::nn::fast::NORMA_ISA
