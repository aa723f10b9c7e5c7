// Presets: one call gives the BatchNorm2dOptions that reproduce another
// framework's BatchNorm2d (defaults and conventions), plus conversions between
// their conventions. Tested against PyTorch and NumPy references in
// tests/bn_presets_test.cpp (fixtures from scripts/gen_bn_presets_fixtures.py).
//
//   nn::BatchNorm2d bn(nn::bn_presets::megengine(64));
//   nn::BatchNorm2d lazy(nn::bn_presets::numpy_ml());  // channels from the first input
//
// Per channel, m values reduced, stat = the batch mean or variance; every
// framework normalises a training batch with its biased variance:
//
//   preset      layout  running update (p: weight of the new batch)      running_var  variance  gamma init
//   pytorch     NCHW    p = momentum (0.1); None: p_t = 1/t              unbiased     two-pass  ones
//   r_torch     NCHW    as pytorch (momentum = NULL works in Norma)       unbiased     two-pass  ones
//   megengine   NCHW    p = 1 - momentum (0.9 -> 0.1)                     unbiased     two-pass  ones
//   brainpy_2_7 NHWC    p = 1 - momentum (0.99 -> 0.01)                   biased       one-pass  ones
//   brainpy_2_8 NHWC    p = 1 - momentum (0.99 -> 0.01)                   unbiased     one-pass  ones
//   numpy_ml    NHWC    p = 1 - momentum (0.9 -> 0.1)                     biased       two-pass  uniform[0,1)
//   puzzlelib   NCHW    p_t = max(initFactor/t, minFactor) (1, 0.1)      unbiased     two-pass  normal(1, sscale)
//
// running <- (1 - p) running + p stat, from running_mean 0, running_var 1; t
// counts training forwards from 1 (num_batches_tracked, saved in checkpoints).
// one-pass: var = max(0, E[x^2] - E[x]^2); unbiased = biased * m / (m - 1).
// Worked example, one channel, x = [1, 2, 3, 4], one training step from fresh
// buffers: running_mean/running_var = 0.25/1.0666667 (pytorch, megengine),
// 0.025/1.0025 (brainpy_2_7), 0.025/1.0066667 (brainpy_2_8), 0.25/1.025
// (numpy_ml), 2.5/1.6666667 (puzzlelib).
//
// What Norma does differently, on purpose: it saves PuzzleLib's t; R torch's
// momentum = NULL works; numpy-ml raises on backward through a frozen layer,
// Norma's freeze (MegEngine's) passes dx = dy * gamma / sqrt(running_var + eps)
// on and gives gamma and beta no gradient. numpy-ml's layer owns an optimizer
// whose gradients accumulate until update(); in Norma the optimizer is the
// shared API: optim::SGD opt(bn.parameters(), 0.01), several backward() calls
// (gradients accumulate), then opt.step() and opt.zero_grad(). BrainPy's
// axis_name (statistics averaged over replicas) is the process-group option.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "batchnorm2d.h"

