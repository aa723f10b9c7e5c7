// Losses: known values, label smoothing, stability at large logits, the fused
// cross_entropy against one composed from primitives, gradcheck, errors.
#include "test_util.h"

#include <cmath>

#include <norma/layers/loss.h>

using namespace norma;
using namespace norma::nn;
using Catch::Contains;

namespace {
constexpr Reduction kAll[] = {Reduction::mean, Reduction::sum, Reduction::none};

// log_softmax over dim 1 composed from primitives: the oracle for the fused node.
Tensor log_softmax_composed(const Tensor& z) {
  Tensor shifted = z - z.max({1}, true).detach();
  return shifted - shifted.exp().sum({1}, true).log();
}

void check_grad(const std::function<Tensor(const std::vector<Tensor>&)>& fn, const std::vector<Tensor>& in) {
  auto r = gradcheck(fn, in);
  INFO(r.message);
  CHECK(r.ok);
}
}  // namespace

TEST_CASE("loss: cross_entropy known values") {
  // -log softmax([1, 2, 3])[2] = log(e + e^2 + e^3) - 3.
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  Tensor z = from_vector({1, 2, 3}, {1, 3});
  CHECK(cross_entropy(z, tensor({2})).item() == Approx(lse - 3));
  // Smoothing 0.1: 0.9 * nll + 0.1 * mean_c(lse - z_c) = nll + 0.1 * (lse - 2 - nll).
  CHECK(cross_entropy(z, tensor({2}), Reduction::mean, 0.1).item() == Approx(0.9 * (lse - 3) + 0.1 * (lse - 2)));
  // Equal logits: log(C) for any target and any smoothing.
  CHECK(cross_entropy(zeros({4, 5}), tensor({0, 1, 2, 4}), Reduction::mean, 0.3).item() == Approx(std::log(5.0)));
  Tensor none = cross_entropy(zeros({4, 5}), tensor({0, 1, 2, 4}), Reduction::none);
  CHECK(none.shape() == Shape{4});
  CHECK(cross_entropy(zeros({4, 5}), tensor({0, 1, 2, 4}), Reduction::sum).item() == Approx(4 * std::log(5.0)));
  CHECK(cross_entropy(zeros({4, 5}), tensor({0, 1, 2, 4})).dim() == 0);
  // Gradient (mean): (softmax - one_hot) / N.
  Tensor w = from_vector({0, 0, 0, 0}, {2, 2}).requires_grad_();
  cross_entropy(w, tensor({0, 1})).backward();
  CHECK(w.grad().to_vector() == std::vector<float>{-0.25f, 0.25f, 0.25f, -0.25f});
}

TEST_CASE("loss: cross_entropy is stable for logits of +-1000") {
  Tensor z = from_vector({1000, -1000, 0, -1000, 1000, 1000}, {2, 3}).requires_grad_();
  Tensor l = cross_entropy(z, tensor({0, 0}), Reduction::none);
  CHECK(l.at({0}) == Approx(0.0).margin(1e-6));
  CHECK(l.at({1}) == Approx(2000 + std::log(2.0)));
  l.sum().backward();
  NORMA_CHECK_CLOSE(z.grad(), from_vector({0, 0, 0, -1, 0.5f, 0.5f}, {2, 3}), 1e-6, 1e-7);
  Tensor s = cross_entropy(z.detach(), tensor({1, 1}), Reduction::mean, 0.1);
  // Row 0: 0.9 * 2000 + 0.1 * mean(0, 2000, 1000); row 1: 0.9 * log 2 + 0.1 * mean(2000 + log 2, log 2, log 2).
  const double want = (0.9 * 2000 + 100 + 0.9 * std::log(2.0) + 0.1 * (2000 / 3.0 + std::log(2.0))) / 2;
  CHECK(s.item() == Approx(want).epsilon(1e-6));
}

