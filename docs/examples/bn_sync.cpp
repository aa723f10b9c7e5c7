// docs/normalization 06: cross-process BatchNorm statistics, simulated in one
// process. Two "replicas" hold 3 and 5 images of one batch of 8; the sums each
// would send to an all-reduce are added here by a loop. Checks that the result
// equals single-process BatchNorm on the whole batch; exits non-zero otherwise.
//   bn_sync forward    all-reduce count, sum and sum of squares
//   bn_sync backward   all-reduce sum_dy and sum_dy_xhat
//   bn_sync brainpy    BrainPy's average of per-replica moments
#include <cmath>
#include <string>

#include <norma/layers/ref/batchnorm2d.h>
#include <norma/norma.h>

using namespace norma;
using namespace norma::nn;

namespace {

int failures = 0;
const int64_t C = 2, HW = 4;  // channels; H = W = 2

struct Batch {
  Tensor x, dy, gamma, beta;
  std::vector<Tensor> shard_x, shard_dy;  // what each replica holds
};

Batch make_batch() {
  manual_seed(11);
  Batch b;
  b.x = randn({8, C, 2, 2}) * 2.0f + 3.0f;
  b.dy = randn({8, C, 2, 2});
  b.gamma = tensor({1.5f, 0.5f});
  b.beta = tensor({0.1f, -0.2f});
  for (auto [start, n] : {std::pair<int64_t, int64_t>{0, 3}, {3, 5}}) {
    b.shard_x.push_back(b.x.narrow(0, start, n).contiguous());
    b.shard_dy.push_back(b.dy.narrow(0, start, n).contiguous());
  }
  return b;
}

// Per-channel sums of f(i, c) over one NCHW shard, in double.
template <class F>
std::vector<double> channel_sum(const Tensor& t, F f) {
  std::vector<double> s(C, 0.0);
  const int64_t N = t.size(0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < HW; ++i) s[size_t(c)] += f((n * C + c) * HW + i, c);
  return s;
}

double max_diff(const Tensor& a, const Tensor& b) {
  double d = 0;
  auto av = a.to_vector(), bv = b.to_vector();
  for (size_t i = 0; i < av.size(); ++i) d = std::max(d, double(std::fabs(av[i] - bv[i])));
  return d;
}

// Global statistics from all-reduced count, sum and sum of squares.
void global_stats(const Batch& b, std::vector<double>& mean, std::vector<double>& invstd, double& count,
                  bool print) {
  count = 0;
  std::vector<double> sum(C, 0.0), sumsq(C, 0.0);
  for (const Tensor& xs : b.shard_x) {  // each replica computes its partial sums ...
    const float* x = xs.data_ptr();
    auto s = channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]); });
    auto s2 = channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]) * x[i]; });
    const double n = double(xs.size(0) * HW);
    if (print) fmt::print("replica with {} images: count {}, sum [{:.3f}, {:.3f}], sumsq [{:.3f}, {:.3f}]\n",
                          xs.size(0), n, s[0], s[1], s2[0], s2[1]);
    count += n;  // ... and the all-reduce adds them
    for (int64_t c = 0; c < C; ++c) sum[size_t(c)] += s[size_t(c)], sumsq[size_t(c)] += s2[size_t(c)];
  }
  mean.assign(C, 0.0);
  invstd.assign(C, 0.0);
  for (int64_t c = 0; c < C; ++c) {
    mean[size_t(c)] = sum[size_t(c)] / count;
    const double var = sumsq[size_t(c)] / count - mean[size_t(c)] * mean[size_t(c)];  // biased
    invstd[size_t(c)] = 1 / std::sqrt(var + 1e-5);
    if (print) fmt::print("all-reduced: count {}, channel {}: mean {:.4f}, var {:.4f}\n", count, c,
                          mean[size_t(c)], var);
  }
}

// The same global variance by merging each replica's (count, mean, biased var)
// (Chan et al.): no E[x^2] - mean^2 cancellation when |mean| >> std.
double chan_var(const Batch& b, int64_t c, double mean, double count) {
  double acc = 0;
  for (const Tensor& xs : b.shard_x) {
    const float* x = xs.data_ptr();
    const double n = double(xs.size(0) * HW);
    const double m = channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]); })[size_t(c)] / n;
    const double v = channel_sum(xs, [x, m](int64_t i, int64_t) { return (x[i] - m) * (x[i] - m); })[size_t(c)] / n;
    acc += n * v + n * (m - mean) * (m - mean);
  }
  return acc / count;
}

void forward() {
  Batch b = make_batch();
  std::vector<double> mean, invstd;
  double count;
  global_stats(b, mean, invstd, count, true);
  const double var0 = 1 / (invstd[0] * invstd[0]) - 1e-5, chan0 = chan_var(b, 0, mean[0], count);
  fmt::print("channel 0 by merging (count, mean, var) per replica: var {:.4f}\n", chan0);
  if (std::fabs(var0 - chan0) > 1e-9) ++failures;
  // Each replica normalises its own images with the global statistics.
  BatchNormArgs args;
  Tensor whole = batch_norm2d(b.x, b.gamma, b.beta, Tensor(), Tensor(), args);
  int64_t start = 0;
  double d = 0;
  for (const Tensor& xs : b.shard_x) {
    Tensor y = empty(xs.shape());
    ref::batchnorm2d_forward(y.data_ptr(), xs.data_ptr(), mean.data(), invstd.data(), b.gamma.data_ptr(),
                             b.beta.data_ptr(), xs.size(0), C, HW, Layout::NCHW);
    d = std::max(d, max_diff(y, whole.narrow(0, start, xs.size(0))));
    start += xs.size(0);
  }
  fmt::print("y on each replica equals single-process BatchNorm on all 8 images (max |diff| < 1e-5): {}\n", d < 1e-5);
  if (!(d < 1e-5)) ++failures;
}

