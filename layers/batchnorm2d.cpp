// N batch, C channels, HW = H*W positions; M = N*HW values per channel.
// NCHW puts channel c of image n at (n*C + c)*HW; NHWC puts position i of
// image n at (n*HW + i)*C. Statistics are accumulated in double.
#include "batchnorm2d.h"

#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../core/autograd.h"
#include "batchnorm_sync.h"

namespace norma::nn {

namespace {

// Per-channel sums over an NHWC tensor: rows of C values, split across threads
// with a private accumulator each, then combined (no atomics, deterministic for
// a thread count). add_row(acc, r) adds row r into acc[0, width): the loop
// over a row's channels is the one that vectorises.
template <class F>
void nhwc_channel_sums(double* out, int64_t rows, int64_t width, F add_row) {
  const int T = omp_get_max_threads();
  std::vector<double> part(size_t(T) * width, 0.0);
#pragma omp parallel num_threads(T)
  {
    double* acc = part.data() + size_t(omp_get_thread_num()) * width;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) add_row(acc, r);
  }
  for (int64_t j = 0; j < width; ++j) {
    double s = 0;
    for (int t = 0; t < T; ++t) s += part[size_t(t) * width + j];
    out[j] = s;
  }
}

// Per-channel sums over an NCHW tensor, f(value) summed in double: one channel
// per iteration, its N planes contiguous. simd lets the sum be split across
// vector lanes; without it every add waits for the one before and the pass
// runs at a quarter of its speed. (f takes the value, not an index: an indexed
// term made the compiler gather element by element.)
template <class F>
void nchw_channel_sums(double* out, const float* x, int64_t N, int64_t C, int64_t HW, F f) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
  for (int64_t c = 0; c < C; ++c) {
    double s = 0;
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x + (n * C + c) * HW;
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < HW; ++i) s += f(p[i], c);
    }
    out[c] = s;
  }
}

}  // namespace

void batchnorm2d_stats(double* mean, double* var, const float* x, int64_t N, int64_t C, int64_t HW, Layout layout,
                       VarianceMethod method) {
  // Sums of f(x[i], channel of i) per channel, in either layout.
  auto sums = [&](double* out, auto f) {
    if (layout == Layout::NCHW)
      nchw_channel_sums(out, x, N, C, HW, f);
    else
      nhwc_channel_sums(out, N * HW, C, [&](double* __restrict acc, int64_t r) {
        const float* __restrict p = x + r * C;
        for (int64_t c = 0; c < C; ++c) acc[c] += f(p[c], c);
      });
  };
  const double M = double(N * HW);
  sums(mean, [](float v, int64_t) { return double(v); });
  for (int64_t c = 0; c < C; ++c) mean[c] /= M;
  if (method == VarianceMethod::two_pass) {
    sums(var, [mean](float v, int64_t c) {
      const double d = v - mean[c];
      return d * d;
    });
    for (int64_t c = 0; c < C; ++c) var[c] /= M;
  } else {  // BrainPy: E[x^2] - E[x]^2, clamped at 0
    sums(var, [](float v, int64_t) { return double(v) * v; });
    for (int64_t c = 0; c < C; ++c) var[c] = std::max(0.0, var[c] / M - mean[c] * mean[c]);
  }
}

void batchnorm2d_forward(float* y, const float* x, const double* mean, const double* invstd, const float* gamma,
                         const float* beta, int64_t N, int64_t C, int64_t HW, Layout layout) {
  // y = x * scale + shift with scale = gamma * invstd and shift = beta - mean * scale,
  // except that x - mean is formed in double so |mean| >> std loses nothing.
  if (layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t c = p % C;
      const double scale = invstd[c] * (gamma ? gamma[c] : 1.0f), shift = beta ? beta[c] : 0.0f, m = mean[c];
      const float* xp = x + p * HW;
      float* yp = y + p * HW;
      for (int64_t i = 0; i < HW; ++i) yp[i] = float((xp[i] - m) * scale + shift);
    }
  } else {
    std::vector<double> scale(C), shift(C);
    for (int64_t c = 0; c < C; ++c) scale[c] = invstd[c] * (gamma ? gamma[c] : 1.0f), shift[c] = beta ? beta[c] : 0.0f;
    const double *__restrict sc = scale.data(), *__restrict sh = shift.data();
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t r = 0; r < N * HW; ++r) {
      const float* __restrict xp = x + r * C;
      float* __restrict yp = y + r * C;
      for (int64_t c = 0; c < C; ++c) yp[c] = float((xp[c] - mean[c]) * sc[c] + sh[c]);
    }
  }
}

