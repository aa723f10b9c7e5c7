// The composite BatchNorm (primitive ops, autograd backward) against the fused
// op (closed-form backward): output, dx, dgamma, dbeta and running statistics
// on many shapes (odd sizes, N = 1 with H*W > 1, C = 1, M = 2), both layouts,
// train / eval / freeze / no running statistics, affine on and off, one- and
// two-pass variance, unbiased and biased running variance.
//
// Tolerance 1e-5 relative, from float32 rounding: the fused kernel accumulates
// in double and rounds once; the composite rounds every intermediate tensor
// (x - mu, its square, var, invstd, xhat, y: ~8 roundings of u = 2^-24 ~ 6e-8)
// and sums dx's three autograd paths in float32. Outputs and running statistics
// are compared elementwise (1e-5 relative + 1e-5 absolute near 0); gradients at
// 1e-5 of their size when nothing cancels (see check_case), since an elementwise
// relative error is meaningless where a gradient is ~0. With batch statistics
// two data-dependent terms are added, both from the composite's float32: mu
// rounded shifts xhat by u |mu| / std, and one-pass variance cancels (u E[x^2] / var).
// Measured (NORMA_PRINT_DIFFS=1 prints them): two-pass and running statistics
// y <= 7e-7 except 1.5e-5 for M = 2 with |mu| / std = 250 (0.35 u |mu| / std),
// dx 2.6e-6, dgamma 1.5e-6, dbeta 0, running statistics 1.5e-7; one-pass within
// 2.4 u E[x^2] / var.
#include "test_util.h"

#include <cstdlib>
#include <functional>

#include <norma/layers/batchnorm_composite.h>

using namespace norma;
using namespace norma::nn;

namespace {

// max |got - want| / max(max |want|, floor); infinite when only one is defined.
double scaled_diff(const Tensor& got, const Tensor& want, double floor = 0) {
  if (got.defined() != want.defined()) return INFINITY;
  if (!got.defined()) return 0;
  auto g = got.to_vector(), w = want.to_vector();
  if (g.size() != w.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    num = std::max(num, std::fabs(double(g[i]) - w[i]));
    den = std::max(den, std::fabs(double(w[i])));
  }
  den = std::max(den, floor);
  return den > 0 ? num / den : num;
}

struct Result {
  Tensor y, dx, dgamma, dbeta, running_mean, running_var;
};

// Runs one op on fresh copies of the inputs, with upstream gradient dy.
using Op = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const BatchNormArgs&)>;
Tensor fused_op(const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& rm, const Tensor& rv,
                const BatchNormArgs& a) {
  return batch_norm2d(x, g, b, rm, rv, a);
}
Tensor composite_op(const Tensor& x, const Tensor& g, const Tensor& b, const Tensor& rm, const Tensor& rv,
                    const BatchNormArgs& a) {
  return batch_norm2d_composite(x, g, b, rm, rv, a);
}

Result run(const Op& op, const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
           const Tensor& dy, const BatchNormArgs& a) {
  Tensor xi = x.clone().requires_grad_();
  Tensor g = gamma.defined() ? gamma.clone().requires_grad_() : Tensor();
  Tensor b = beta.defined() ? beta.clone().requires_grad_() : Tensor();
  Result r;
  if (rm.defined()) r.running_mean = rm.clone();
  if (rv.defined()) r.running_var = rv.clone();
  r.y = op(xi, g, b, r.running_mean, r.running_var, a);
  (r.y * dy).sum().backward();
  r.dx = xi.grad();
  if (g.defined()) r.dgamma = g.grad();
  if (b.defined()) r.dbeta = b.grad();
  return r;
}

struct Case {
  Shape nchw;  // (N, C, H, W)
  Layout layout;
  int mode;  // 0 train with update, 1 train without running stats, 2 eval, 3 freeze
  bool affine;
  VarianceMethod method;
  bool unbiased;
};

// Worst differences over every case, for the summary check below.
struct Worst {
  double y = 0, dx = 0, dgamma = 0, dbeta = 0, running = 0;
  double one_pass = 0;  // one-pass variance: worst error / (u kappa); the rest are two-pass or running stats
  // NORMA_PRINT_DIFFS=1 in the environment prints these (the numbers quoted at the top).
  void print(const char* what) const {
    if (std::getenv("NORMA_PRINT_DIFFS"))
      fmt::print("composite vs fused, {}: y {:.2e} dx {:.2e} dgamma {:.2e} dbeta {:.2e} running {:.2e}; "
                 "one-pass {:.2f} u kappa\n", what, y, dx, dgamma, dbeta, running, one_pass);
  }
};

