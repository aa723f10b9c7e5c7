// SGD: the update kernel and the optimizer around it.
#include "sgd.h"

#include <cmath>

namespace norma::optim {

void sgd_update(float* param, const float* grad, float* buf, int64_t n, double lr, double momentum,
                double dampening, double weight_decay, bool nesterov, bool first_step) {
  // The scalars as ATen sees them: Python floats rounded to float once.
  const float wd = float(weight_decay), mom = float(momentum), keep = float(1.0 - dampening), neg_lr = float(-lr);
  for (int64_t i = 0; i < n; ++i) {
    float d = grad[i];
    if (weight_decay != 0) d = std::fma(wd, param[i], d);
    if (momentum != 0) {
      buf[i] = first_step ? d : std::fma(keep, d, buf[i] * mom);
      d = nesterov ? std::fma(mom, buf[i], d) : buf[i];
    }
    param[i] = std::fma(neg_lr, d, param[i]);
  }
}

namespace {
ParamGroup sgd_defaults(double lr, double momentum, double dampening, double weight_decay, bool nesterov) {
  ParamGroup d;
  d.lr = lr;
  d.weight_decay = weight_decay;
  d.momentum = momentum;
  d.dampening = dampening;
  d.nesterov = nesterov;
  return d;
}
}  // namespace

SGD::SGD(std::vector<Tensor> params, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov)
    : SGD(single_group(std::move(params)), lr, momentum, dampening, weight_decay, nesterov) {}

SGD::SGD(std::vector<ParamGroup> groups, double lr, double momentum, double dampening, double weight_decay,
         bool nesterov)
    : Optimizer("SGD", std::move(groups), sgd_defaults(lr, momentum, dampening, weight_decay, nesterov)) {
  validate_groups();
}

std::vector<std::string> SGD::state_names(const ParamGroup& g) const {
  if (*g.momentum == 0) return {};
  return {"momentum_buffer"};
}

void SGD::update(const ParamGroup& g, const Tensor& param, const Tensor& grad, ParamState& s, bool fresh) {
  float* buf = s.buffers.empty() ? nullptr : s.buffers[0].data_ptr();
  sgd_update(param.data_ptr(), grad.data_ptr(), buf, param.numel(), *g.lr, *g.momentum, *g.dampening,
             *g.weight_decay, *g.nesterov, fresh);
}

void SGD::validate(const ParamGroup& g, const std::string& where) const {
  check_nonnegative(where, "lr", *g.lr);
  check_nonnegative(where, "momentum", *g.momentum);
  check_nonnegative(where, "weight_decay", *g.weight_decay);
  if (!std::isfinite(*g.dampening)) fail("SGD: {}dampening {} must be finite", where, *g.dampening);
  if (*g.nesterov && (*g.momentum <= 0 || *g.dampening != 0))
    fail("SGD: {}nesterov needs momentum > 0 and dampening 0, got momentum {} and dampening {}", where, *g.momentum,
         *g.dampening);
}

}  // namespace norma::optim
