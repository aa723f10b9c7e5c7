// nn::Linear: y = x W^T + b over the last dim of x.
// W (out_features, in_features) and b (out_features) start as PyTorch's:
// U(-1/sqrt(in), 1/sqrt(in)). The backward comes from matmul's (dx = dy W,
// dW = dy^T x) and add's (db = sum of dy over the batch).
#pragma once
#include "module.h"

namespace norma::nn {

// Functional form: x (..., in) -> (..., out); bias may be undefined.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias);

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override { return linear(x, weight, bias); }
  void reset_parameters();
  std::string name() const override { return "Linear"; }
  std::string extra_repr() const override;

  int64_t in_features, out_features;
  Tensor weight;  // (out_features, in_features)
  Tensor bias;    // (out_features), undefined without bias
};

}  // namespace norma::nn
