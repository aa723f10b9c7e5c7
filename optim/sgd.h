// SGD with momentum, dampening, L2 weight decay and Nesterov momentum, as
// PyTorch 1.13's torch.optim.SGD (its single-tensor path), step for step:
//
//   d = g + weight_decay * p
//   if momentum != 0:
//     buf = d                                     on the parameter's first step
//     buf = momentum * buf + (1 - dampening) * d  on later steps
//     d = nesterov ? d + momentum * buf : buf
//   p = p - lr * d
//
// in float32, each `a + s * b` one fused multiply-add, as ATen's add_(b, alpha=s)
// computes it. Nesterov needs momentum > 0 and dampening 0.
#pragma once
#include "optimizer.h"

namespace norma::optim {

// The update of n contiguous floats. buf (the momentum buffer) is unused when
// momentum is 0; on the first step it is overwritten with d.
void sgd_update(float* param, const float* grad, float* buf, int64_t n, double lr, double momentum,
                double dampening, double weight_decay, bool nesterov, bool first_step);

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0,
      bool nesterov = false);
  // Options a group leaves unset take these values.
  SGD(std::vector<ParamGroup> groups, double lr, double momentum = 0, double dampening = 0, double weight_decay = 0,
      bool nesterov = false);

 protected:
  std::vector<std::string> state_names(const ParamGroup& g) const override;
  void update(const ParamGroup& g, const Tensor& param, const Tensor& grad, ParamState& s, bool fresh) override;
  void validate(const ParamGroup& g, const std::string& where) const override;
};

}  // namespace norma::optim
