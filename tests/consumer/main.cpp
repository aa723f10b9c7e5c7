// Uses an installed Norma: a tiny autograd computation whose gradients are
// known in closed form. Exits non-zero when any value is wrong.
#include <cmath>
#include <cstdio>

#include <norma/norma.h>

using namespace norma;

int main() {
  // loss = sum(relu(x @ w) * c) with x (1, 2), w (2, 2): matmul (OpenBLAS),
  // an elementwise op with broadcasting, a reduction and backward.
  Tensor x = from_vector({1, 2}, {1, 2}).requires_grad_();
  Tensor w = from_vector({3, -4, 5, 1}, {2, 2}).requires_grad_();
  Tensor c = tensor({10, 100});
  Tensor loss = (relu(matmul(x, w)) * c).sum();  // x @ w = (13, -2); relu -> (13, 0)
  loss.backward();

  const std::vector<float> want_x{30, 50};          // dloss/dx = (c * [x@w > 0]) @ w^T = (10, 0) @ w^T
  const std::vector<float> want_w{10, 0, 20, 0};    // dloss/dw = x^T @ (10, 0)
  bool ok = std::fabs(loss.item() - 130.0f) < 1e-4f && x.grad().to_vector() == want_x &&
            w.grad().to_vector() == want_w;
  std::printf("loss %g, dx %s, dw %s: %s\n", loss.item(), to_string(x.grad()).c_str(),
              to_string(w.grad()).c_str(), ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
