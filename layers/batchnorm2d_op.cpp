// The op batch_norm2d (batchnorm2d.h): checks its arguments, runs the kernels
// picked at its one dispatch point (batchnorm2d_kernels()), updates the running
// statistics and records the backward as one autograd node.
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "../core/allocator.h"
#include "../core/autograd.h"
#include "../core/dist/batchnorm_sync.h"
#include "../core/kernel_policy.h"
#include "batchnorm2d.h"
#include "batchnorm2d_op.h"
#include "pooling.h"
#if NORMA_FAST_KERNELS
#include "fast/kernels.h"
#endif

namespace norma::nn {

namespace {

constexpr BatchNorm2dKernels kReference{
    .stats = ref::batchnorm2d_stats,
    .forward = ref::batchnorm2d_forward,
    .forward_train = ref::batchnorm2d_forward_train,
    .backward = ref::batchnorm2d_backward,
    .backward_reduce = ref::batchnorm2d_backward_reduce,
    .backward_dx = ref::batchnorm2d_backward_dx,
    .pool_forward = ref::batchnorm2d_pool_forward,
    .pool_forward_train = ref::batchnorm2d_pool_forward_train,
    .pool_backward = ref::batchnorm2d_pool_backward};

}  // namespace

const BatchNorm2dKernels& batchnorm2d_reference_kernels() { return kReference; }

const BatchNorm2dKernels* batchnorm2d_fast_kernels() {
#if NORMA_FAST_KERNELS
  return fast::kernels().batchnorm2d;  // the copy for kernel_policy().isa
#else
  return nullptr;
#endif
}

const BatchNorm2dKernels& batchnorm2d_kernels() {
  const BatchNorm2dKernels* fast = batchnorm2d_fast_kernels();
  return kernel_policy().fast && fast ? *fast : kReference;
}

void check_batchnorm_enums(const char* op, Layout layout, VarianceMethod variance_method, SyncRule sync_rule) {
  if (layout != Layout::NCHW && layout != Layout::NHWC)
    fail("{}: unknown layout {} (not a Layout value)", op, int(layout));
  if (variance_method != VarianceMethod::two_pass && variance_method != VarianceMethod::one_pass)
    fail("{}: unknown variance_method {} (not a VarianceMethod value)", op, int(variance_method));
  if (sync_rule != SyncRule::global && sync_rule != SyncRule::replica_average)
    fail("{}: unknown sync_rule {} (not a SyncRule value)", op, int(sync_rule));
}

namespace {

// Every check of batch_norm2d's arguments but the pool's; inputs are the
// tensors the gradient flows into.
void check_args(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                const Tensor& running_var, const BatchNormArgs& a, const std::vector<Tensor>& inputs) {
  if (!x.defined()) fail("batch_norm2d: input is an undefined tensor");
  check_batchnorm_enums("batch_norm2d", a.layout, a.variance_method, a.sync_rule);
  const char* layout_name = a.layout == Layout::NCHW ? "(N, C, H, W)" : "(N, H, W, C)";
  if (x.dim() != 4) fail("batch_norm2d: expected a 4-D input {}, got {}", layout_name, x.shape());
  const int64_t N = x.size(0), C = a.layout == Layout::NCHW ? x.size(1) : x.size(3);
  const int64_t HW = a.layout == Layout::NCHW ? x.size(2) * x.size(3) : x.size(1) * x.size(2);
  for (auto [t, what] : {std::pair{weight, "weight"}, {bias, "bias"}, {running_mean, "running_mean"},
                         {running_var, "running_var"}})
    if (t.defined() && t.shape() != Shape{C})
      fail("batch_norm2d: {} has shape {} but input {} has {} channels (layout {})", what, t.shape(), x.shape(), C,
           layout_name);
  if (!(a.eps > 0) || !std::isfinite(a.eps)) fail("batch_norm2d: eps must be positive and finite, got {}", a.eps);
  // Under the global sync rule the group's count matters: checked after the sync.
  const bool global_sync = a.process_group && a.sync_rule == SyncRule::global;
  if (a.use_batch_stats && N * HW <= 1 && !global_sync)
    fail("batch_norm2d: expected more than 1 value per channel when training, got input size {}", x.shape());
  if (!a.use_batch_stats && (!running_mean.defined() || !running_var.defined()))
    fail("batch_norm2d: running statistics are needed when not using batch statistics (input {})", x.shape());
  if (a.momentum >= 0 && (!running_mean.defined() || !running_var.defined()))
    fail("batch_norm2d: a running-statistics update needs running_mean and running_var (input {})", x.shape());
  if (a.inplace && autograd::needs_grad(inputs))
    fail("batch_norm2d: inplace=true overwrites the input {}, so no gradient can flow through it "
         "(run inference under NoGradGuard, or set inplace=false)", x.shape());
  if (a.inplace && !x.is_contiguous())
    fail("batch_norm2d: inplace=true needs a contiguous input, got {} with strides {}", x.shape(), x.strides());
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormArgs& a) {
  std::vector<Tensor> inputs{x};  // what the gradient flows into
  if (a.affine_grad) inputs.insert(inputs.end(), {weight, bias});
  check_args(x, weight, bias, running_mean, running_var, a, inputs);
  const int64_t N = x.size(0), C = a.layout == Layout::NCHW ? x.size(1) : x.size(3);
  const int64_t HW = a.layout == Layout::NCHW ? x.size(2) * x.size(3) : x.size(1) * x.size(2);
  if (a.pool) {
    if (a.layout != Layout::NCHW)
      fail("batch_norm2d: pool=true pools (N, C, H, W) planes, but the input {} is NHWC (N, H, W, C)", x.shape());
    if (a.process_group || a.inplace) {  // statistics synced between the passes, or y written over x: two ops
      BatchNormArgs b = a;
      b.pool = false;
      return max_pool2d(batch_norm2d(x, weight, bias, running_mean, running_var, b), 2);
    }
    pool2d_shape("max_pool2d", x.shape(), 2, std::nullopt, 0);  // max_pool2d's error for planes under 2x2
  }

  const BatchNorm2dKernels k = batchnorm2d_kernels();  // the forward's kernels, and its backward's
  Tensor xc = x.contiguous();
  // mean and invstd in double, shared with the backward closure (they are
  // not tensors: float32 would round a large mean and lose the small deviations).
  auto mean = std::make_shared<std::vector<double>>(C), invstd = std::make_shared<std::vector<double>>(C);
  double M_stats = double(N * HW), M_backward = M_stats;  // values behind the statistics (SyncedCounts)
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const float *gamma = wc.defined() ? wc.data_ptr() : nullptr, *beta = bc.defined() ? bc.data_ptr() : nullptr;
  const int64_t H = x.size(2), W = x.size(3);  // with pool (NCHW)
  Tensor y = a.inplace ? x : a.pool ? empty({N, C, H / 2, W / 2}) : empty(x.shape());
  // The pool's argmax in each window, for the backward.
  auto arg = a.pool ? std::make_shared<CachedBuffer>(size_t(y.numel()) * sizeof(int32_t))
                    : std::shared_ptr<CachedBuffer>();
  int32_t* argp = arg ? static_cast<int32_t*>(arg->data) : nullptr;
  bool normalised = false;  // y written already (statistics and normalisation in one kernel)
  if (a.use_batch_stats) {
    std::vector<double> var(C);
    if (!a.process_group) {
      if (a.pool)
        k.pool_forward_train(y.data_ptr(), argp, mean->data(), var.data(), invstd->data(), xc.data_ptr(), gamma, beta,
                             a.eps, N, C, H, W, a.variance_method, a.relu);
      else
        k.forward_train(y.data_ptr(), mean->data(), var.data(), invstd->data(), xc.data_ptr(), gamma, beta, a.eps,
                        N, C, HW, a.layout, a.variance_method, a.relu);
      normalised = true;
    } else {
      k.stats(mean->data(), var.data(), xc.data_ptr(), N, C, HW, a.layout, a.variance_method);
      auto& pg = *a.process_group;
      const dist::SyncedCounts n =
          dist::batchnorm_sync_stats(mean->data(), var.data(), C, M_stats, pg, a.sync_rule == SyncRule::global,
                                     a.variance_method == VarianceMethod::one_pass);
      if (n.unbiased <= 1)
        fail("batch_norm2d: expected more than 1 value per channel when training, got {} over the process group "
             "of {} ranks (input {} on rank {})", n.unbiased, pg.size(), x.shape(), pg.rank());
      M_stats = n.unbiased;
      M_backward = n.backward;
      for (int64_t c = 0; c < C; ++c) (*invstd)[c] = 1.0 / std::sqrt(var[c] + a.eps);
    }
    if (a.momentum >= 0)
      update_running_stats(running_mean, running_var, mean->data(), var.data(), a.momentum, M_stats,
                           a.unbiased_running_var);
  } else {
    const float* rm = running_mean.data_ptr();
    const float* rv = running_var.data_ptr();
    for (int64_t c = 0; c < C; ++c) {
      (*mean)[c] = rm[c];
      (*invstd)[c] = 1.0 / std::sqrt(double(rv[c]) + a.eps);
    }
  }
  if (!normalised && a.pool)
    k.pool_forward(y.data_ptr(), argp, xc.data_ptr(), mean->data(), invstd->data(), gamma, beta, N, C, H, W, a.relu);
  else if (!normalised)
    k.forward(y.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(), gamma, beta, N, C, HW, a.layout, a.relu);
  if (a.inplace) {  // no graph to record (checked above)
    x.storage()->version++;
    return y;
  }

  // The fused ReLU's backward recomputes the sign of its output from x, with gamma and beta as they were.
  const char* name = a.pool ? (a.relu ? "batch_norm2d_relu_pool" : "batch_norm2d_pool")
                             : (a.relu ? "batch_norm2d_relu" : "batch_norm2d");
  autograd::record(y, name, inputs, [k, x, weight, bias, xc, wc, bc, mean, invstd, arg, N, C, H, W, HW, M_backward,
                                     a](const Tensor& dy) {
    Tensor dyc = dy.contiguous();
    Tensor dx = x.requires_grad() ? empty(x.shape()) : Tensor();
    const bool affine_grads = a.affine_grad && (weight.requires_grad() || bias.requires_grad());
    Tensor dw = affine_grads ? empty({C}) : Tensor(), db = affine_grads ? empty({C}) : Tensor();
    const float* gamma = wc.defined() ? wc.data_ptr() : nullptr;
    const float* beta = bc.defined() ? bc.data_ptr() : nullptr;
    // dgamma and dbeta are this rank's share; the trainer averages them.
    if (a.pool) {
      k.pool_backward(dx.defined() ? dx.data_ptr() : nullptr, affine_grads ? dw.data_ptr() : nullptr,
                      affine_grads ? db.data_ptr() : nullptr, dyc.data_ptr(), static_cast<const int32_t*>(arg->data),
                      xc.data_ptr(), mean->data(), invstd->data(), gamma, beta, N, C, H, W, a.use_batch_stats, a.relu);
    } else if (!(a.process_group && a.use_batch_stats)) {
      k.backward(dx.defined() ? dx.data_ptr() : nullptr, affine_grads ? dw.data_ptr() : nullptr,
                 affine_grads ? db.data_ptr() : nullptr, dyc.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(),
                 gamma, N, C, HW, a.layout, a.use_batch_stats, a.relu, beta);
    } else {  // the two sums are all-reduced over the group between the halves
      std::vector<double> sum_dy(C), sum_dy_xhat(C);
      k.backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dyc.data_ptr(), xc.data_ptr(), mean->data(),
                        invstd->data(), N, C, HW, a.layout, a.relu, gamma, beta);
      for (int64_t c = 0; c < C && affine_grads; ++c) {
        db.data_ptr()[c] = float(sum_dy[c]);
        dw.data_ptr()[c] = float(sum_dy_xhat[c]);
      }
      if (dx.defined()) {  // every rank: x requires grad on all of them alike
        dist::batchnorm_sync_grad_sums(sum_dy.data(), sum_dy_xhat.data(), C, *a.process_group);
        k.backward_dx(dx.data_ptr(), dyc.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(), gamma,
                      sum_dy.data(), sum_dy_xhat.data(), M_backward, N, C, HW, a.layout, true, a.relu, beta);
      }
    }
    autograd::accumulate(x, dx);
    if (affine_grads) {
      autograd::accumulate(weight, dw);
      autograd::accumulate(bias, db);
    }
  }, a.relu ? std::vector<Tensor>{xc, wc, bc} : std::vector<Tensor>{xc, wc});
  return y;
}

}  // namespace norma::nn
