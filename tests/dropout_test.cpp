// Dropout: statistics of the mask, scaling, train/eval, seeding, gradient, errors.
#include "test_util.h"

#include <cmath>

#include <norma/layers/dropout.h>

using namespace norma;
using namespace norma::nn;
using Catch::Contains;

TEST_CASE("dropout: zeroes a fraction p and scales the rest by 1/(1-p)") {
  manual_seed(21);
  const int64_t n = 200000;
  for (double p : {0.1, 0.5, 0.8}) {
    CAPTURE(p);
    Tensor y = dropout(ones({n}), p);
    std::vector<float> v = y.to_vector();
    int64_t zeros_seen = 0;
    bool scaled = true;
    for (float f : v) {
      if (f == 0.0f) ++zeros_seen;
      else scaled = scaled && f == float(1.0 / (1.0 - p));
    }
    CHECK(scaled);
    // Binomial(n, p): 5 standard deviations are below 0.0012 of n here.
    CHECK(std::fabs(double(zeros_seen) / double(n) - p) < 0.005);
    CHECK(y.mean().item() == Approx(1.0).epsilon(0.02));  // the expectation is kept
  }
}

TEST_CASE("dropout: seeded, eval is the identity, p = 0 and p = 1") {
  manual_seed(3);
  Tensor x = randn({4, 50});
  manual_seed(9);
  Tensor a = dropout(x, 0.3);
  manual_seed(9);
  Tensor b = dropout(x, 0.3);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(dropout(x, 0.3).to_vector() != a.to_vector());  // a fresh mask

  Dropout d(0.5);
  d.eval();
  CHECK(d.forward(x).is_same(x));
  d.train();
  CHECK(d.forward(x).to_vector() != x.to_vector());
  CHECK(dropout(x, 0.0).is_same(x));
  CHECK(dropout(x, 0.9, /*training=*/false).is_same(x));

  Tensor w = randn({3, 5}).requires_grad_();
  Tensor z = dropout(w, 1.0);
  CHECK(z.to_vector() == std::vector<float>(15, 0.0f));
  z.sum().backward();
  CHECK(w.grad().to_vector() == std::vector<float>(15, 0.0f));
}

TEST_CASE("dropout: backward multiplies by the same mask") {
  manual_seed(4);
  Tensor x = ones({6, 7}).requires_grad_();
  Tensor y = dropout(x, 0.4);
  Tensor dy = randn({6, 7});
  y.backward(dy);
  // y = mask for x = 1, so dx = dy * y.
  NORMA_CHECK_CLOSE(x.grad(), dy * y.detach(), 0, 1e-7);
  // gradcheck with the generator reseeded on every call, so each call sees one mask.
  Tensor v = randn({3, 8}).requires_grad_();
  auto r = gradcheck([](const std::vector<Tensor>& in) {
    manual_seed(77);
    return dropout(in[0], 0.25);
  }, {v});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("dropout: p outside 0..1 is refused, printed like PyTorch") {
  CHECK_THROWS_WITH(Dropout(1.5), Contains("Dropout: probability p must be in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(Dropout(-0.1), Contains("Dropout: probability p must be in [0, 1], got -0.1"));
  CHECK_THROWS_WITH(dropout(ones({2}), NAN), Contains("dropout: probability p must be in [0, 1], got nan"));
  CHECK_THROWS_WITH(dropout(Tensor(), 0.5), Contains("dropout: input is an undefined tensor"));
  CHECK(Dropout().repr() == "Dropout(p=0.5, inplace=False)");
  CHECK(Dropout(0.1).repr() == "Dropout(p=0.1, inplace=False)");
  CHECK(Dropout(0).repr() == "Dropout(p=0.0, inplace=False)");
  CHECK(Dropout(1).repr() == "Dropout(p=1.0, inplace=False)");
}