void backward() {
  Batch b = make_batch();
  std::vector<double> mean, invstd;
  double M;
  global_stats(b, mean, invstd, M, false);
  // Each replica reduces its dy with the global mean and invstd; the all-reduce adds them.
  std::vector<double> sum_dy(C, 0.0), sum_dy_xhat(C, 0.0);
  for (size_t r = 0; r < 2; ++r) {
    const float *x = b.shard_x[r].data_ptr(), *dy = b.shard_dy[r].data_ptr();
    auto s = channel_sum(b.shard_x[r], [dy](int64_t i, int64_t) { return double(dy[i]); });
    auto sx = channel_sum(b.shard_x[r], [&](int64_t i, int64_t c) {
      return double(dy[i]) * (x[i] - mean[size_t(c)]) * invstd[size_t(c)];
    });
    fmt::print("replica {}: sum_dy [{:+.4f}, {:+.4f}], sum_dy_xhat [{:+.4f}, {:+.4f}]\n", r, s[0], s[1], sx[0], sx[1]);
    for (int64_t c = 0; c < C; ++c) sum_dy[size_t(c)] += s[size_t(c)], sum_dy_xhat[size_t(c)] += sx[size_t(c)];
  }
  fmt::print("all-reduced: sum_dy [{:+.4f}, {:+.4f}] (= dbeta), sum_dy_xhat [{:+.4f}, {:+.4f}] (= dgamma)\n",
             sum_dy[0], sum_dy[1], sum_dy_xhat[0], sum_dy_xhat[1]);

  // Single process on the whole batch, for comparison.
  Tensor x = b.x.clone().requires_grad_(), gamma = b.gamma.clone().requires_grad_();
  BatchNormArgs args;
  batch_norm2d(x, gamma, b.beta, Tensor(), Tensor(), args).backward(b.dy);

  // dx = invstd * gamma * (dy - sum_dy/M - xhat * sum_dy_xhat/M), M the global count.
  double d = 0;
  int64_t start = 0;
  for (size_t r = 0; r < 2; ++r) {
    const Tensor& xs = b.shard_x[r];
    const float *xv = xs.data_ptr(), *dy = b.shard_dy[r].data_ptr(), *g = b.gamma.data_ptr();
    Tensor dx = empty(xs.shape());
    for (int64_t n = 0; n < xs.size(0); ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = (n * C + c) * HW; i < (n * C + c + 1) * HW; ++i) {
          const size_t k = size_t(c);
          const double xhat = (xv[i] - mean[k]) * invstd[k];
          dx.data_ptr()[i] = float(invstd[k] * g[k] * (dy[i] - sum_dy[k] / M - xhat * sum_dy_xhat[k] / M));
        }
    d = std::max(d, max_diff(dx, x.grad().narrow(0, start, xs.size(0))));
    start += xs.size(0);
  }
  const bool dgamma_ok = std::fabs(gamma.grad().to_vector()[0] - sum_dy_xhat[0]) < 1e-4;
  fmt::print("dx on each replica equals single-process dx (max |diff| < 1e-5): {}; dgamma too: {}\n", d < 1e-5,
             dgamma_ok);
  if (!(d < 1e-5) || !dgamma_ok) ++failures;
}

// BrainPy with axis_name: the plain average over replicas of each replica's E[x] and E[x^2].
void brainpy() {
  Batch b = make_batch();
  std::vector<double> mean, invstd;
  double count;
  global_stats(b, mean, invstd, count, false);
  double avg_ex = 0, avg_ex2 = 0;
  for (const Tensor& xs : b.shard_x) {
    const float* x = xs.data_ptr();
    const double n = double(xs.size(0) * HW);
    avg_ex += channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]); })[0] / n / 2;
    avg_ex2 += channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]) * x[i]; })[0] / n / 2;
  }
  const double var_g = 1 / (invstd[0] * invstd[0]) - 1e-5;
  fmt::print("channel 0, replicas of 3 and 5 images:\n");
  fmt::print("  weighted by count (SyncBatchNorm): mean {:.4f}, var {:.4f}\n", mean[0], var_g);
  fmt::print("  average of replicas (BrainPy):     mean {:.4f}, var {:.4f}\n", avg_ex, avg_ex2 - avg_ex * avg_ex);
  const bool differ = std::fabs(avg_ex - mean[0]) > 1e-3;
  // With equal counts (4 and 4) the two rules agree.
  Tensor s0 = b.x.narrow(0, 0, 4).contiguous(), s1 = b.x.narrow(0, 4, 4).contiguous();
  double e = 0;
  for (const Tensor& xs : {s0, s1}) {
    const float* x = xs.data_ptr();
    e += channel_sum(xs, [x](int64_t i, int64_t) { return double(x[i]); })[0] / double(4 * HW) / 2;
  }
  fmt::print("  replicas of 4 and 4 images, average of replicas: mean {:.4f} (the same as weighted)\n", e);
  if (!differ || std::fabs(e - mean[0]) > 1e-9) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "forward") forward();
  if (part.empty() || part == "backward") backward();
  if (part.empty() || part == "brainpy") brainpy();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
