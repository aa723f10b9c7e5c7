// Fused ops and the fusion plan (fusion.h).
#include "fusion.h"

#include <typeinfo>

#include "../core/autograd.h"
#include "activation.h"
#include "pooling.h"

namespace norma::nn {

Tensor batch_norm_relu(BatchNorm2d& bn, const Tensor& x) { return bn.forward_relu(x); }

Tensor batch_norm_relu_pool(BatchNorm2d& bn, const Tensor& x) { return bn.forward_relu_pool(x); }

Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool pool) {
  if (Tensor y = conv_bn_relu_eval(conv, bn, x, pool); y.defined()) return y;
  Tensor h = conv.forward(x);
  return pool ? bn.forward_relu_pool(h) : bn.forward_relu(h);
}

Tensor conv_bn_relu_eval(const Conv2d& conv, const BatchNorm2d& bn, const Tensor& x, bool pool) {
  const Conv2dOptions& o = conv.options;
  if (!x.defined() || x.dim() != 4 || (pool && bn.options.layout_ != Layout::NCHW)) return {};
  // With anomaly detection on, every op's output is checked under its name: run them one by one.
  if (autograd::needs_grad({x, conv.weight, conv.bias, bn.weight, bn.bias}) || autograd::is_anomaly_enabled() ||
      bn.options.num_features_ != o.out_channels_)
    return {};
  std::vector<float> hi, lo, scale, shift;
  if (!bn.eval_affine(hi, lo, scale, shift)) return {};
  const ConvShape s = conv2d_shape(x.shape(), conv.weight.shape(), o.stride_, o.padding_, o.dilation_, o.groups_);
  if (!conv2d_epilogue_applies(s, pool) || (pool && (s.OH < 2 || s.OW < 2))) return {};  // the pool reports those
  Tensor xc = x.contiguous(), wc = conv.weight.contiguous();
  Tensor bc = conv.bias.defined() ? conv.bias.contiguous() : Tensor();
  Tensor y = pool ? empty({s.N, s.K, s.OH / 2, s.OW / 2}) : empty({s.N, s.K, s.OH, s.OW});
  conv2d_forward_epilogue(y.data_ptr(), xc.data_ptr(), wc.data_ptr(), bc.defined() ? bc.data_ptr() : nullptr, s,
                          ConvEpilogue{hi.data(), lo.data(), scale.data(), shift.data(), pool});
  return y;
}

bool fuses_with_relu(const Module& bn, const Module& relu) {
  return typeid(bn) == typeid(BatchNorm2d) && typeid(relu) == typeid(ReLU);
}

bool fuses_with_relu_pool(const Module& bn, const Module& relu, const Module& pool) {
  if (!fuses_with_relu(bn, relu) || typeid(pool) != typeid(MaxPool2d)) return false;
  const auto& p = static_cast<const MaxPool2d&>(pool);
  return static_cast<const BatchNorm2d&>(bn).options.layout_ == Layout::NCHW && p.kernel_size.h == 2 &&
         p.kernel_size.w == 2 && p.stride.h == 2 && p.stride.w == 2 && p.padding.h == 0 && p.padding.w == 0;
}

namespace {

// Whether chain[i] starts a BatchNorm2d, ReLU (and 2x2 pool) run.
bool bn_relu_at(const std::vector<ModulePtr>& chain, size_t i, bool pool) {
  if (i + (pool ? 2 : 1) >= chain.size()) return false;
  return pool ? fuses_with_relu_pool(*chain[i], *chain[i + 1], *chain[i + 2]) : fuses_with_relu(*chain[i], *chain[i + 1]);
}

bool is_conv(const ModulePtr& m) { return typeid(*m) == typeid(Conv2d); }

}  // namespace

std::vector<FusedStep> plan_fusion(const std::vector<ModulePtr>& chain) {
  std::vector<FusedStep> plan;
  for (size_t i = 0; i < chain.size(); i += plan.back().count) {
    using K = FusedStep::Kind;
    if (is_conv(chain[i]) && bn_relu_at(chain, i + 1, true)) plan.push_back({K::conv_bn_relu_pool, i, 4});
    else if (is_conv(chain[i]) && bn_relu_at(chain, i + 1, false)) plan.push_back({K::conv_bn_relu, i, 3});
    else if (bn_relu_at(chain, i, true)) plan.push_back({K::bn_relu_pool, i, 3});
    else if (bn_relu_at(chain, i, false)) plan.push_back({K::bn_relu, i, 2});
    else plan.push_back({K::module, i, 1});
  }
  return plan;
}

Tensor run_fused(const std::vector<ModulePtr>& chain, const std::vector<FusedStep>& plan, const Tensor& x) {
  Tensor h = x;
  for (const FusedStep& s : plan) {
    Module& m = *chain[s.first];
    switch (s.kind) {
      case FusedStep::module: h = m.forward(h); break;
      case FusedStep::bn_relu: h = batch_norm_relu(static_cast<BatchNorm2d&>(m), h); break;
      case FusedStep::bn_relu_pool: h = batch_norm_relu_pool(static_cast<BatchNorm2d&>(m), h); break;
      case FusedStep::conv_bn_relu:
      case FusedStep::conv_bn_relu_pool:
        h = conv_bn_relu(static_cast<Conv2d&>(m), static_cast<BatchNorm2d&>(*chain[s.first + 1]), h,
                         s.kind == FusedStep::conv_bn_relu_pool);
        break;
    }
  }
  return h;
}

}  // namespace norma::nn