TEST_CASE("loss: fused cross_entropy matches nll_loss(log_softmax) composed from primitives") {
  manual_seed(31);
  Tensor z = randn({7, 6}) * 3.0f, t = tensor({0, 5, 3, 3, 1, 2, 4});
  for (Reduction r : kAll) {
    CAPTURE(int(r));
    Tensor a = z.clone().requires_grad_(), b = z.clone().requires_grad_();
    Tensor fused = cross_entropy(a, t, r), composed = nll_loss(log_softmax_composed(b), t, r);
    NORMA_CHECK_CLOSE(fused, composed, 1e-5, 1e-6);
    Tensor dy = randn(fused.shape());
    fused.backward(dy);
    composed.backward(dy);
    NORMA_CHECK_CLOSE(a.grad(), b.grad(), 1e-5, 1e-6);
  }
  // Label smoothing composed: (1 - eps) nll + eps * mean over classes of -log_softmax.
  Tensor a = z.clone().requires_grad_(), b = z.clone().requires_grad_();
  Tensor fused = cross_entropy(a, t, Reduction::mean, 0.2);
  Tensor lp = log_softmax_composed(b);
  Tensor composed = 0.8f * nll_loss(lp, t) + 0.2f * (-lp).mean({1}).mean();
  NORMA_CHECK_CLOSE(fused, composed, 1e-5, 1e-6);
  fused.backward();
  composed.backward();
  NORMA_CHECK_CLOSE(a.grad(), b.grad(), 1e-5, 1e-6);
}

TEST_CASE("loss: cross_entropy gradcheck for every reduction, with and without label smoothing") {
  manual_seed(32);
  Tensor t = tensor({2, 0, 4, 1});
  for (Reduction r : kAll)
    for (double eps : {0.0, 0.1, 1.0}) {
      CAPTURE(int(r), eps);
      check_grad([&](const auto& in) { return cross_entropy(in[0], t, r, eps); }, {randn({4, 5}).requires_grad_()});
    }
}

TEST_CASE("loss: nll_loss known values and gradcheck") {
  Tensor lp = from_vector({-1, -2, -3, -4}, {2, 2}).requires_grad_();
  CHECK(nll_loss(lp, tensor({1, 0})).item() == Approx(2.5));
  CHECK(nll_loss(lp, tensor({1, 0}), Reduction::sum).item() == Approx(5.0));
  CHECK(nll_loss(lp, tensor({1, 0}), Reduction::none).to_vector() == std::vector<float>{2, 3});
  nll_loss(lp, tensor({1, 0})).backward();
  CHECK(lp.grad().to_vector() == std::vector<float>{0, -0.5f, -0.5f, 0});
  manual_seed(33);
  for (Reduction r : kAll) {
    CAPTURE(int(r));
    check_grad([&](const auto& in) { return nll_loss(in[0], tensor({1, 1, 0}), r); }, {randn({3, 4}).requires_grad_()});
  }
}

TEST_CASE("loss: mse_loss known values and gradcheck of input and target") {
  Tensor a = tensor({1, 2, 3}), b = tensor({1, 0, 0});
  CHECK(mse_loss(a, b).item() == Approx(13.0 / 3));
  CHECK(mse_loss(a, b, Reduction::sum).item() == Approx(13.0));
  CHECK(mse_loss(a, b, Reduction::none).to_vector() == std::vector<float>{0, 4, 9});
  CHECK(mse_loss(a, b).dim() == 0);
  manual_seed(34);
  for (Reduction r : kAll) {
    CAPTURE(int(r));
    check_grad([&](const auto& in) { return mse_loss(in[0], in[1], r); },
               {randn({3, 4}).requires_grad_(), randn({3, 4}).requires_grad_()});
  }
}