void batchnorm2d_backward_reduce(double* sum_dy, double* sum_dy_xhat, const float* dy, const float* x,
                                 const double* mean, const double* invstd, int64_t N, int64_t C, int64_t HW,
                                 Layout layout) {
  // NCHW: both sums in one sweep over dy and x, (x - mean) formed per element
  // (sum(dy x) - mean sum(dy) would cancel).
  if (layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t c = 0; c < C; ++c) {
      double a = 0, b = 0;
      const double m = mean[c];
      for (int64_t n = 0; n < N; ++n) {
        const float *g = dy + (n * C + c) * HW, *xp = x + (n * C + c) * HW;
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = 0; i < HW; ++i) a += g[i], b += g[i] * (xp[i] - m);
      }
      sum_dy[c] = a, sum_dy_xhat[c] = b * invstd[c];
    }
    return;
  }
  std::vector<double> sums(2 * C);  // sum(dy) per channel, then sum(dy (x - mean))
  nhwc_channel_sums(sums.data(), N * HW, 2 * C, [&](double* __restrict acc, int64_t r) {
    const float *__restrict g = dy + r * C, *__restrict xp = x + r * C;
    for (int64_t c = 0; c < C; ++c) acc[c] += g[c], acc[C + c] += g[c] * (xp[c] - mean[c]);
  });
  for (int64_t c = 0; c < C; ++c) sum_dy[c] = sums[c], sum_dy_xhat[c] = sums[C + c] * invstd[c];
}

void batchnorm2d_backward_dx(float* dx, const float* dy, const float* x, const double* mean, const double* invstd,
                             const float* gamma, const double* sum_dy, const double* sum_dy_xhat, double M, int64_t N,
                             int64_t C, int64_t HW, Layout layout, bool batch_stats) {
  // One pass: dx = k (dy - sum_dy/M - xhat sum_dy_xhat/M) with k = invstd * gamma and
  // xhat = (x - mean) invstd, or dx = k dy when the statistics were constants.
  // Per channel: dx = k (dy - mean_dy - (x - mean) q) with q = invstd sum_dy_xhat / M.
  std::vector<double> k(C), mean_dy(C), q(C);
  for (int64_t c = 0; c < C; ++c) {
    k[c] = invstd[c] * (gamma ? gamma[c] : 1.0f);
    mean_dy[c] = batch_stats ? sum_dy[c] / M : 0.0;
    q[c] = batch_stats ? invstd[c] * sum_dy_xhat[c] / M : 0.0;
  }
  if (layout == Layout::NCHW) {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t p = 0; p < N * C; ++p) {
      const int64_t c = p % C;
      const double kc = k[c], mdy = mean_dy[c], qc = q[c], m = mean[c];
      const float *g = dy + p * HW, *xp = x + p * HW;
      float* d = dx + p * HW;
      if (!batch_stats)  // x plays no part (and an infinite x must not turn dx into NaN)
        for (int64_t i = 0; i < HW; ++i) d[i] = float(kc * g[i]);
      else
        for (int64_t i = 0; i < HW; ++i) d[i] = float(kc * (g[i] - mdy - (xp[i] - m) * qc));
    }
  } else {
#pragma omp parallel for schedule(static) if (N * C * HW >= (1 << 15))
    for (int64_t r = 0; r < N * HW; ++r) {
      const float *__restrict g = dy + r * C, *__restrict xp = x + r * C;
      float* __restrict d = dx + r * C;
      if (!batch_stats)
        for (int64_t c = 0; c < C; ++c) d[c] = float(k[c] * g[c]);
      else
        for (int64_t c = 0; c < C; ++c) d[c] = float(k[c] * (g[c] - mean_dy[c] - (xp[c] - mean[c]) * q[c]));
    }
  }
}

void batchnorm2d_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x, const double* mean,
                          const double* invstd, const float* gamma, int64_t N, int64_t C, int64_t HW, Layout layout,
                          bool batch_stats) {
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dy, x, mean, invstd, N, C, HW, layout);
  for (int64_t c = 0; c < C; ++c) {
    if (dbeta) dbeta[c] = float(sum_dy[c]);
    if (dgamma) dgamma[c] = float(sum_dy_xhat[c]);
  }
  if (dx)
    batchnorm2d_backward_dx(dx, dy, x, mean, invstd, gamma, sum_dy.data(), sum_dy_xhat.data(), double(N * HW), N, C,
                            HW, layout, batch_stats);
}

// ---------------------------------------------------------------- the op