void check_case(const Case& k, Worst& worst) {
  const int64_t N = k.nchw[0], C = k.nchw[1], H = k.nchw[2], W = k.nchw[3];
  const Shape shape = k.layout == Layout::NCHW ? Shape{N, C, H, W} : Shape{N, H, W, C};
  // Per-channel offsets and scales, so channels differ.
  const Shape per_channel = k.layout == Layout::NCHW ? Shape{1, C, 1, 1} : Shape{1, 1, 1, C};
  Tensor x = randn(shape) * (rand(per_channel) * 2.0f + 0.2f) + (rand(per_channel) - 0.5f) * 6.0f;
  Tensor gamma = k.affine ? rand({C}) * 2.0f - 0.5f : Tensor(), beta = k.affine ? randn({C}) : Tensor();
  // mode 1 is track_running_stats=false: no buffers at all.
  Tensor rm = k.mode == 1 ? Tensor() : randn({C}), rv = k.mode == 1 ? Tensor() : rand({C}) * 2.0f + 0.1f;
  Tensor dy = randn(shape);
  BatchNormArgs a;
  a.layout = k.layout;
  a.variance_method = k.method;
  a.unbiased_running_var = k.unbiased;
  a.eps = k.mode == 0 ? 1e-5 : 1e-3;
  a.use_batch_stats = k.mode <= 1;
  a.momentum = k.mode == 0 ? double(random_uniform()) : -1.0;
  a.affine_grad = k.mode != 3;

  Result fused = run(fused_op, x, gamma, beta, rm, rv, dy, a);
  Result comp = run(composite_op, x, gamma, beta, rm, rv, dy, a);
  CAPTURE(shape, int(k.layout), k.mode, k.affine, int(k.method), k.unbiased, a.momentum);

  // Two inputs to the tolerance beyond 1e-5 (u = 2^-24; the fused op stays in double):
  // mu rounded to float32 shifts xhat by u |mu| / std, so add 8 u max|mu| / std;
  // one-pass var = E[x^2] - mu^2 cancels, the float32 E[x^2] carrying ~u E[x^2],
  // so add 16 u kappa with kappa = E[x^2] / var.
  NoGradGuard no_grad;
  const std::vector<int64_t> dims = k.layout == Layout::NCHW ? std::vector<int64_t>{0, 2, 3}
                                                             : std::vector<int64_t>{0, 1, 2};
  const Tensor batch_mean = mean(x, dims), batch_var = var(x, dims, /*unbiased=*/false);
  const double u = std::ldexp(1.0, -24);
  double tol = 1e-5, kappa_mean = 0, kappa_var = 0;
  if (a.use_batch_stats) {
    kappa_mean = (abs(batch_mean) * rsqrt(batch_var + float(a.eps))).max().item();
    if (k.method == VarianceMethod::one_pass) kappa_var = (mean(x * x, dims) / batch_var).max().item();
    tol += 8 * u * kappa_mean + 16 * u * kappa_var;
  }
  // Gradients are compared at their size when nothing cancels, since where the
  // terms cancel (dx for M = 2 is exactly 0) only rounding noise is left:
  // |dy| |gamma| invstd for dx, and sqrt(M) |dy| for the M-term sums dgamma and dbeta.
  const double M = double(x.numel() / C), dy_max = abs(dy).max().item();
  const double gamma_max = k.affine ? abs(gamma).max().item() : 1.0;
  const double invstd_max = rsqrt((a.use_batch_stats ? batch_var : rv) + float(a.eps)).max().item();
  const double dx_scale = dy_max * gamma_max * invstd_max, sum_scale = std::sqrt(M) * dy_max;
  CAPTURE(tol);
  NORMA_CHECK_CLOSE(comp.y, fused.y, tol, tol);
  if (k.mode != 1) {
    NORMA_CHECK_CLOSE(comp.running_mean, fused.running_mean, 1e-5, 1e-6);
    NORMA_CHECK_CLOSE(comp.running_var, fused.running_var, tol, 1e-6);
  }
  const double dx = scaled_diff(comp.dx, fused.dx, dx_scale), dg = scaled_diff(comp.dgamma, fused.dgamma, sum_scale),
               db = scaled_diff(comp.dbeta, fused.dbeta, sum_scale);
  CAPTURE(dx, dg, db);
  CHECK(dx < tol);
  CHECK(dg < tol);
  CHECK(db < tol);
  if (k.mode == 3) {  // frozen: gamma and beta get no gradient from either
    CHECK_FALSE(fused.dgamma.defined());
    CHECK_FALSE(comp.dgamma.defined());
    CHECK_FALSE(comp.dbeta.defined());
  }
  if (k.mode >= 2) {  // nothing may touch the running statistics
    CHECK(comp.running_mean.to_vector() == rm.to_vector());
    CHECK(comp.running_var.to_vector() == rv.to_vector());
  }
  if (kappa_var > 0) {  // one-pass: the error in units of u kappa
    worst.one_pass = std::max(worst.one_pass, std::max({dx, dg, scaled_diff(comp.y, fused.y)}) / (u * kappa_var));
    return;
  }
  worst.y = std::max(worst.y, scaled_diff(comp.y, fused.y));
  worst.dx = std::max(worst.dx, dx);
  worst.dgamma = std::max(worst.dgamma, dg);
  worst.dbeta = std::max(worst.dbeta, db);
  worst.running = std::max({worst.running, scaled_diff(comp.running_mean, fused.running_mean),
                            scaled_diff(comp.running_var, fused.running_var)});
}

}  // namespace

