#include <catch2/catch.hpp>
#include <norma/norma.h>
using namespace norma;
TEST_CASE("smoke: y = sum(a*b + a) gradients") {
  Tensor a = tensor({1, 2, 3}).requires_grad_();
  Tensor b = tensor({4, 5, 6}).requires_grad_();
  Tensor y = (a * b + a).sum();
  y.backward();
  CHECK(y.item() == Approx(4 + 10 + 18 + 6));
  CHECK(a.grad().to_vector() == std::vector<float>{5, 6, 7});
  CHECK(b.grad().to_vector() == std::vector<float>{1, 2, 3});
}
