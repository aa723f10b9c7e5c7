// Shape-only and activation modules: ReLU and Flatten.
#pragma once
#include "../core/ops.h"
#include "module.h"

namespace norma::nn {

// ReLU. With inplace=true the input is overwritten when no gradient is
// needed (eval, NoGradGuard); when autograd must see the input, it computes
// out of place, because Norma does not record in-place ops in the graph.
class ReLU : public Module {
 public:
  explicit ReLU(bool inplace = false) : inplace(inplace) {}
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "ReLU"; }
  std::string extra_repr() const override { return inplace ? "inplace=True" : ""; }
  bool inplace;
};

// Flatten dims start_dim..end_dim into one (PyTorch's default keeps the batch dim).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor forward(const Tensor& x) override { return x.flatten(start_dim, end_dim); }
  std::string name() const override { return "Flatten"; }
  std::string extra_repr() const override { return fmt::format("start_dim={}, end_dim={}", start_dim, end_dim); }
  int64_t start_dim, end_dim;
};

}  // namespace norma::nn
