#include "linear.h"

#include <cmath>

#include "../core/ops.h"
#include "init.h"

namespace norma::nn {

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  if (!x.defined() || !weight.defined()) fail("linear: input and weight must be defined tensors");
  if (weight.dim() != 2) fail("linear: weight must be 2-D (out, in), got {}", weight.shape());
  if (x.dim() < 1 || x.size(-1) != weight.size(1))
    fail("linear: input {} has {} features in its last dim but weight {} expects {}", x.shape(),
         x.dim() ? x.size(-1) : 0, weight.shape(), weight.size(1));
  if (bias.defined() && bias.shape() != Shape{weight.size(0)})
    fail("linear: bias {} does not match weight {} (expected ({},))", bias.shape(), weight.shape(), weight.size(0));
  // Leading dims are folded into one batch dim for the matmul.
  Shape out_shape = x.shape();
  out_shape.back() = weight.size(0);
  Tensor x2 = x.dim() == 2 ? x : x.reshape({-1, x.size(-1)});
  Tensor y = matmul(x2, weight.t());
  if (bias.defined()) y = y + bias;
  return x.dim() == 2 ? y : y.reshape(out_shape);
}

Linear::Linear(int64_t in, int64_t out, bool with_bias) : in_features(in), out_features(out) {
  if (in <= 0 || out <= 0) fail("Linear: in_features {} and out_features {} must be positive", in, out);
  weight = register_parameter("weight", empty({out, in}));
  if (with_bias) bias = register_parameter("bias", empty({out}));
  reset_parameters();
}

void Linear::reset_parameters() {
  init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    double bound = 1.0 / std::sqrt(double(in_features));
    init::uniform_(bias, -bound, bound);
  }
}

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features, out_features, bias.defined());
}

}  // namespace norma::nn
