// BatchNorm2d with its ReLU fused (BatchNormArgs::relu, BatchNorm2d::forward_relu,
// and Sequential / BasicBlock fusing the pair): the same numbers as the two ops
// one after the other, bit for bit, in every mode and layout; gradcheck; which
// pairs are fused.
#include "test_util.h"

#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/residual.h>
#include <norma/layers/sequential.h>

using namespace norma;
using namespace norma::nn;

namespace {
// Largest |a - b| over the elements, NaN where exactly one of the two is NaN.
double max_abs_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::vector<float> u = a.to_vector(), v = b.to_vector();
  double d = 0;
  for (size_t i = 0; i < u.size(); ++i) {
    if (std::isnan(u[i]) != std::isnan(v[i])) return NAN;
    if (!std::isnan(u[i])) d = std::max(d, std::fabs(double(u[i]) - v[i]));
  }
  return d;
}

struct Run {
  Tensor y, dx, dgamma, dbeta, running_mean, running_var;
};

// relu(batch_norm2d(x)) forward and backward, fused or as two ops, on copies
// of the same inputs; dy has NaN at a few places where the output is 0 (the
// ReLU's backward gives 0 there).
Run run(bool fused, const Tensor& x0, const Tensor& g0, const Tensor& b0, const Tensor& dy0, BatchNormArgs a) {
  Run r;
  Tensor x = x0.clone().requires_grad_();
  Tensor g = g0.defined() ? g0.clone().requires_grad_(a.affine_grad) : Tensor();
  Tensor b = b0.defined() ? b0.clone().requires_grad_(a.affine_grad) : Tensor();
  r.running_mean = full({g0.defined() ? g0.size(0) : 3}, 0.5f);
  r.running_var = full(r.running_mean.shape(), 2.0f);
  a.relu = fused;
  Tensor y = batch_norm2d(x, g, b, r.running_mean, r.running_var, a);
  if (!fused) y = relu(y);
  r.y = y.detach();
  Tensor dy = dy0.clone();
  {
    float* d = dy.data_ptr();
    const float* out = r.y.data_ptr();
    for (int64_t i = 0, put = 0; i < dy.numel() && put < 5; ++i)
      if (out[i] == 0) d[i] = NAN, ++put;
  }
  y.backward(dy);
  r.dx = x.grad();
  if (g.defined() && a.affine_grad) r.dgamma = g.grad(), r.dbeta = b.grad();
  return r;
}
}  // namespace

TEST_CASE("batch_norm2d relu=true: bit for bit relu(batch_norm2d(x)), every mode and layout") {
  manual_seed(21);
  // The small shape runs on one thread, the large one splits across threads
  // and takes the channel-by-channel NCHW kernels' parallel loops.
  for (Shape nchw : {Shape{4, 3, 5, 3}, Shape{16, 3, 32, 32}})
    for (Layout layout : {Layout::NCHW, Layout::NHWC})
      for (bool affine : {true, false})
        for (int mode = 0; mode < 3; ++mode) {  // 0 train, 1 eval, 2 freeze
          CAPTURE(nchw, int(layout), affine, mode);
          const Shape shape = layout == Layout::NCHW ? nchw : Shape{nchw[0], nchw[2], nchw[3], nchw[1]};
          Tensor x = randn(shape) * 2.0f + 0.3f, dy = randn(shape);
          Tensor g = affine ? rand({3}) + 0.5f : Tensor(), b = affine ? randn({3}) : Tensor();
          BatchNormArgs a;
          a.layout = layout;
          a.use_batch_stats = mode == 0;
          a.affine_grad = mode != 2;
          a.momentum = mode == 0 ? 0.1 : -1;
          const Run fused = run(true, x, g, b, dy, a), plain = run(false, x, g, b, dy, a);
          CHECK(max_abs_diff(fused.y, plain.y) == 0);
          CHECK(max_abs_diff(fused.dx, plain.dx) == 0);
          CHECK(max_abs_diff(fused.running_mean, plain.running_mean) == 0);
          CHECK(max_abs_diff(fused.running_var, plain.running_var) == 0);
          if (plain.dgamma.defined()) {
            CHECK(max_abs_diff(fused.dgamma, plain.dgamma) == 0);
            CHECK(max_abs_diff(fused.dbeta, plain.dbeta) == 0);
          }
          // Something was cut off and something let through, and the NaNs of dy were masked.
          const std::vector<float> y = fused.y.to_vector();
          CHECK(std::count(y.begin(), y.end(), 0.0f) > 0);
          CHECK(std::count_if(y.begin(), y.end(), [](float v) { return v > 0; }) > 0);
          for (float v : fused.dx.to_vector()) REQUIRE(std::isfinite(v));
        }
}

TEST_CASE("batch_norm2d relu=true: the same over a process group (the split backward)") {
  manual_seed(22);
  Tensor x = randn({8, 4, 6, 6}), dy = randn({8, 4, 6, 6});
  Tensor g = rand({4}) + 0.5f, b = randn({4});
  BatchNormArgs a;
  a.process_group = dist::single_process();
  const Run fused = run(true, x, g, b, dy, a), plain = run(false, x, g, b, dy, a);
  CHECK(max_abs_diff(fused.y, plain.y) == 0);
  CHECK(max_abs_diff(fused.dx, plain.dx) == 0);
  CHECK(max_abs_diff(fused.dgamma, plain.dgamma) == 0);
  // And without a group, through the one-process kernels: the same numbers again.
  a.process_group = nullptr;
  const Run local = run(true, x, g, b, dy, a);
  NORMA_CHECK_CLOSE(local.dx, fused.dx, 1e-5, 1e-6);
  NORMA_CHECK_CLOSE(local.y, fused.y, 0, 0);
}

