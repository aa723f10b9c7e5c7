// Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), as PyTorch
// 1.13's single-tensor paths, step for step. With t the parameter's step count:
//
//   Adam:  g = g + weight_decay * p              L2 penalty added to the gradient
//   AdamW: p = p * (1 - lr * weight_decay)       decoupled weight decay
//   m = beta1 * m + (1 - beta1) * g
//   v = beta2 * v + (1 - beta2) * g * g
//   amsgrad: v_max = max(v_max, v), used for v below
//   step_size = lr / (1 - beta1^t)                in double, like the Python side
//   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
//   p = p - step_size * m / denom
//
// Tensors are float32; each `a + s * b` is one fused multiply-add, as ATen's
// add_ and addcmul_ compute them.
#pragma once
#include <utility>

#include "optimizer.h"

namespace norma::optim {

// The update of n contiguous floats. max_exp_avg_sq is null unless amsgrad;
// `decoupled` selects AdamW's weight decay; step counts from 1.
void adam_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, float* max_exp_avg_sq,
                 int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                 int64_t step);

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
       double eps = 1e-8, double weight_decay = 0, bool amsgrad = false);
  // Options a group leaves unset take these values.
  Adam(std::vector<ParamGroup> groups, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
       double eps = 1e-8, double weight_decay = 0, bool amsgrad = false);

 protected:
  Adam(bool decoupled, std::vector<ParamGroup> groups, double lr, std::pair<double, double> betas, double eps,
       double weight_decay, bool amsgrad);
  std::vector<std::string> state_names(const ParamGroup& g) const override;
  void update(const ParamGroup& g, const Tensor& param, const Tensor& grad, ParamState& s, bool fresh) override;
  void validate(const ParamGroup& g, const std::string& where) const override;

 private:
  bool decoupled_;
};

// Adam with decoupled weight decay (default 1e-2, as PyTorch).
class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
        double eps = 1e-8, double weight_decay = 1e-2, bool amsgrad = false);
  AdamW(std::vector<ParamGroup> groups, double lr = 1e-3, std::pair<double, double> betas = {0.9, 0.999},
        double eps = 1e-8, double weight_decay = 1e-2, bool amsgrad = false);
};

}  // namespace norma::optim
