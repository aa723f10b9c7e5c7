// gradcheck: compares autograd's gradients with central finite differences.
//
// With a random upstream gradient r, the scalar L(x) = sum(fn(x) * r) is
// evaluated in double at x_j +/- eps for every element j of every input that
// requires grad; (L+ - L-) / (2 eps) is the numeric d L / d x_j and is compared
// with the analytic gradient from one backward pass. Norma computes in
// float32, so eps defaults to 1e-2 and tolerances are set for float32.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "tensor.h"

namespace norma {

struct GradcheckOptions {
  double eps = 1e-2;    // perturbation (the exact float step taken is used in the quotient)
  double atol = 1e-3;   // pass when |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-2;
  uint64_t seed = 1234;  // for the upstream gradient r; the global generator is not touched
};

struct GradcheckResult {
  bool ok = true;
  // The worst element (largest error relative to its tolerance).
  int64_t input = -1;   // which input
  int64_t index = -1;   // flat index into it
  double analytic = 0, numeric = 0;
  double max_abs_error = 0;  // over all elements
  std::string message;       // what failed and where, or a summary when ok
};

// `fn` maps the inputs to one output tensor. Inputs that require grad are
// checked; the others are passed through unchanged. fn must be deterministic.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace norma