TEST_CASE("batch_norm2d relu=true: gradcheck in both layouts, train and eval") {
  manual_seed(23);
  for (Layout layout : {Layout::NCHW, Layout::NHWC})
    for (bool train : {true, false}) {
      CAPTURE(int(layout), train);
      Shape shape{3, 2, 2, 2};  // C = 2 in either layout
      Tensor g = (rand({2}) + 0.5f).requires_grad_(), b = (randn({2}) * 0.5f).requires_grad_();
      Tensor rm = randn({2}), rv = rand({2}) + 0.5f;
      BatchNormArgs a;
      a.layout = layout;
      a.use_batch_stats = train;
      // Finite differences across the ReLU's kink mean nothing: x is drawn
      // again until no normalised value lies within 0.05 of it (a step of
      // gradcheck's 1e-2 moves them by less).
      Tensor x;
      for (int tries = 0;; ++tries) {
        REQUIRE(tries < 1000);
        x = randn(shape).requires_grad_();
        NoGradGuard guard;
        const std::vector<float> y = batch_norm2d(x, g, b, rm, rv, a).to_vector();
        if (std::none_of(y.begin(), y.end(), [](float v) { return std::fabs(v) < 0.05f; })) break;
      }
      a.relu = true;
      auto r = gradcheck([&](const std::vector<Tensor>& in) { return batch_norm2d(in[0], in[1], in[2], rm, rv, a); },
                         {x, g, b});
      INFO(r.message);
      CHECK(r.ok);
    }
}

TEST_CASE("batch_norm2d relu=true: the backward needs gamma and beta as the forward saw them") {
  // The fused backward finds where the output was positive from x, gamma and
  // beta (it does not keep the output): changing beta in place in between
  // would move that boundary, so it makes the backward throw instead.
  manual_seed(24);
  Tensor x = randn({2, 3, 4, 4}).requires_grad_();
  Tensor g = (rand({3}) + 0.5f).requires_grad_(), b = randn({3}).requires_grad_();
  Tensor rm = zeros({3}), rv = ones({3});
  BatchNormArgs a;
  a.relu = true;
  Tensor y = batch_norm2d(x, g, b, rm, rv, a);
  {
    NoGradGuard no_grad;
    b.add_(1.0f);
  }
  CHECK_THROWS_WITH(y.sum().backward(),
                    Catch::Contains("saved by 'batch_norm2d_relu'") && Catch::Contains("modified in place"));
}

TEST_CASE("Sequential fuses a BatchNorm2d followed by a ReLU, and only that pair") {
  manual_seed(24);
  struct MyReLU : ReLU {  // a subclass may compute something else: never fused
    Tensor forward(const Tensor& x) override { return relu(x) * 2.0f; }
  };
  auto bn = std::make_shared<BatchNorm2d>(3);
  Sequential fused{bn, std::make_shared<ReLU>(true)};
  Sequential custom{std::make_shared<BatchNorm2d>(3), std::make_shared<MyReLU>()};
  CHECK(fuses_with_relu(*fused[0], *fused[1]));
  CHECK_FALSE(fuses_with_relu(*custom[0], *custom[1]));
  CHECK_FALSE(fuses_with_relu(*fused[1], *fused[0]));

  Tensor x = randn({4, 3, 5, 5}).requires_grad_();
  Tensor y = fused.forward(x);
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->name == "batch_norm2d_relu");
  CHECK(bn->num_batches_tracked.item() == 1.0f);  // one training forward, counted once
  BatchNorm2d twin(3);
  Tensor want = relu(twin.forward(x));
  CHECK(max_abs_diff(y, want) == 0);
  CHECK(max_abs_diff(bn->running_var, twin.running_var) == 0);

  Tensor yc = custom.forward(x);
  CHECK(yc.grad_fn()->name != "batch_norm2d_relu");
  CHECK(max_abs_diff(yc, want * 2.0f) == 0);

  // Eval, under NoGradGuard, with the in-place ReLU: the same numbers too.
  fused.eval(), twin.eval();
  NoGradGuard guard;
  CHECK(max_abs_diff(fused.forward(x), relu(twin.forward(x))) == 0);
}

TEST_CASE("BasicBlock fuses its first BatchNorm2d and ReLU") {
  manual_seed(25);
  BasicBlock block(4, 4, 1);
  manual_seed(25);
  BasicBlock same(4, 4, 1);  // the same parameters
  Tensor x = randn({2, 4, 6, 6}).requires_grad_();
  Tensor x2 = x.detach().requires_grad_();
  Tensor y = block.forward(x);
  y.sum().backward();
  // The composed forward, module by module.
  Tensor h = relu(same.bn1->forward(same.conv1->forward(x2)));
  Tensor want = relu(same.bn2->forward(same.conv2->forward(h)) + x2);
  want.sum().backward();
  CHECK(max_abs_diff(y, want) == 0);
  CHECK(max_abs_diff(x.grad(), x2.grad()) == 0);
  CHECK(max_abs_diff(block.conv1->parameters()[0].grad(), same.conv1->parameters()[0].grad()) == 0);
}