TEST_CASE("batch_norm2d_composite equals the fused op: fixed shapes, every mode and option") {
  manual_seed(2024);
  const std::vector<Shape> shapes{{2, 3, 4, 5}, {1, 3, 2, 2}, {1, 1, 3, 1}, {5, 1, 3, 3}, {3, 7, 1, 1}, {2, 3, 1, 1},
                                  {2, 4, 1, 9}, {4, 5, 3, 7}, {8, 16, 8, 8}, {32, 8, 16, 16}};
  Worst worst;
  for (const Shape& s : shapes)
    for (Layout layout : {Layout::NCHW, Layout::NHWC})
      for (int mode = 0; mode < 4; ++mode)
        for (bool affine : {true, false})
          for (VarianceMethod method : {VarianceMethod::two_pass, VarianceMethod::one_pass})
            for (bool unbiased : {true, false}) {
              if (mode >= 2 && (method != VarianceMethod::two_pass || !unbiased)) continue;  // batch-only options
              check_case({s, layout, mode, affine, method, unbiased}, worst);
            }
  worst.print("fixed shapes");
}

TEST_CASE("batch_norm2d_composite equals the fused op: 200 random cases") {
  manual_seed(7);
  Worst worst;
  for (int i = 0; i < 200; ++i) {
    auto pick = [](int64_t lo, int64_t hi) { return lo + int64_t(random_u32() % uint32_t(hi - lo + 1)); };
    Case k{{pick(1, 6), pick(1, 9), pick(1, 7), pick(1, 7)},
           random_u32() % 2 ? Layout::NCHW : Layout::NHWC,
           int(random_u32() % 4),
           random_u32() % 2 == 0,
           random_u32() % 2 ? VarianceMethod::two_pass : VarianceMethod::one_pass,
           random_u32() % 2 == 0};
    if (k.nchw[0] * k.nchw[2] * k.nchw[3] <= 1) k.nchw[0] = 2;  // batch statistics need M > 1
    check_case(k, worst);
  }
  worst.print("random cases");
}

TEST_CASE("batch_norm2d_composite: 12 training steps with the PuzzleLib schedule, then eval, track the fused op") {
  manual_seed(12);
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    const Shape shape = layout == Layout::NCHW ? Shape{4, 3, 5, 3} : Shape{4, 5, 3, 3};
    Tensor rm_f = zeros({3}), rv_f = ones({3}), rm_c = zeros({3}), rv_c = ones({3});
    Tensor gamma = rand({3}) + 0.5f, beta = randn({3});
    const MomentumRule rule = MomentumRule::schedule(1.0, 0.1);
    BatchNormArgs a;
    a.layout = layout;
    for (int t = 1; t <= 12; ++t) {
      a.momentum = rule.factor(t);
      Tensor x = randn(shape) * 2.0f + float(t);
      Tensor yf = batch_norm2d(x, gamma, beta, rm_f, rv_f, a);
      Tensor yc = batch_norm2d_composite(x, gamma, beta, rm_c, rv_c, a);
      CAPTURE(t, int(layout));
      NORMA_CHECK_CLOSE(yc, yf, 1e-5, 1e-5);
      NORMA_CHECK_CLOSE(rm_c, rm_f, 1e-5, 1e-6);
      NORMA_CHECK_CLOSE(rv_c, rv_f, 1e-5, 1e-6);
    }
    a.use_batch_stats = false;
    a.momentum = -1;
    Tensor x = randn(shape) + 6.0f;
    NORMA_CHECK_CLOSE(batch_norm2d_composite(x, gamma, beta, rm_c, rv_c, a), batch_norm2d(x, gamma, beta, rm_f, rv_f, a),
                      1e-5, 1e-5);
  }
}

