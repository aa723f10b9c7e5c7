// nn::BatchNorm2d (batchnorm2d.h): its options, the running-statistics
// update with the momentum rule's p_t, and forward, which runs the op
// batch_norm2d (batchnorm2d_op.cpp) in the mode the module is in.
#include "batchnorm2d.h"

#include <cmath>
#include <limits>
#include <vector>

#include "../core/autograd.h"
#include "ref/batchnorm2d.h"

namespace norma::nn {

BatchNorm2d::BatchNorm2d(const BatchNorm2dOptions& o) : options(o) {
  if (o.num_features_ < 0)
    fail("BatchNorm2d: num_features must be positive (or 0 for lazy), got {}", o.num_features_);
  if (!(o.eps_ > 0) || !std::isfinite(o.eps_)) fail("BatchNorm2d: eps must be positive and finite, got {}", o.eps_);
  const MomentumRule& m = o.momentum_;
  if (!(m.init_factor >= 0 && m.init_factor <= 1) || !(m.min_factor >= 0 && m.min_factor <= 1))
    fail("BatchNorm2d: momentum factors must lie in [0, 1], got init_factor {} and min_factor {}", m.init_factor,
         m.min_factor);
  if (o.freeze_ && !o.track_running_stats_)
    fail("BatchNorm2d: freeze=true needs track_running_stats=true (it normalises with the running statistics)");
  check_batchnorm_enums("BatchNorm2d", o.layout_, o.variance_method_, o.sync_rule_);
  if (o.num_features_ > 0) {
    options.num_features_ = 0;
    materialize(o.num_features_);
  }
}

void BatchNorm2d::materialize(int64_t C) {
  if (C <= 0) fail("BatchNorm2d: cannot materialize with {} channels", C);
  if (is_materialized()) {
    if (C != options.num_features_)
      fail("BatchNorm2d: already has {} channels, cannot materialize with {}", options.num_features_, C);
    return;
  }
  options.num_features_ = C;
  if (options.affine_) {
    weight = register_parameter("weight", empty({C}), !options.freeze_);
    bias = register_parameter("bias", empty({C}), !options.freeze_);
  }
  if (options.track_running_stats_) {
    running_mean = register_buffer("running_mean", zeros({C}));
    running_var = register_buffer("running_var", ones({C}));
    num_batches_tracked = register_buffer("num_batches_tracked", zeros({}));
  }
  if (!options.skip_init_) {
    reset_parameters();
    return;
  }
  NoGradGuard g;  // skip_init: NaN until a checkpoint is loaded
  for (Tensor* t : {&weight, &bias, &running_mean, &running_var})
    if (t->defined()) t->fill_(std::numeric_limits<float>::quiet_NaN());
}

void BatchNorm2d::reset_running_stats() {
  if (!options.track_running_stats_ || !is_materialized()) return;
  NoGradGuard g;
  running_mean.fill_(0.0f);
  running_var.fill_(1.0f);
  num_batches_tracked.fill_(0.0f);
}

void BatchNorm2d::reset_parameters() {
  reset_running_stats();
  if (!options.affine_ || !is_materialized()) return;
  NoGradGuard g;
  if (options.weight_init_) options.weight_init_(weight); else weight.fill_(1.0f);
  if (options.bias_init_) options.bias_init_(bias); else bias.fill_(0.0f);
}

// p = options.momentum_.factor(t) for the t-th training forward (forward_impl
// below); the op calls this after its statistics are computed (and synced).
void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const double* mean,
                          const double* var, double p, double M, bool unbiased) {
  const double correction = unbiased ? M / (M - 1) : 1.0;
  float* rm = running_mean.data_ptr();
  float* rv = running_var.data_ptr();
  for (int64_t c = 0; c < running_mean.numel(); ++c) {
    rm[c] = float((1 - p) * rm[c] + p * mean[c]);
    rv[c] = float((1 - p) * rv[c] + p * var[c] * correction);
  }
  running_mean.storage()->version++;
  running_var.storage()->version++;
}

