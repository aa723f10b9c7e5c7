// N batch, C classes.
#include "loss.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "../core/autograd.h"
#include "../core/ops.h"

namespace norma::nn {

namespace {
constexpr int64_t kParallelGrain = 1 << 15;  // logits before the rows are split across threads

// Checks input (N, C) and target (N) of integer classes in [0, C); returns the classes.
std::vector<int64_t> class_targets(const char* op, const char* input_name, const Tensor& input, const Tensor& target) {
  if (!input.defined() || !target.defined()) fail("{}: {} and target must be defined tensors", op, input_name);
  if (input.dim() != 2) fail("{}: {} must be 2-D (N, C), got {}", op, input_name, input.shape());
  const int64_t N = input.size(0), C = input.size(1);
  if (target.shape() != Shape{N})
    fail("{}: target {} does not match {} {}: expected ({},)", op, target.shape(), input_name, input.shape(), N);
  std::vector<float> t = target.to_vector();
  std::vector<int64_t> classes(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const float v = t[size_t(i)];
    if (!(v == std::floor(v)))
      fail("{}: target[{}] = {} is not an integer class index ({} {})", op, i, v, input_name, input.shape());
    if (v < 0 || v >= float(C))
      fail("{}: target[{}] = {} is out of range [0, {}) for {} {}", op, i, v, C, input_name, input.shape());
    classes[size_t(i)] = int64_t(v);
  }
  return classes;
}

// Per-sample losses (N) -> the reduced output.
Tensor reduce(const Tensor& losses, Reduction r) {
  if (r == Reduction::none) return losses;
  const float* l = losses.data_ptr();
  double s = 0;
  const int64_t n = losses.numel();
  for (int64_t i = 0; i < n; ++i) s += l[i];
  return scalar_tensor(float(r == Reduction::mean ? s / double(n) : s));
}

// The upstream gradient of each sample's loss, g (N).
Tensor per_sample_grad(const Tensor& dy, Reduction r, int64_t N) {
  if (r == Reduction::none) return dy.contiguous();
  return full({N}, r == Reduction::mean ? float(double(dy.item()) / double(N)) : dy.item());
}

void check_reduction(const char* op, Reduction r) {
  if (r != Reduction::none && r != Reduction::mean && r != Reduction::sum)
    fail("{}: unknown reduction {} (not a Reduction value)", op, int(r));
}

// A known Reduction; the mean of no samples (0 / 0) is an error rather than a NaN loss.
void check_reduction(const char* op, Reduction r, const Tensor& input) {
  check_reduction(op, r);
  if (r == Reduction::mean && input.numel() == 0)
    fail("{}: reduction mean over the empty input {} is undefined (use Reduction::sum or none)", op, input.shape());
}

void check_smoothing(const char* op, double eps) {
  if (!(eps >= 0.0 && eps <= 1.0)) fail("{}: label_smoothing must be in [0, 1], got {}", op, eps);
}
}  // namespace

// ---------------------------------------------------------------- cross entropy

void cross_entropy_forward(float* loss, double* lse, const float* logits, const int64_t* target, int64_t N,
                           int64_t C, double eps) {
#pragma omp parallel for schedule(static) if (N > 1 && N * C >= kParallelGrain)
  for (int64_t i = 0; i < N; ++i) {
    const float* z = logits + i * C;
    const double m = *std::max_element(z, z + C);
    double s = 0, zsum = 0;
    for (int64_t c = 0; c < C; ++c) {
      s += std::exp(double(z[c]) - m);
      zsum += z[c];
    }
    lse[i] = m + std::log(s);
    const double nll = lse[i] - z[target[i]];
    // mean_c(-logp_ic) = lse_i - mean_c(z_ic); skipped at eps = 0 so -inf logits stay finite.
    loss[i] = float(eps > 0 ? (1 - eps) * nll + eps * (lse[i] - zsum / double(C)) : nll);
  }
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const double* lse,
                            const int64_t* target, int64_t N, int64_t C, double eps) {
#pragma omp parallel for schedule(static) if (N > 1 && N * C >= kParallelGrain)
  for (int64_t i = 0; i < N; ++i) {
    const float* z = logits + i * C;
    float* dz = dlogits + i * C;
    const double g = dloss[i], off = eps / double(C);
    for (int64_t c = 0; c < C; ++c) {
      const double smoothed = (c == target[i] ? 1 - eps : 0.0) + off;
      dz[c] = float(g * (std::exp(double(z[c]) - lse[i]) - smoothed));
    }
  }
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, double label_smoothing) {
  auto classes = std::make_shared<const std::vector<int64_t>>(class_targets("cross_entropy", "logits", logits, target));
  check_smoothing("cross_entropy", label_smoothing);
  check_reduction("cross_entropy", reduction, logits);
  const int64_t N = logits.size(0), C = logits.size(1);
  Tensor zc = logits.contiguous();
  Tensor losses = empty({N});
  auto lse = std::make_shared<std::vector<double>>(size_t(N));  // (N)
  cross_entropy_forward(losses.data_ptr(), lse->data(), zc.data_ptr(), classes->data(), N, C, label_smoothing);
  Tensor y = reduce(losses, reduction);
  autograd::record(y, "cross_entropy", {logits}, [logits, zc, lse, classes, reduction, label_smoothing, N, C](const Tensor& dy) {
    Tensor g = per_sample_grad(dy, reduction, N), dz = empty({N, C});
    cross_entropy_backward(dz.data_ptr(), g.data_ptr(), zc.data_ptr(), lse->data(), classes->data(), N, C,
                           label_smoothing);
    autograd::accumulate(logits, dz);
  }, {zc});
  return y;
}

// ---------------------------------------------------------------- nll

void nll_loss_forward(float* loss, const float* log_probs, const int64_t* target, int64_t N, int64_t C) {
  for (int64_t i = 0; i < N; ++i) loss[i] = -log_probs[i * C + target[i]];
}

void nll_loss_backward(float* dlog_probs, const float* dloss, const int64_t* target, int64_t N, int64_t C) {
  std::fill_n(dlog_probs, N * C, 0.0f);
  for (int64_t i = 0; i < N; ++i) dlog_probs[i * C + target[i]] = -dloss[i];
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, Reduction reduction) {
  auto classes = std::make_shared<const std::vector<int64_t>>(class_targets("nll_loss", "log_probs", log_probs, target));
  check_reduction("nll_loss", reduction, log_probs);
  const int64_t N = log_probs.size(0), C = log_probs.size(1);
  Tensor xc = log_probs.contiguous();
  Tensor losses = empty({N});
  nll_loss_forward(losses.data_ptr(), xc.data_ptr(), classes->data(), N, C);
  Tensor y = reduce(losses, reduction);
  autograd::record(y, "nll_loss", {log_probs}, [log_probs, classes, reduction, N, C](const Tensor& dy) {
    Tensor g = per_sample_grad(dy, reduction, N), dx = empty({N, C});
    nll_loss_backward(dx.data_ptr(), g.data_ptr(), classes->data(), N, C);
    autograd::accumulate(log_probs, dx);
  });
  return y;
}

// ---------------------------------------------------------------- mse

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  if (!input.defined() || !target.defined()) fail("mse_loss: input and target must be defined tensors");
  if (input.shape() != target.shape())
    fail("mse_loss: input {} and target {} must have the same shape", input.shape(), target.shape());
  check_reduction("mse_loss", reduction, input);
  Tensor d = input - target;
  Tensor sq = d * d;
  switch (reduction) {
    case Reduction::none: return sq;
    case Reduction::sum: return sq.sum();
    case Reduction::mean: break;
  }
  return sq.mean();
}

// ---------------------------------------------------------------- modules

CrossEntropyLoss::CrossEntropyLoss(Reduction reduction, double label_smoothing)
    : reduction(reduction), label_smoothing(label_smoothing) {
  check_smoothing("CrossEntropyLoss", label_smoothing);
  check_reduction("CrossEntropyLoss", reduction);
}

}  // namespace norma::nn
