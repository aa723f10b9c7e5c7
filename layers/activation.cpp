#include "activation.h"

#include "../core/autograd.h"
#include "../core/iter.h"

namespace norma::nn {

Tensor ReLU::forward(const Tensor& x) {
  // Out of place when autograd needs the input or x is a strided view (or
  // undefined, which relu reports).
  if (!inplace || !x.defined() || autograd::needs_grad({x}) || !x.is_contiguous()) return relu(x);
  // n is read once: numel() in the loop's condition was recomputed (with its
  // overflow checks) per element and kept the loop from vectorising; it was a
  // quarter of `norma eval`'s time (perf).
  float* p = x.data_ptr();
  const int64_t n = x.numel();
#pragma omp parallel for schedule(static) if (n >= detail::kParallelGrain)  // as relu's
  for (int64_t i = 0; i < n; ++i) p[i] = p[i] > 0 ? p[i] : 0.0f;
  x.storage()->version++;  // an in-place write
  return x;
}

}  // namespace norma::nn
