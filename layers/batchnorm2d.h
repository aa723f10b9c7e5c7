// BatchNorm2d (Ioffe & Szegedy, 2015), one fused autograd node.
//
// Per channel c, over the M = N*H*W values x_i of that channel:
//   mean = sum(x_i) / M            var = sum((x_i - mean)^2) / M   (biased)
//   invstd = 1 / sqrt(var + eps)   xhat_i = (x_i - mean) * invstd
//   y_i = gamma * xhat_i + beta
// In training the batch statistics normalise and the running statistics are
// updated; in eval the running statistics normalise. The update, with the
// t-th training forward counted from 1:
//   p_t = max(init_factor / t, min_factor)
//   running_mean <- (1 - p_t) running_mean + p_t mean
//   running_var  <- (1 - p_t) running_var  + p_t var_hat,  var_hat = var * M / (M - 1) (unbiased)
//                                                           or var (biased)
// That single rule expresses every convention (see MomentumRule).
//
// Backward in training (closed form; derivation in docs/normalization/):
//   dbeta = sum(dy)   dgamma = sum(dy * xhat)
//   dx_i = invstd * gamma * (dy_i - sum(dy) / M - xhat_i * sum(dy * xhat) / M)
// and with fixed (running) statistics: dx_i = dy_i * gamma * invstd.
// Presets for PyTorch, R torch, MegEngine, BrainPy, numpy-ml and PuzzleLib:
// batchnorm_presets.h.
//
// The module (batchnorm2d.cpp) runs the op batch_norm2d (batchnorm2d_op.cpp),
// which runs the kernels: ref/batchnorm2d.h, the plain loops that define them,
// or fast/batchnorm2d.h, the same results faster (batchnorm2d_op.h picks).
#pragma once
#include <algorithm>
#include <functional>

#include "../core/arg.h"
#include "../core/dist/process_group.h"
#include "batchnorm_options.h"
#include "module.h"

namespace norma::nn {

// The running-average weight of the new batch at the t-th training forward:
// p_t = max(init_factor / t, min_factor).
struct MomentumRule {
  double init_factor = 0.0;
  double min_factor = 0.1;
  // PyTorch momentum p: running <- (1 - p) running + p stat.
  static MomentumRule pytorch(double momentum) { return {0.0, momentum}; }
  // Decay d (MegEngine, BrainPy, numpy-ml): running <- d running + (1 - d) stat, i.e. p = 1 - d.
  static MomentumRule decay(double d) { return {0.0, 1.0 - d}; }
  // Cumulative average (PyTorch momentum=None): p_t = 1 / t.
  static MomentumRule cumulative() { return {1.0, 0.0}; }
  // PuzzleLib: p_t = max(init_factor / t, min_factor).
  static MomentumRule schedule(double init_factor, double min_factor) { return {init_factor, min_factor}; }
  double factor(int64_t t) const { return std::max(init_factor / double(t), min_factor); }
};

// The running-statistics update with p = factor(t), from a batch's mean and
// biased var (C each) over M values; unbiased: var_hat = var * M / (M - 1).
// In place, in float: what the op does after a training forward (batch_norm2d
// gets p as BatchNormArgs::momentum).
void update_running_stats(const Tensor& running_mean, const Tensor& running_var, const double* mean,
                          const double* var, double p, double M, bool unbiased);

using TensorInit = std::function<void(Tensor&)>;

struct BatchNorm2dOptions {
  explicit BatchNorm2dOptions(int64_t num_features) : num_features_(num_features) {}
  // 0 means lazy (numpy-ml): the channel count is taken from the first input,
  // whose forward creates the parameters and buffers (see BatchNorm2d::materialize).
  NORMA_ARG(int64_t, num_features);
  NORMA_ARG(double, eps) = 1e-5;
  NORMA_ARG(MomentumRule, momentum) = MomentumRule::pytorch(0.1);
  NORMA_ARG(bool, unbiased_running_var) = true;
  NORMA_ARG(bool, affine) = true;
  NORMA_ARG(bool, track_running_stats) = true;
  // Running statistics in every mode, never updated; gamma and beta get no gradient.
  NORMA_ARG(bool, freeze) = false;
  NORMA_ARG(Layout, layout) = Layout::NCHW;
  NORMA_ARG(VarianceMethod, variance_method) = VarianceMethod::two_pass;
  // Null: statistics of this process's batch only (single-process behaviour).
  NORMA_ARG(std::shared_ptr<dist::ProcessGroup>, process_group) = nullptr;
  NORMA_ARG(SyncRule, sync_rule) = SyncRule::global;
  NORMA_ARG(TensorInit, weight_init) = nullptr;  // default: ones
  NORMA_ARG(TensorInit, bias_init) = nullptr;    // default: zeros
  // In eval, write the output over the input (PuzzleLib; no extra memory); an
  // error in training. Inference only: no gradient may flow through the layer.
  NORMA_ARG(bool, inplace) = false;
  // PuzzleLib's empty: run no initialiser (the random generator is not drawn
  // from). Parameters and running statistics hold NaN until a checkpoint is
  // loaded, so a forward before loading shows up instead of computing with garbage.
  NORMA_ARG(bool, skip_init) = false;
};

// What the functional op needs to know beyond its tensors.
struct BatchNormArgs {
  bool use_batch_stats = true;   // normalise with this batch's statistics (else the running ones)
  double momentum = -1;          // p for the running update this step; < 0: no update
  double eps = 1e-5;
  Layout layout = Layout::NCHW;
  bool unbiased_running_var = true;
  VarianceMethod variance_method = VarianceMethod::two_pass;
  bool affine_grad = true;       // false: gamma and beta get no gradient (freeze)
  // Write y over x (x contiguous, nothing needing a gradient); y is then x itself.
  bool inplace = false;
  // Set: batch statistics and the backward reductions span the group (SyncRule).
  std::shared_ptr<dist::ProcessGroup> process_group = nullptr;
  SyncRule sync_rule = SyncRule::global;
  // A ReLU fused after the normalisation: the op returns relu(batch_norm(x)) as
  // one node, in one pass forward and backward (nn::Sequential uses it for a
  // BatchNorm2d followed by a ReLU).
  bool relu = false;
  // A 2x2, stride-2 max pool fused after that: the op returns
  // max_pool2d(..., 2) of its output as one node (nn::Sequential uses it for a
  // BatchNorm2d, a ReLU and such a MaxPool2d in a row). NCHW only; over a
  // process group, or in place, the op runs the pool after itself instead.
  bool pool = false;
};

// ---- the op (batchnorm2d_op.cpp): the reference kernels (ref/batchnorm2d.h)
// or the fast ones (fast/batchnorm2d.h), as kernel_policy() says. x is
// (N, C, H, W) for NCHW or (N, H, W, C) for NHWC; weight, bias (C) may be
// undefined (affine off); running_mean/var (C) are updated in place when
// args.momentum >= 0, and used when !args.use_batch_stats. With args.inplace
// the result is written over x and x is returned.
Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormArgs& args);

