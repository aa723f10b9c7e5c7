#include "activation.h"

#include "../core/autograd.h"

namespace norma::nn {

Tensor ReLU::forward(const Tensor& x) {
  // Out of place when autograd needs the input or x is a strided view (or
  // undefined, which relu reports).
  if (!inplace || !x.defined() || autograd::needs_grad({x}) || !x.is_contiguous()) return relu(x);
  float* p = x.data_ptr();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = p[i] > 0 ? p[i] : 0.0f;
  x.storage()->version++;  // an in-place write
  return x;
}

}  // namespace norma::nn