Tensor BatchNorm2d::forward(const Tensor& x) { return forward_impl(x, false); }
Tensor BatchNorm2d::forward_relu(const Tensor& x) { return forward_impl(x, true); }

Tensor BatchNorm2d::forward_relu_pool(const Tensor& x) { return forward_impl(x, true, true); }

Tensor BatchNorm2d::forward_impl(const Tensor& x, bool relu, bool pool) {
  const BatchNorm2dOptions& o = options;
  if (!is_materialized() && x.defined() && x.dim() == 4) materialize(x.size(o.layout_ == Layout::NCHW ? 1 : 3));
  BatchNormArgs a;
  a.eps = o.eps_;
  a.layout = o.layout_;
  a.unbiased_running_var = o.unbiased_running_var_;
  a.variance_method = o.variance_method_;
  a.affine_grad = !o.freeze_;
  a.inplace = o.inplace_;
  a.relu = relu;
  a.pool = pool;
  if (is_training()) {  // statistics are synced in training only (PyTorch's SyncBatchNorm too)
    a.process_group = o.process_group_;
    a.sync_rule = o.sync_rule_;
  }
  a.use_batch_stats = !o.track_running_stats_ || (is_training() && !o.freeze_);
  // Not materialized here means x is not 4-D: the op reports it.
  const bool update = o.track_running_stats_ && is_training() && !o.freeze_ && is_materialized();
  // t counts this forward; the counter itself advances only after the op succeeded.
  if (update) a.momentum = o.momentum_.factor(int64_t(num_batches_tracked.item()) + 1);
  if (o.inplace_ && is_training())
    fail("BatchNorm2d: inplace=true is only allowed in eval mode (training needs the input for backward)");
  Tensor y = batch_norm2d(x, weight, bias, running_mean, running_var, a);
  if (update) {
    NoGradGuard g;
    num_batches_tracked.add_(1.0f);
  }
  return y;
}

bool BatchNorm2d::eval_affine(std::vector<float>& hi, std::vector<float>& lo, std::vector<float>& scale,
                              std::vector<float>& shift) const {
  const BatchNorm2dOptions& o = options;
  // forward_impl's use_batch_stats, negated; and batch_norm2d's eval branch.
  if (!o.track_running_stats_ || (is_training() && !o.freeze_) || o.layout_ != Layout::NCHW || !is_materialized() ||
      !running_mean.defined() || !running_var.defined())
    return false;
  const int64_t C = o.num_features_;
  hi.resize(C), lo.resize(C), scale.resize(C), shift.resize(C);
  const float *rm = running_mean.data_ptr(), *rv = running_var.data_ptr();
  const float* gamma = weight.defined() ? weight.data_ptr() : nullptr;
  const float* beta = bias.defined() ? bias.data_ptr() : nullptr;
  std::vector<double> invstd(C);  // as batch_norm2d's eval branch computes it
  for (int64_t c = 0; c < C; ++c) invstd[c] = 1.0 / std::sqrt(double(rv[c]) + o.eps_);
  for (int64_t c = 0; c < C; ++c) {  // rounded as the kernels round them
    const SplitMean sm(rm[c]);
    const ScaleShift ss = scale_shift(invstd.data(), gamma, beta, c);
    hi[c] = sm.hi, lo[c] = sm.lo, scale[c] = ss.scale, shift[c] = ss.shift;
  }
  return true;
}

std::string BatchNorm2d::extra_repr() const {
  const auto& o = options;
  // 6 digits: a decay 0.9 shows as PyTorch's 0.1, not 0.09999999999999998.
  std::string mom = o.momentum_.init_factor == 0 ? fmt::format("{:.6g}", o.momentum_.min_factor)
                    : o.momentum_.min_factor == 0 && o.momentum_.init_factor == 1
                        ? "None"
                        : fmt::format("max({:.6g}/t, {:.6g})", o.momentum_.init_factor, o.momentum_.min_factor);
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats={}",
                     o.num_features_ > 0 ? fmt::format("{}", o.num_features_) : "lazy", o.eps_, mom,
                     o.affine_ ? "True" : "False", o.track_running_stats_ ? "True" : "False");
}

}  // namespace norma::nn
