// Adam and AdamW: the update kernel and the optimizers around it.
#include "adam.h"

#include <cmath>

namespace norma::optim {

void adam_update(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, float* max_exp_avg_sq,
                 int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                 int64_t step) {
  // Bias corrections and step size in double, then every scalar rounded to
  // float once, as ATen receives them from Python.
  const double bias_correction1 = 1 - std::pow(beta1, double(step));
  const double bias_correction2 = 1 - std::pow(beta2, double(step));
  const float neg_step_size = float(-(lr / bias_correction1));
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float b1 = float(beta1), one_minus_b1 = float(1 - beta1), b2 = float(beta2), one_minus_b2 = float(1 - beta2);
  const float eps_f = float(eps), wd = float(weight_decay), decay = float(1 - lr * weight_decay);
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    if (decoupled)
      param[i] *= decay;
    else if (weight_decay != 0)
      g = std::fma(wd, param[i], g);
    exp_avg[i] = std::fma(one_minus_b1, g, exp_avg[i] * b1);
    exp_avg_sq[i] = std::fma(one_minus_b2 * g, g, exp_avg_sq[i] * b2);
    float v = exp_avg_sq[i];
    if (max_exp_avg_sq) {
      // torch.maximum: NaN wins.
      if (!(max_exp_avg_sq[i] >= v)) max_exp_avg_sq[i] = std::isnan(max_exp_avg_sq[i]) ? max_exp_avg_sq[i] : v;
      v = max_exp_avg_sq[i];
    }
    const float denom = std::sqrt(v) / bc2_sqrt + eps_f;
    param[i] = param[i] + neg_step_size * exp_avg[i] / denom;
  }
}

namespace {
ParamGroup adam_defaults(double lr, std::pair<double, double> betas, double eps, double weight_decay, bool amsgrad) {
  ParamGroup d;
  d.lr = lr;
  d.weight_decay = weight_decay;
  d.beta1 = betas.first;
  d.beta2 = betas.second;
  d.eps = eps;
  d.amsgrad = amsgrad;
  return d;
}
}  // namespace

Adam::Adam(std::vector<Tensor> params, double lr, std::pair<double, double> betas, double eps, double weight_decay,
           bool amsgrad)
    : Adam(false, single_group(std::move(params)), lr, betas, eps, weight_decay, amsgrad) {}

Adam::Adam(std::vector<ParamGroup> groups, double lr, std::pair<double, double> betas, double eps,
           double weight_decay, bool amsgrad)
    : Adam(false, std::move(groups), lr, betas, eps, weight_decay, amsgrad) {}

Adam::Adam(bool decoupled, std::vector<ParamGroup> groups, double lr, std::pair<double, double> betas, double eps,
           double weight_decay, bool amsgrad)
    : Optimizer(decoupled ? "AdamW" : "Adam", std::move(groups), adam_defaults(lr, betas, eps, weight_decay, amsgrad)),
      decoupled_(decoupled) {
  validate_groups();
}

std::vector<std::string> Adam::state_names(const ParamGroup& g) const {
  if (*g.amsgrad) return {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  return {"exp_avg", "exp_avg_sq"};
}

void Adam::update(const ParamGroup& g, const Tensor& param, const Tensor& grad, ParamState& s, bool) {
  float* max_exp_avg_sq = *g.amsgrad ? s.buffers[2].data_ptr() : nullptr;
  adam_update(param.data_ptr(), grad.data_ptr(), s.buffers[0].data_ptr(), s.buffers[1].data_ptr(), max_exp_avg_sq,
              param.numel(), *g.lr, *g.beta1, *g.beta2, *g.eps, *g.weight_decay, decoupled_, s.step);
}

void Adam::validate(const ParamGroup& g, const std::string& where) const {
  check_nonnegative(where, "lr", *g.lr);
  check_beta(where, "beta1", *g.beta1);
  check_beta(where, "beta2", *g.beta2);
  check_nonnegative(where, "eps", *g.eps);
  check_nonnegative(where, "weight_decay", *g.weight_decay);
}

AdamW::AdamW(std::vector<Tensor> params, double lr, std::pair<double, double> betas, double eps,
             double weight_decay, bool amsgrad)
    : Adam(true, single_group(std::move(params)), lr, betas, eps, weight_decay, amsgrad) {}

AdamW::AdamW(std::vector<ParamGroup> groups, double lr, std::pair<double, double> betas, double eps,
             double weight_decay, bool amsgrad)
    : Adam(true, std::move(groups), lr, betas, eps, weight_decay, amsgrad) {}

}  // namespace norma::optim