TEST_CASE("loss: errors name the op, the index and the value") {
  Tensor z = zeros({2, 3});
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 3})),
                    Contains("cross_entropy: target[1] = 3 is out of range [0, 3) for logits (2, 3)"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({-1, 0})),
                    Contains("cross_entropy: target[0] = -1 is out of range [0, 3) for logits (2, 3)"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 1.5f})),
                    Contains("cross_entropy: target[1] = 1.5 is not an integer class index (logits (2, 3))"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, NAN})), Contains("cross_entropy: target[1] = nan is not an integer"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 1, 2})),
                    Contains("cross_entropy: target (3,) does not match logits (2, 3): expected (2,)"));
  CHECK_THROWS_WITH(cross_entropy(z, zeros({2, 1})),
                    Contains("cross_entropy: target (2, 1) does not match logits (2, 3): expected (2,)"));
  CHECK_THROWS_WITH(cross_entropy(zeros({2, 3, 4}), tensor({0, 1})),
                    Contains("cross_entropy: logits must be 2-D (N, C), got (2, 3, 4)"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 1}), Reduction::mean, 1.5),
                    Contains("cross_entropy: label_smoothing must be in [0, 1], got 1.5"));
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 1}), Reduction::mean, -0.1),
                    Contains("cross_entropy: label_smoothing must be in [0, 1], got -0.1"));
  CHECK_THROWS_WITH(cross_entropy(Tensor(), tensor({0})), Contains("cross_entropy: logits and target must be defined"));
  CHECK_THROWS_WITH(nll_loss(z, tensor({0, 7})),
                    Contains("nll_loss: target[1] = 7 is out of range [0, 3) for log_probs (2, 3)"));
  CHECK_THROWS_WITH(nll_loss(zeros({3}), tensor({0})), Contains("nll_loss: log_probs must be 2-D (N, C), got (3,)"));
  CHECK_THROWS_WITH(mse_loss(zeros({2, 3}), zeros({3, 2})),
                    Contains("mse_loss: input (2, 3) and target (3, 2) must have the same shape"));
  CHECK_THROWS_WITH(CrossEntropyLoss(Reduction::sum, 2.0),
                    Contains("CrossEntropyLoss: label_smoothing must be in [0, 1], got 2"));
  CHECK_THROWS_WITH(mse_loss(Tensor(), zeros({2})), Contains("mse_loss: input and target must be defined tensors"));
  // Unknown enum values and the mean of an empty batch (0 / 0) fail instead of giving a number.
  CHECK_THROWS_WITH(cross_entropy(z, tensor({0, 1}), Reduction(7)),
                    Contains("cross_entropy: unknown reduction 7 (not a Reduction value)"));
  CHECK_THROWS_WITH(nll_loss(z, tensor({0, 1}), Reduction(-1)), Contains("nll_loss: unknown reduction -1 (not a Reduction value)"));
  CHECK_THROWS_WITH(mse_loss(z, z, Reduction(3)), Contains("mse_loss: unknown reduction 3 (not a Reduction value)"));
  CHECK_THROWS_WITH(CrossEntropyLoss(Reduction(5)), Contains("CrossEntropyLoss: unknown reduction 5 (not a Reduction value)"));
  CHECK_THROWS_WITH(cross_entropy(zeros({0, 10}), zeros({0})),
                    Contains("cross_entropy: reduction mean over the empty input (0, 10) is undefined (use Reduction::sum or none)"));
  CHECK_THROWS_WITH(nll_loss(zeros({0, 4}), zeros({0})), Contains("nll_loss: reduction mean over the empty input (0, 4) is undefined"));
  CHECK_THROWS_WITH(mse_loss(zeros({2, 0}), zeros({2, 0})), Contains("mse_loss: reduction mean over the empty input (2, 0) is undefined"));
  // Sum and none over an empty batch are well defined.
  CHECK(cross_entropy(zeros({0, 10}), zeros({0}), Reduction::sum).item() == 0.0f);
  CHECK(nll_loss(zeros({0, 10}), zeros({0}), Reduction::none).shape() == Shape{0});
  CHECK(mse_loss(zeros({0}), zeros({0}), Reduction::sum).item() == 0.0f);
}

TEST_CASE("loss modules: call the functional forms and print like PyTorch") {
  manual_seed(35);
  Tensor z = randn({3, 4}), t = tensor({3, 0, 1});
  CrossEntropyLoss ce(Reduction::sum, 0.1);
  CHECK(ce(z, t).item() == cross_entropy(z, t, Reduction::sum, 0.1).item());
  CHECK(NLLLoss()(z, t).item() == nll_loss(z, t).item());
  CHECK(MSELoss(Reduction::none)(z, z * 2.0f).to_vector() == mse_loss(z, z * 2.0f, Reduction::none).to_vector());
  CHECK(ce.repr() == "CrossEntropyLoss()");
  CHECK(NLLLoss().repr() == "NLLLoss()");
  CHECK(MSELoss().repr() == "MSELoss()");
}