namespace norma::nn::bn_presets {

// torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1, affine=True,
// track_running_stats=True); momentum = std::nullopt is momentum=None, the
// cumulative average p_t = 1/t.
BatchNorm2dOptions pytorch(int64_t num_features, std::optional<double> momentum = 0.1);

// R torch's nn_batch_norm2d: the same defaults and conventions as PyTorch.
BatchNorm2dOptions r_torch(int64_t num_features, std::optional<double> momentum = 0.1);

// megengine.module.BatchNorm2d(C, eps=1e-5, momentum=0.9, affine=True,
// track_running_stats=True, freeze=False); `momentum` is MegEngine's decay.
// freeze: running statistics in every mode, never updated, no gradient for
// gamma and beta. Its checkpoints shape every tensor (1, C, 1, 1): see
// from_megengine_state_dict.
BatchNorm2dOptions megengine(int64_t num_features, bool freeze = false, double momentum = 0.9);

// Up to 2.7.8 BrainPy keeps the biased batch variance in running_var; from
// 2.8.0 the unbiased one. v2_7_8 is the older spelling of v2_7.
enum class BrainPyVersion { v2_7, v2_8, v2_7_8 = v2_7 };

// brainpy.dnn.BatchNorm2d(C, axis=(0, 1, 2), epsilon=1e-5, momentum=0.99,
// affine=True): channel last (NHWC), one-pass variance, `momentum` a decay.
BatchNorm2dOptions brainpy(int64_t num_features, BrainPyVersion version = BrainPyVersion::v2_7,
                           double momentum = 0.99);
inline BatchNorm2dOptions brainpy_2_7(int64_t num_features, double momentum = 0.99) {
  return brainpy(num_features, BrainPyVersion::v2_7, momentum);
}
inline BatchNorm2dOptions brainpy_2_8(int64_t num_features, double momentum = 0.99) {
  return brainpy(num_features, BrainPyVersion::v2_8, momentum);
}

// numpy_ml.neural_nets.layers.BatchNorm2D(momentum=0.9, epsilon=1e-5):
// channel last (NHWC), `momentum` a decay, biased running_var, gamma
// ("scaler") uniform[0, 1) from Norma's seeded generator, beta ("intercept")
// zeros. num_features 0 (the default) is numpy-ml's behaviour: the channel
// count comes from the first input, whose forward creates the parameters
// (build the optimizer after it; see BatchNorm2d::materialize).
BatchNorm2dOptions numpy_ml(int64_t num_features = 0, double momentum = 0.9);

// PuzzleLib's BatchNorm2D(maps, epsilon=1e-5, initFactor=1.0, minFactor=0.1,
// sscale=0.01, affine=True, empty=False, inplace=False): p_t = max(init_factor/t,
// min_factor) (defaults: the cumulative average for 9 steps, then 0.1), scale
// normal(1, sscale) and exactly 1 without affine, bias zeros; inplace (eval
// only, inference under NoGradGuard) writes the output over the input; empty
// runs no initialiser and leaves NaN until a checkpoint is loaded (skip_init).
// Named, so that one option needs no other restated:
//   puzzlelib(32, PuzzleLibOptions().affine(false))
struct PuzzleLibOptions {
  NORMA_ARG(double, init_factor) = 1.0;
  NORMA_ARG(double, min_factor) = 0.1;
  NORMA_ARG(double, sscale) = 0.01;
  NORMA_ARG(bool, affine) = true;
  NORMA_ARG(bool, inplace) = false;
  NORMA_ARG(bool, empty) = false;
};
BatchNorm2dOptions puzzlelib(int64_t maps, const PuzzleLibOptions& options = {});
// The same, positional, as PuzzleLib orders its arguments.
BatchNorm2dOptions puzzlelib(int64_t maps, double init_factor, double min_factor = 0.1, double sscale = 0.01,
                             bool affine = true, bool inplace = false, bool empty = false);

// The names preset_by_name accepts, in the table's order:
// pytorch, r_torch, megengine, brainpy_2_7, brainpy_2_8, numpy_ml, puzzlelib.
// It also takes the older "brainpy" (brainpy_2_7) and "brainpy-2.8".
const std::vector<std::string>& preset_names();

// The preset called `name` with each default (the CLI's --bn-preset), for
// num_features channels. An unknown name is an error listing the accepted ones.
// A model whose convolutions are NCHW may set .layout(Layout::NCHW) on the
// NHWC presets: statistics are per channel either way, so the numbers agree.
BatchNorm2dOptions preset_by_name(const std::string& name, int64_t num_features);

// ---- conversions between conventions
//
// A PyTorch momentum p and a decay d (MegEngine, BrainPy and numpy-ml call it
// "momentum") describe the same update:
//   running <- (1 - p) running + p stat  =  d running + (1 - d) stat,  so  p = 1 - d,  d = 1 - p.
// MegEngine 0.9 -> PyTorch 0.1, BrainPy 0.99 -> 0.01, numpy-ml 0.9 -> 0.1.
// PuzzleLib's p_t = max(initFactor/t, minFactor) equals PyTorch's
// momentum=None (p_t = 1/t) while t <= initFactor/minFactor, then PyTorch's
// momentum = minFactor. A running_var kept biased (BrainPy 2.7.8, numpy-ml)
// relates to an unbiased one per batch by var_unbiased = var_biased * m / (m - 1).
double pytorch_momentum_from_decay(double decay);
double decay_from_pytorch_momentum(double momentum);

// MegEngine's checkpoints shape BatchNorm's weight, bias, running_mean and
// running_var (1, C, 1, 1) and have no num_batches_tracked. Given `model`
// (which says which prefixes are BatchNorm2d: any ambiguity with a
// convolution's (1, C, 1, 1) bias is resolved by it), this returns `state` with
// those tensors reshaped to (C) and num_batches_tracked 0 added where the model
// tracks running statistics, ready for model.load_state_dict(). Other entries
// pass through. A BatchNorm tensor neither (1, C, 1, 1) nor (C) is an error.
NamedTensors from_megengine_state_dict(const NamedTensors& state, Module& model);

// The way back: `state` (a Norma state dict of `model`) with the BatchNorm2d
// tensors reshaped (1, C, 1, 1) and num_batches_tracked dropped.
NamedTensors to_megengine_state_dict(const NamedTensors& state, Module& model);

}  // namespace norma::nn::bn_presets
