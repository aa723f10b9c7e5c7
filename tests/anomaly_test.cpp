// Anomaly detection (core/anomaly_mode.h): the first op whose output, or whose
// backward's gradient, holds NaN or Inf is named with the shape, the count and
// the first index; with it off, the same code runs on and yields the NaN.
#include <cmath>
#include <limits>

#include <norma/layers/batchnorm2d.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/loss.h>

#include "test_util.h"

using namespace norma;
using norma::test::check_error;

namespace {
const float kInf = std::numeric_limits<float>::infinity();
const float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

TEST_CASE("detect_anomaly: off by default, DetectAnomalyGuard turns it on and restores it") {
  CHECK_FALSE(autograd::is_anomaly_enabled());
  {
    autograd::DetectAnomalyGuard outer;
    CHECK(autograd::is_anomaly_enabled());
    {
      autograd::DetectAnomalyGuard inner;
      CHECK(autograd::is_anomaly_enabled());
    }
    CHECK(autograd::is_anomaly_enabled());  // back to the outer guard's state, not off
  }
  CHECK_FALSE(autograd::is_anomaly_enabled());
  autograd::set_detect_anomaly(true);
  CHECK(autograd::is_anomaly_enabled());
  autograd::set_detect_anomaly(false);
  CHECK_FALSE(autograd::is_anomaly_enabled());
}

TEST_CASE("detect_anomaly: off, a NaN flows through forward and backward unchanged") {
  Tensor x = tensor({1, -1, 4}).requires_grad_();
  Tensor y = log(x);
  CHECK(std::isnan(y.to_vector()[1]));
  y.sum().backward();
  CHECK(x.grad().to_vector() == std::vector<float>{1, -1, 0.25f});  // d log x = 1/x, NaN or not
  Tensor z = tensor({4, 0}).requires_grad_();
  sqrt(z).sum().backward();
  CHECK(std::isinf(z.grad().to_vector()[1]));
}

TEST_CASE("detect_anomaly: forward names the op that made a NaN, its shape, count and first index") {
  autograd::DetectAnomalyGuard anomaly;
  Tensor x = tensor({1, -1, 4, -2}).requires_grad_();
  check_error([&] { log(x); },
              {"detect_anomaly: 'log' produced an output of shape (4,) with 2 non-finite values (of 4), the first at "
               "[1] = nan; its inputs held none, so 'log' made it"});
  // Also without grad (an evaluation under NoGradGuard), and with an N-d index.
  NoGradGuard no_grad;
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({1, 1, 1, 1, 0, 1}, {2, 3});
  check_error([&] { div(a, b); },
              {"detect_anomaly: 'div' produced an output of shape (2, 3) with 1 non-finite value (of 6), the first at "
               "[1, 1] = inf; its inputs held none, so 'div' made it"});
  CHECK(div(b, a).numel() == 6);  // finite outputs pass
}

TEST_CASE("detect_anomaly: forward names the inputs that already held non-finite values") {
  autograd::DetectAnomalyGuard anomaly;
  // A leaf (as a parameter an optimizer step made infinite): the first op that
  // reads it is named, and so is the input it came from. The output is a
  // strided view (permute), read through its strides.
  Tensor w = from_vector({1, 2, kInf, 4, 5, 6}, {2, 3}).requires_grad_();
  check_error([&] { w.permute({1, 0}); },
              {"detect_anomaly: 'permute' produced an output of shape (3, 2) with 1 non-finite value (of 6), the first "
               "at [2, 0] = inf; its input 0 of shape (2, 3) already held 1 non-finite value (of 6), the first at "
               "[0, 2] = inf"});
  // conv2d: the weight (input 1) is infinite, the data is not.
  Tensor x = ones({1, 1, 3, 3});
  Tensor weight = from_vector({1, 0, 0, kInf}, {1, 1, 2, 2}).requires_grad_();
  Tensor bias = zeros({1}).requires_grad_();
  check_error([&] { nn::conv2d(x, weight, bias); },
              {"detect_anomaly: 'conv2d' produced an output of shape (1, 1, 2, 2) with 4 non-finite values (of 4), "
               "the first at [0, 0, 0, 0] = inf; its input 1 of shape (1, 1, 2, 2) already held 1 non-finite value"});
}

TEST_CASE("detect_anomaly: a fused op (batch_norm2d, cross_entropy) is named as the op") {
  autograd::DetectAnomalyGuard anomaly;
  nn::BatchNorm2d bn(2);
  Tensor x = from_vector({1, 2, 3, kNaN, 5, 6, 7, 8}, {2, 2, 1, 2}).requires_grad_();
  check_error([&] { bn.forward(x); },
              {"detect_anomaly: 'batch_norm2d' produced an output of shape (2, 2, 1, 2)", "its input 0 of shape (2, 2, 1, 2)"});
  Tensor logits = from_vector({0, 1, kInf, 0}, {2, 2}).requires_grad_();
  check_error([&] { nn::cross_entropy(logits, tensor({0, 1})); },
              {"detect_anomaly: 'cross_entropy' produced an output of shape () with 1 non-finite value (of 1)"});
}

TEST_CASE("detect_anomaly: backward names the node whose gradient became non-finite") {
  Tensor x = tensor({4, 0, 9}).requires_grad_();
  Tensor loss = (sqrt(x) * 2.0f).sum();  // forward finite: sqrt(0) = 0; backward 1/sqrt(0) = inf
  autograd::DetectAnomalyGuard anomaly;
  check_error([&] { loss.backward(); },
              {"detect_anomaly: the backward of 'sqrt' computed a gradient of shape (3,) for its input 0 with 1 "
               "non-finite value (of 3), the first at [1] = inf; the gradient it received was finite, so the backward "
               "of 'sqrt' made it"});
  CHECK_FALSE(x.grad().defined());  // stopped before the leaf was written

  // A non-finite gradient handed in names where it came from.
  Tensor y = x * 2.0f;
  check_error([&] { y.backward(tensor({1, kNaN, 1})); },
              {"detect_anomaly: the gradient passed to backward(), of shape (3,), holds 1 non-finite value (of 3), the "
               "first at [1] = nan"});

  // A finite graph runs through and matches the run without anomaly detection.
  Tensor z = tensor({1, 2, 3}).requires_grad_();
  (log(z) * z).sum().backward();
  NORMA_CHECK_CLOSE(z.grad(), log(tensor({1, 2, 3})) + 1.0f, 1e-6, 1e-6);
}

TEST_CASE("detect_anomaly: a gradient that arrives non-finite is reported as received") {
  // Two finite gradients (3e38 each) sum to inf on their way into h; h's node
  // (a mul) passes on what it received, and the error says so.
  Tensor a = tensor({1}).requires_grad_();
  Tensor h = a * 1.0f;
  Tensor loss = (h * 3e38f + h * 3e38f).sum();
  autograd::DetectAnomalyGuard anomaly;
  check_error([&] { loss.backward(); },
              {"detect_anomaly: the backward of 'mul' computed a gradient of shape (1,) for its input 0 with 1 "
               "non-finite value (of 1), the first at [0] = inf; the gradient it received, of shape (1,), already held "
               "1 non-finite value (of 1), the first at [0] = inf"});
}
