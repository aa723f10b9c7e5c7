// BatchNorm2d from primitive ops; autograd derives the backward. One line per
// step of the formula in batchnorm_composite.h.
#include "batchnorm_composite.h"

#include <cmath>

#include "../core/ops.h"

namespace norma::nn {

namespace {

// The same checks as batch_norm2d, under this op's name.
void check_args(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                const Tensor& running_var, const BatchNormArgs& a) {
  if (!x.defined()) fail("batch_norm2d_composite: input is an undefined tensor");
  check_batchnorm_enums("batch_norm2d_composite", a.layout, a.variance_method, a.sync_rule);
  const char* layout_name = a.layout == Layout::NCHW ? "(N, C, H, W)" : "(N, H, W, C)";
  if (x.dim() != 4) fail("batch_norm2d_composite: expected a 4-D input {}, got {}", layout_name, x.shape());
  const int64_t C = x.size(a.layout == Layout::NCHW ? 1 : 3), M = x.numel() / std::max<int64_t>(C, 1);
  for (auto [t, what] : {std::pair{weight, "weight"}, {bias, "bias"}, {running_mean, "running_mean"},
                         {running_var, "running_var"}})
    if (t.defined() && t.shape() != Shape{C})
      fail("batch_norm2d_composite: {} has shape {} but input {} has {} channels (layout {})", what, t.shape(),
           x.shape(), C, layout_name);
  if (!(a.eps > 0) || !std::isfinite(a.eps))
    fail("batch_norm2d_composite: eps must be positive and finite, got {}", a.eps);
  if (a.use_batch_stats && M <= 1)
    fail("batch_norm2d_composite: expected more than 1 value per channel when training, got input size {}",
         x.shape());
  if ((!a.use_batch_stats || a.momentum >= 0) && (!running_mean.defined() || !running_var.defined()))
    fail("batch_norm2d_composite: running_mean and running_var are needed {} (input {})",
         a.use_batch_stats ? "for a running-statistics update" : "when not using batch statistics", x.shape());
  if (a.inplace && autograd::needs_grad(a.affine_grad ? std::vector<Tensor>{x, weight, bias} : std::vector<Tensor>{x}))
    fail("batch_norm2d_composite: inplace=true overwrites the input {}, so no gradient can flow through it "
         "(run inference under NoGradGuard, or set inplace=false)", x.shape());
  if (a.inplace && !x.is_contiguous())
    fail("batch_norm2d_composite: inplace=true needs a contiguous input, got {} with strides {}", x.shape(),
         x.strides());
}

}  // namespace

Tensor batch_norm2d_composite(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                              const Tensor& running_var, const BatchNormArgs& a) {
  check_args(x, weight, bias, running_mean, running_var, a);
  const bool nchw = a.layout == Layout::NCHW;
  const int64_t C = x.size(nchw ? 1 : 3);
  const std::vector<int64_t> dims = nchw ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{0, 1, 2};
  const Shape per_channel = nchw ? Shape{1, C, 1, 1} : Shape{1, 1, 1, C};  // broadcasts against x

  // The statistics: this batch's (autograd differentiates through them) or the running ones (constants).
  Tensor mu = a.use_batch_stats ? mean(x, dims, /*keepdim=*/true)   // mu = sum(x) / M
                                : running_mean.reshape(per_channel);
  Tensor xc = x - mu;                                              // x - mu
  Tensor var;
  if (!a.use_batch_stats)
    var = running_var.reshape(per_channel);
  else if (a.variance_method == VarianceMethod::two_pass)
    var = mean(xc * xc, dims, true);                               // var = sum((x - mu)^2) / M  (biased)
  else
    var = maximum(mean(x * x, dims, true) - mu * mu, zeros(per_channel));  // var = max(0, E[x^2] - mu^2)
  Tensor invstd = rsqrt(var + float(a.eps));                       // 1 / sqrt(var + eps)
  Tensor xhat = xc * invstd;                                       // xhat = (x - mu) / sqrt(var + eps)
  // The affine step; detached (constants) when frozen, so gamma and beta get no gradient.
  Tensor y = xhat;
  if (weight.defined()) y = y * (a.affine_grad ? weight : weight.detach()).reshape(per_channel);  // y = gamma xhat
  if (bias.defined()) y = y + (a.affine_grad ? bias : bias.detach()).reshape(per_channel);        //     + beta

  if (a.use_batch_stats && a.momentum >= 0) {
    // The running averages are state, not part of the graph.
    NoGradGuard g;
    const float p = float(a.momentum);
    const double M = double(x.numel() / C);
    Tensor var_hat = var.reshape({C}) * float(a.unbiased_running_var ? M / (M - 1) : 1.0);  // unbiased: var M/(M-1)
    Tensor new_mean = running_mean * (1 - p) + mu.reshape({C}) * p;  // (1 - p) running + p mu
    Tensor new_var = running_var * (1 - p) + var_hat * p;            // (1 - p) running + p var_hat
    Tensor rm = running_mean, rv = running_var;
    rm.copy_(new_mean);
    rv.copy_(new_var);
  }
  if (a.inplace) {  // y written over x (no graph: checked above)
    NoGradGuard g;
    Tensor out = x;
    out.copy_(y);
    return out;
  }
  return y;
}

}  // namespace norma::nn