TEST_CASE("batch_norm2d_composite: the worked example, and gradcheck of its derived backward") {
  Tensor x = tensor({1, 2, 3, 4}).reshape({4, 1, 1, 1});
  Tensor rm = zeros({1}), rv = ones({1});
  BatchNormArgs a;
  a.momentum = 0.1;
  batch_norm2d_composite(x, Tensor(), Tensor(), rm, rv, a);
  CHECK(rm.item() == Approx(0.25f).epsilon(1e-7));
  CHECK(rv.item() == Approx(1.0666667f).epsilon(3e-7));  // float32 arithmetic: within two ulps

  manual_seed(3);
  for (Layout layout : {Layout::NCHW, Layout::NHWC}) {
    Tensor xs = randn(layout == Layout::NCHW ? Shape{3, 2, 3, 2} : Shape{3, 3, 2, 2}).requires_grad_();
    Tensor g = (rand({2}) + 0.5f).requires_grad_(), b = randn({2}).requires_grad_();
    BatchNormArgs t;
    t.layout = layout;
    auto r = gradcheck([&](const std::vector<Tensor>& in) {
      return batch_norm2d_composite(in[0], in[1], in[2], Tensor(), Tensor(), t);
    }, {xs, g, b});
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("batch_norm2d_composite: inplace writes over the input, like the fused op") {
  manual_seed(13);
  Tensor x = randn({3, 4, 2, 5}) * 2.0f + 1.0f, gamma = rand({4}) + 0.5f, beta = randn({4});
  Tensor rm = randn({4}), rv = rand({4}) + 0.5f;
  BatchNormArgs a;
  a.use_batch_stats = false;
  Tensor want = batch_norm2d(x, gamma, beta, rm, rv, a);
  a.inplace = true;
  Tensor xi = x.clone();
  Tensor y = batch_norm2d_composite(xi, gamma, beta, rm, rv, a);
  CHECK(y.data_ptr() == xi.data_ptr());
  NORMA_CHECK_CLOSE(xi, want, 1e-5, 1e-5);
  CHECK_THROWS_WITH(batch_norm2d_composite(x.clone().requires_grad_(), gamma, beta, rm, rv, a),
                    Catch::Contains("batch_norm2d_composite: inplace=true overwrites the input (3, 4, 2, 5), so no "
                                    "gradient can flow through it"));
  CHECK_THROWS_WITH(batch_norm2d_composite(x.permute({0, 1, 3, 2}), gamma, beta, rm, rv, a),
                    Catch::Contains("batch_norm2d_composite: inplace=true needs a contiguous input, got (3, 4, 5, 2)"));
}

TEST_CASE("batch_norm2d_composite: errors") {
  BatchNormArgs a;
  Tensor rm = zeros({3}), rv = ones({3});
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2}), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("batch_norm2d_composite: expected a 4-D input (N, C, H, W), got (2, 3, 2)"));
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 4, 2, 2}), ones({3}), Tensor(), Tensor(), Tensor(), a),
                    Catch::Contains("batch_norm2d_composite: weight has shape (3,) but input (2, 4, 2, 2) has 4 channels"));
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({1, 3, 1, 1}), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("expected more than 1 value per channel when training, got input size (1, 3, 1, 1)"));
  a.eps = 0;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("batch_norm2d_composite: eps must be positive and finite, got 0"));
  a.eps = 1e-5;
  a.momentum = 0.1;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Catch::Contains("running_mean and running_var are needed for a running-statistics update"));
  a.momentum = -1;
  a.use_batch_stats = false;
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Catch::Contains("running_mean and running_var are needed when not using batch statistics"));
  CHECK_THROWS_WITH(batch_norm2d_composite(Tensor(), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("batch_norm2d_composite: input is an undefined tensor"));
}
