// A custom op for docs/autograd.md: softplus(x) = log(1 + exp(x)), written as
// a kernel on raw pointers plus one autograd::record() call, then checked
// against finite differences with norma::gradcheck. Exits non-zero on failure.
#include <algorithm>
#include <cmath>

#include <norma/norma.h>

using namespace norma;

// Kernels: plain loops on raw pointers, knowing nothing of autograd.
// Forward  y = log(1 + e^x), computed without overflow for large x.
// Backward dx = dy * sigmoid(x).
void softplus_forward(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = std::max(x[i], 0.0f) + std::log1p(std::exp(-std::fabs(x[i])));
}
void softplus_backward(float* dx, const float* dy, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] / (1.0f + std::exp(-x[i]));
}

// The op: validate, run the forward kernel, record one node whose closure runs
// the backward kernel and accumulates into x.
Tensor softplus(const Tensor& x) {
  if (!x.defined()) fail("softplus: argument 'x' is an undefined tensor");
  Tensor xc = x.contiguous();
  Tensor y = empty(x.shape());
  softplus_forward(y.data_ptr(), xc.data_ptr(), x.numel());
  autograd::record(y, "softplus", {x}, [x, xc](const Tensor& dy) {
    Tensor dyc = dy.contiguous();
    Tensor dx = empty(x.shape());
    softplus_backward(dx.data_ptr(), dyc.data_ptr(), xc.data_ptr(), x.numel());
    autograd::accumulate(x, dx);
  }, /*saved=*/{xc});
  return y;
}

int main() {
  manual_seed(0);
  Tensor x = randn({4, 5}).mul_(3.0f).requires_grad_();
  Tensor w = randn({5, 3}).requires_grad_();
  // The op inside a larger graph: matmul(softplus(x), w).
  GradcheckResult r = gradcheck([](const std::vector<Tensor>& in) { return matmul(softplus(in[0]), in[1]); },
                                {x, w});
  fmt::print("{}\n", r.message);
  if (!r.ok) return 1;

  // A wrong backward must be caught: drop the sigmoid factor and check again.
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = softplus(in[0].detach());
    autograd::record(y, "softplus_wrong", {in[0]}, [x = in[0]](const Tensor& dy) { autograd::accumulate(x, dy); });
    return y;
  };
  GradcheckResult bad = gradcheck(wrong, {x});
  fmt::print("wrong backward: {}\n", bad.ok ? "NOT caught" : "caught");
  return bad.ok ? 1 : 0;
}
