// Inference folding: a Conv2d followed by a BatchNorm2d that normalises with its
// running statistics is one Conv2d with a bias. Saves the BatchNorm pass (and
// its memory traffic) at inference; the CLI's `eval --fuse-bn` uses it.
//
// Per output channel k, with s_k = gamma_k / sqrt(running_var_k + eps):
//   bn(conv(x))_k = gamma_k * (W_k * x + b_k - running_mean_k) / sqrt(running_var_k + eps) + beta_k
//                 = (s_k W_k) * x + (b_k - running_mean_k) s_k + beta_k
// so  W'_k = s_k W_k   and   b'_k = (b_k - running_mean_k) s_k + beta_k
// (b_k = 0 when the conv has no bias; gamma = 1, beta = 0 when the BatchNorm is
// not affine). Grouped convolutions fold the same way: each output channel has
// its own filter. Computed in double, rounded once to float32.
#pragma once
#include <memory>

#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/sequential.h>

namespace norma::nn {

// A new Conv2d (same sizes, stride, padding, dilation, groups; always with a
// bias) equal to bn(conv(x)) for a BatchNorm2d that uses its running
// statistics: in eval mode, or frozen. The inputs are not modified and the
// global random generator is left as it was. Errors: bn in training mode (it
// would normalise with batch statistics), bn without running statistics,
// bn.num_features != conv's out_channels, bn in NHWC layout (a Conv2d outputs
// NCHW), a lazy bn not yet materialized.
std::shared_ptr<Conv2d> fuse_conv_bn(const Conv2d& conv, const BatchNorm2d& bn);

// A new Sequential in which every Conv2d immediately followed by a BatchNorm2d
// is replaced by fuse_conv_bn(conv, bn) under the conv's name (the BatchNorm's
// name disappears); nested Sequentials are folded recursively. Every other
// module (ReLU, MaxPool2d, Linear, ...) is shared with `model`, not copied, so
// the result is for inference next to the original. Errors are those of
// fuse_conv_bn, prefixed with the two layers' dotted names.
std::shared_ptr<Sequential> fuse_conv_bn_eval(const Sequential& model);

}  // namespace norma::nn
