// Fusion: the one place where Norma runs several layers as one op. Two ways in:
//
// Fused functional ops, for a model with a forward of its own (docs/custom_models.md):
//   h = nn::conv_bn_relu(*conv1, *bn1, x);             // relu(bn1(conv1(x)))
//   h = nn::conv_bn_relu(*conv2, *bn2, h, /*pool=*/true); // max_pool2d(..., 2) of that
//   h = nn::batch_norm_relu(*bn3, h);                  // relu(bn3(h))
// And a plan, for a chain of modules run one after the other (nn::Sequential
// plans its children once, when they change, and runs the plan): each run of
// exactly Conv2d, BatchNorm2d, ReLU (and a 2x2 MaxPool2d), or BatchNorm2d,
// ReLU (and such a pool), becomes one of the ops above.
//
// Every fused op gives the results of its layers run one by one, bit for bit.
// What it saves:
// - batch_norm_relu(_pool): one pass over the activations each way instead of
//   two (three), and the full-size output of a pooled one is never written;
// - conv_bn_relu, for inference (no graph recorded, the BatchNorm2d on running
//   statistics, anomaly detection off, a fast convolution that takes an
//   epilogue): the normalisation, ReLU and pool run as the convolution writes
//   its output, which is never written itself. Otherwise it is the convolution,
//   then batch_norm_relu(_pool).
#pragma once
#include <vector>

#include "batchnorm2d.h"
#include "conv2d.h"
#include "module.h"

namespace norma::nn {

// relu(bn(x)), one op forward and backward.
Tensor batch_norm_relu(BatchNorm2d& bn, const Tensor& x);
// max_pool2d(relu(bn(x)), 2), one op forward and backward; bn in NCHW.
Tensor batch_norm_relu_pool(BatchNorm2d& bn, const Tensor& x);
// relu(bn(conv(x))), max-pooled 2x2 (stride 2) with pool.
Tensor conv_bn_relu(Conv2d& conv, BatchNorm2d& bn, const Tensor& x, bool pool = false);
// The inference kernel of conv_bn_relu alone: an undefined Tensor where it does not apply.
Tensor conv_bn_relu_eval(const Conv2d& conv, const BatchNorm2d& bn, const Tensor& x, bool pool);

// Whether `bn` then `relu` run as one op (batch_norm_relu): bn is exactly a
// BatchNorm2d and relu exactly a ReLU (a subclass may override forward).
bool fuses_with_relu(const Module& bn, const Module& relu);
// Whether `bn`, `relu` and `pool` run as one op (batch_norm_relu_pool): the
// pair above, bn NCHW, and pool exactly a MaxPool2d of 2x2 windows, stride 2,
// no padding.
bool fuses_with_relu_pool(const Module& bn, const Module& relu, const Module& pool);

// One step of a plan: `count` modules of the chain from `first`, run as `kind`.
struct FusedStep {
  enum Kind { module, bn_relu, bn_relu_pool, conv_bn_relu, conv_bn_relu_pool } kind = module;
  size_t first = 0, count = 1;
};
// The steps for running `chain` in order; a module runs alone unless it starts
// one of the runs above, matched by exact type (a subclass that overrides
// forward runs as written; fuses_with_relu, fuses_with_relu_pool, and a
// Conv2d before them).
std::vector<FusedStep> plan_fusion(const std::vector<ModulePtr>& chain);
// Runs `chain` on x as `plan` says.
Tensor run_fused(const std::vector<ModulePtr>& chain, const std::vector<FusedStep>& plan, const Tensor& x);

}  // namespace norma::nn
