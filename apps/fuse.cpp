// Folding BatchNorm2d into the preceding Conv2d (formula in fuse.h).
#include "fuse.h"

#include <cmath>
#include <typeinfo>
#include <vector>

#include <norma/core/autograd.h>

namespace norma::nn {

std::shared_ptr<Conv2d> fuse_conv_bn(const Conv2d& conv, const BatchNorm2d& bn) {
  const BatchNorm2dOptions& o = bn.options;
  const int64_t K = conv.options.out_channels_;
  if (!bn.is_materialized())
    fail("fuse_conv_bn: {}({}) is lazy and has not seen an input yet, so it has no statistics to fold", bn.name(),
         bn.extra_repr());
  if (!o.track_running_stats_)
    fail("fuse_conv_bn: {}({}) has no running statistics (track_running_stats=false), so it always normalises "
         "with batch statistics and cannot be folded", bn.name(), bn.extra_repr());
  if (bn.is_training() && !o.freeze_)
    fail("fuse_conv_bn: {}({}) is in training mode, where it normalises with batch statistics; call eval() first",
         bn.name(), bn.extra_repr());
  if (o.num_features_ != K)
    fail("fuse_conv_bn: Conv2d({}) has {} output channels but {}({}) has {} features", conv.extra_repr(), K,
         bn.name(), bn.extra_repr(), o.num_features_);
  if (o.layout_ != Layout::NCHW)
    fail("fuse_conv_bn: {}({}) uses the NHWC layout but Conv2d({}) outputs NCHW", bn.name(), bn.extra_repr(),
         conv.extra_repr());

  // A fresh conv with a bias; its random initialisation must not move the global generator.
  const GeneratorState rng = get_rng_state();
  Conv2dOptions fused_options = conv.options;
  auto fused = std::make_shared<Conv2d>(fused_options.bias(true));
  set_rng_state(rng);
  fused->train(conv.is_training());

  NoGradGuard g;
  Tensor w = conv.weight.contiguous(), rm = bn.running_mean.contiguous(), rv = bn.running_var.contiguous();
  Tensor b = conv.bias.defined() ? conv.bias.contiguous() : Tensor();
  Tensor gamma = o.affine_ ? bn.weight.contiguous() : Tensor(), beta = o.affine_ ? bn.bias.contiguous() : Tensor();
  const int64_t per_filter = w.numel() / K;  // C/groups * kh * kw
  std::vector<float> w_out(size_t(w.numel())), b_out(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) {
    // s = gamma / sqrt(running_var + eps)
    const double s = (gamma.defined() ? gamma.data_ptr()[k] : 1.0) / std::sqrt(double(rv.data_ptr()[k]) + o.eps_);
    for (int64_t j = 0; j < per_filter; ++j)  // W' = s W
      w_out[size_t(k * per_filter + j)] = float(s * w.data_ptr()[k * per_filter + j]);
    // b' = (b - running_mean) s + beta
    const double bk = b.defined() ? b.data_ptr()[k] : 0.0, betak = beta.defined() ? beta.data_ptr()[k] : 0.0;
    b_out[size_t(k)] = float((bk - rm.data_ptr()[k]) * s + betak);
  }
  fused->weight.copy_(from_vector(w_out, w.shape()));
  fused->bias.copy_(from_vector(b_out, {K}));
  return fused;
}

namespace {

std::string join(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::shared_ptr<Sequential> fuse_sequential(const Sequential& model, const std::string& prefix) {
  auto out = std::make_shared<Sequential>();
  out->train(model.is_training());  // while empty: the shared children keep their own modes
  auto children = model.named_children();
  for (size_t i = 0; i < children.size(); ++i) {
    const auto& [name, child] = children[i];
    auto* conv = dynamic_cast<Conv2d*>(child.get());
    auto* bn = i + 1 < children.size() ? dynamic_cast<BatchNorm2d*>(children[i + 1].second.get()) : nullptr;
    if (conv && bn) {
      try {
        out->push_back(name, fuse_conv_bn(*conv, *bn));
      } catch (const Error& e) {
        fail("fuse_conv_bn_eval: layers '{}' and '{}': {}", join(prefix, name), join(prefix, children[i + 1].first),
             e.what());
      }
      ++i;  // the BatchNorm is folded away
    } else if (auto* seq = dynamic_cast<Sequential*>(child.get())) {
      out->push_back(name, fuse_sequential(*seq, join(prefix, name)));
    } else {
      out->push_back(name, child);  // shared, not copied
    }
  }
  return out;
}

}  // namespace

std::shared_ptr<Sequential> fuse_conv_bn_eval(const Sequential& model) { return fuse_sequential(model, ""); }

}  // namespace norma::nn
