// docs/normalization 03: the BatchNorm backward on one channel of M = 6 values.
// Prints the two reductions, the three paths of dx and their sum, then checks
// the closed form against the fused kernel, the composite (autograd through
// mean, sub, mul, rsqrt) and central finite differences in double.
//   bn_backward paths   the closed form term by term, in double
//   bn_backward check   the same dx from the fused op, the composite and finite differences
#include <cmath>
#include <string>

#include <norma/norma.h>

using namespace norma;
using namespace norma::nn;

namespace {

int failures = 0;
const int M = 6;
const double xs[M] = {1, 2, 4, 7, 11, 16};           // one channel: N = 3, H = 1, W = 2
const double dys[M] = {0.1, -0.2, 0.3, 0.0, -0.1, 0.4};  // the upstream gradient dL/dy
const double gamma_ = 2.0, beta_ = 0.5, eps = 1e-5;

std::string row(const double* v) {
  std::string s;
  for (int i = 0; i < M; ++i) s += fmt::format(" {:+.5f}", v[i]);
  return s;
}

// The loss whose gradient is dys: L = sum(dy_i * y_i), in double.
double loss(const double* x) {
  double mean = 0, var = 0;
  for (int i = 0; i < M; ++i) mean += x[i] / M;
  for (int i = 0; i < M; ++i) var += (x[i] - mean) * (x[i] - mean) / M;
  double L = 0;
  for (int i = 0; i < M; ++i) L += dys[i] * ((x[i] - mean) / std::sqrt(var + eps) * gamma_ + beta_);
  return L;
}

// dx from the closed form, in double; fills the three paths when asked.
void closed_form(double* dx, double* direct = nullptr, double* via_mean = nullptr, double* via_var = nullptr) {
  double mean = 0, var = 0;
  for (int i = 0; i < M; ++i) mean += xs[i] / M;
  for (int i = 0; i < M; ++i) var += (xs[i] - mean) * (xs[i] - mean) / M;
  const double invstd = 1 / std::sqrt(var + eps);
  double xhat[M], sum_dy = 0, sum_dy_xhat = 0;
  for (int i = 0; i < M; ++i) {
    xhat[i] = (xs[i] - mean) * invstd;
    sum_dy += dys[i];
    sum_dy_xhat += dys[i] * xhat[i];
  }
  for (int i = 0; i < M; ++i) {
    const double a = invstd * gamma_ * dys[i];                      // through x - mean directly
    const double b = -invstd * gamma_ * sum_dy / M;                  // through the mean
    const double c = -invstd * gamma_ * xhat[i] * sum_dy_xhat / M;  // through the variance
    dx[i] = a + b + c;
    if (direct) direct[i] = a, via_mean[i] = b, via_var[i] = c;
  }
  if (!direct) return;
  fmt::print("x    ={}\n", row(xs));
  fmt::print("dy   ={}\n", row(dys));
  fmt::print("mean = {}, var = {:.6f}, invstd = {:.6f}\n", mean, var, invstd);
  fmt::print("xhat ={}\n", row(xhat));
  fmt::print("sum_dy = {:.5f} (= dbeta), sum_dy_xhat = {:.5f} (= dgamma)\n", sum_dy, sum_dy_xhat);
}

void paths() {
  double dx[M], a[M], b[M], c[M];
  closed_form(dx, a, b, c);
  fmt::print("invstd*gamma*dy                  ={}\n", row(a));
  fmt::print("-invstd*gamma*sum_dy/M           ={}\n", row(b));
  fmt::print("-invstd*gamma*xhat*sum_dy_xhat/M ={}\n", row(c));
  fmt::print("dx (the sum)                     ={}\n", row(dx));
  double total = 0;
  for (double v : dx) total += v;
  // Zero: shifting every x_i by the same amount changes no y_i.
  fmt::print("|sum(dx)| < 1e-12: {}\n", std::fabs(total) < 1e-12);
  if (!(std::fabs(total) < 1e-12)) ++failures;
}

double max_diff(const std::vector<float>& got, const double* want) {
  double d = 0;
  for (int i = 0; i < M; ++i) d = std::max(d, std::fabs(got[size_t(i)] - want[i]));
  return d;
}

void check() {
  double dx[M];
  closed_form(dx);
  std::vector<float> xv(xs, xs + M), dyv(dys, dys + M);
  Tensor dy = from_vector(dyv, {3, 1, 1, 2});
  Tensor gamma = tensor({float(gamma_)}).requires_grad_(), beta = tensor({float(beta_)}).requires_grad_();
  BatchNormArgs args;  // training: batch statistics; no running update
  args.eps = eps;
  for (bool fused : {true, false}) {
    Tensor x = from_vector(xv, {3, 1, 1, 2}).requires_grad_();
    gamma.zero_grad();
    beta.zero_grad();
    Tensor y = fused ? batch_norm2d(x, gamma, beta, Tensor(), Tensor(), args)
                     : batch_norm2d_composite(x, gamma, beta, Tensor(), Tensor(), args);
    y.backward(dy);
    const double d = max_diff(x.grad().to_vector(), dx);
    // Bounds, not the differences themselves: the last bits depend on the machine.
    fmt::print("{:<9} max |dx - closed form| < 1e-6: {};  dgamma = {:.5f}, dbeta = {:.5f}\n",
               fused ? "fused" : "composite", d < 1e-6, gamma.grad().item(), beta.grad().item());
    if (!(d < 1e-6)) ++failures;
  }
  // Central differences of L(x) = sum(dy * y(x)) in double, step 1e-6.
  double fd[M], xp[M];
  for (int i = 0; i < M; ++i) {
    std::copy(xs, xs + M, xp);
    xp[i] = xs[i] + 1e-6;
    const double up = loss(xp);
    xp[i] = xs[i] - 1e-6;
    fd[i] = (up - loss(xp)) / 2e-6;
  }
  double d = 0;
  for (int i = 0; i < M; ++i) d = std::max(d, std::fabs(fd[i] - dx[i]));
  fmt::print("finite differences in double: max |fd - closed form| < 1e-8: {}\n", d < 1e-8);
  if (!(d < 1e-8)) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "";
  if (part.empty() || part == "paths") paths();
  if (part.empty() || part == "check") check();
  if (failures) fmt::print("{} check(s) failed\n", failures);
  return failures ? 1 : 0;
}