// Fails, naming `op`, on a Layout, VarianceMethod or SyncRule that is none of
// its enum's values (a cast int, a corrupt config) instead of misreading it.
void check_batchnorm_enums(const char* op, Layout layout, VarianceMethod variance_method, SyncRule sync_rule);

// A lazy module (num_features 0) has no parameters and buffers until its
// first forward (or materialize()): build the optimizer after that forward, and
// materialize() a fresh lazy module before loading a checkpoint into it.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(const BatchNorm2dOptions& options);
  explicit BatchNorm2d(int64_t num_features) : BatchNorm2d(BatchNorm2dOptions(num_features)) {}
  Tensor forward(const Tensor& x) override;
  // relu(forward(x)) in one pass forward and backward (the ReLU fused into the
  // op): what nn::Sequential runs for a BatchNorm2d followed by a ReLU.
  Tensor forward_relu(const Tensor& x);
  // max_pool2d(relu(forward(x)), 2) in one pass forward and backward: what
  // nn::Sequential runs for a BatchNorm2d, a ReLU and a 2x2 MaxPool2d.
  Tensor forward_relu_pool(const Tensor& x);
  // Creates the parameters and buffers for C channels and initialises them
  // (what the constructor does when num_features > 0); a no-op when the module
  // already has C channels, an error when it has another count.
  void materialize(int64_t C);
  bool is_materialized() const { return options.num_features_ > 0; }
  void reset_running_stats();
  void reset_parameters();
  std::string name() const override { return "BatchNorm2d"; }
  std::string extra_repr() const override;
  // Where forward would normalise an NCHW input with the running statistics
  // (eval mode, or frozen): each channel's float arithmetic, which a kernel
  // fusing it elsewhere must repeat to the bit, y = ((x - hi) - lo) * scale +
  // shift, with hi + lo the running mean (SplitMean) and scale, shift as the
  // kernels round them (scale_shift; both in ref/batchnorm2d.h). False (and
  // nothing written) where it would not.
  bool eval_affine(std::vector<float>& hi, std::vector<float>& lo, std::vector<float>& scale,
                   std::vector<float>& shift) const;

  BatchNorm2dOptions options;  // num_features_ is set by materialize() for a lazy module
  Tensor weight;               // (C) gamma; undefined without affine
  Tensor bias;                 // (C) beta; undefined without affine
  Tensor running_mean;         // (C) buffer; undefined without track_running_stats
  Tensor running_var;          // (C) buffer
  Tensor num_batches_tracked;  // () buffer: training forwards so far (t of the momentum rule)

 private:
  Tensor forward_impl(const Tensor& x, bool relu, bool pool = false);
};

}  // namespace norma::nn