void check_batchnorm_enums(const char* op, Layout layout, VarianceMethod variance_method, SyncRule sync_rule) {
  if (layout != Layout::NCHW && layout != Layout::NHWC)
    fail("{}: unknown layout {} (not a Layout value)", op, int(layout));
  if (variance_method != VarianceMethod::two_pass && variance_method != VarianceMethod::one_pass)
    fail("{}: unknown variance_method {} (not a VarianceMethod value)", op, int(variance_method));
  if (sync_rule != SyncRule::global && sync_rule != SyncRule::replica_average)
    fail("{}: unknown sync_rule {} (not a SyncRule value)", op, int(sync_rule));
}

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                    const Tensor& running_var, const BatchNormArgs& a) {
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
  std::vector<Tensor> inputs{x};  // what the gradient flows into
  if (a.affine_grad) inputs.insert(inputs.end(), {weight, bias});
  if (a.inplace && autograd::needs_grad(inputs))
    fail("batch_norm2d: inplace=true overwrites the input {}, so no gradient can flow through it "
         "(run inference under NoGradGuard, or set inplace=false)", x.shape());
  if (a.inplace && !x.is_contiguous())
    fail("batch_norm2d: inplace=true needs a contiguous input, got {} with strides {}", x.shape(), x.strides());

  Tensor xc = x.contiguous();
  // mean and invstd in double, shared with the backward closure (they are
  // not tensors: float32 would round a large mean and lose the small deviations).
  auto mean = std::make_shared<std::vector<double>>(C), invstd = std::make_shared<std::vector<double>>(C);
  double M_stats = double(N * HW), M_backward = M_stats;  // values behind the statistics (SyncedCounts)
  if (a.use_batch_stats) {
    std::vector<double> var(C);
    batchnorm2d_stats(mean->data(), var.data(), xc.data_ptr(), N, C, HW, a.layout, a.variance_method);
    if (a.process_group) {
      auto& pg = *a.process_group;
      const SyncedCounts n = batchnorm_sync_stats(mean->data(), var.data(), C, M_stats, pg, a.sync_rule,
                                                  a.variance_method);
      if (n.unbiased <= 1)
        fail("batch_norm2d: expected more than 1 value per channel when training, got {} over the process group "
             "of {} ranks (input {} on rank {})", n.unbiased, pg.size(), x.shape(), pg.rank());
      M_stats = n.unbiased;
      M_backward = n.backward;
    }
    for (int64_t c = 0; c < C; ++c) (*invstd)[c] = 1.0 / std::sqrt(var[c] + a.eps);
    if (a.momentum >= 0) {
      const double M = M_stats, p = a.momentum;
      const double correction = a.unbiased_running_var ? M / (M - 1) : 1.0;
      float* rm = running_mean.data_ptr();
      float* rv = running_var.data_ptr();
      for (int64_t c = 0; c < C; ++c) {
        rm[c] = float((1 - p) * rm[c] + p * (*mean)[c]);
        rv[c] = float((1 - p) * rv[c] + p * var[c] * correction);
      }
      running_mean.storage()->version++;
      running_var.storage()->version++;
    }
  } else {
    const float* rm = running_mean.data_ptr();
    const float* rv = running_var.data_ptr();
    for (int64_t c = 0; c < C; ++c) {
      (*mean)[c] = rm[c];
      (*invstd)[c] = 1.0 / std::sqrt(double(rv[c]) + a.eps);
    }
  }
  Tensor wc = weight.defined() ? weight.contiguous() : Tensor();
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  Tensor y = a.inplace ? x : empty(x.shape());
  batchnorm2d_forward(y.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(), wc.defined() ? wc.data_ptr() : nullptr,
                      bc.defined() ? bc.data_ptr() : nullptr, N, C, HW, a.layout);
  if (a.inplace) {  // no graph to record (checked above)
    x.storage()->version++;
    return y;
  }

  autograd::record(y, "batch_norm2d", inputs, [x, weight, bias, xc, wc, mean, invstd, N, C, HW, M_backward,
                                                a](const Tensor& dy) {
    Tensor dyc = dy.contiguous();
    Tensor dx = x.requires_grad() ? empty(x.shape()) : Tensor();
    const bool affine_grads = a.affine_grad && (weight.requires_grad() || bias.requires_grad());
    Tensor dw = affine_grads ? empty({C}) : Tensor(), db = affine_grads ? empty({C}) : Tensor();
    std::vector<double> sum_dy(C), sum_dy_xhat(C);
    batchnorm2d_backward_reduce(sum_dy.data(), sum_dy_xhat.data(), dyc.data_ptr(), xc.data_ptr(), mean->data(),
                                invstd->data(), N, C, HW, a.layout);
    for (int64_t c = 0; c < C && affine_grads; ++c) {  // this rank's share; the trainer averages them
      db.data_ptr()[c] = float(sum_dy[c]);
      dw.data_ptr()[c] = float(sum_dy_xhat[c]);
    }
    if (dx.defined()) {
      if (a.process_group && a.use_batch_stats)  // every rank: x requires grad on all of them alike
        batchnorm_sync_grad_sums(sum_dy.data(), sum_dy_xhat.data(), C, *a.process_group);
      batchnorm2d_backward_dx(dx.data_ptr(), dyc.data_ptr(), xc.data_ptr(), mean->data(), invstd->data(),
                              wc.defined() ? wc.data_ptr() : nullptr, sum_dy.data(), sum_dy_xhat.data(), M_backward,
                              N, C, HW, a.layout, a.use_batch_stats);
    }
    autograd::accumulate(x, dx);
    if (affine_grads) {
      autograd::accumulate(weight, dw);
      autograd::accumulate(bias, db);
    }
  }, {xc, wc});
  return y;
}

// ---------------------------------------------------------------- the module

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

Tensor BatchNorm2d::forward(const Tensor& x) {
  const BatchNorm2dOptions& o = options;
  if (!is_materialized() && x.defined() && x.dim() == 4) materialize(x.size(o.layout_ == Layout::NCHW ? 1 : 3));
  BatchNormArgs a;
  a.eps = o.eps_;
  a.layout = o.layout_;
  a.unbiased_running_var = o.unbiased_running_var_;
  a.variance_method = o.variance_method_;
  a.affine_grad = !o.freeze_;
  a.inplace = o.inplace_;
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
