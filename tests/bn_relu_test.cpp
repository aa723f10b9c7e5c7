// BatchNorm2d with its ReLU fused (BatchNormArgs::relu, BatchNorm2d::forward_relu,
// and Sequential / BasicBlock fusing the pair): the same numbers as the two ops
// one after the other, bit for bit, in every mode and layout; gradcheck; which
// pairs are fused.
#include "test_util.h"

#include <norma/layers/activation.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/pooling.h>
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
// of the same inputs; with pool, max_pool2d(., 2) of that (the ReLU only with
// with_relu), fused or as three ops. With the ReLU, dy has NaN at a few places
// where the output is 0 (the ReLU's backward gives 0 there).
Run run(bool fused, const Tensor& x0, const Tensor& g0, const Tensor& b0, const Tensor& dy0, BatchNormArgs a,
        bool pool = false, bool with_relu = true) {
  Run r;
  Tensor x = x0.clone().requires_grad_();
  Tensor g = g0.defined() ? g0.clone().requires_grad_(a.affine_grad) : Tensor();
  Tensor b = b0.defined() ? b0.clone().requires_grad_(a.affine_grad) : Tensor();
  r.running_mean = full({x0.size(a.layout == Layout::NCHW ? 1 : 3)}, 0.5f);
  r.running_var = full(r.running_mean.shape(), 2.0f);
  a.relu = fused && with_relu, a.pool = fused && pool;
  Tensor y = batch_norm2d(x, g, b, r.running_mean, r.running_var, a);
  if (!fused && with_relu) y = relu(y);
  if (!fused && pool) y = max_pool2d(y, 2);
  r.y = y.detach();
  Tensor dy = dy0.clone();
  if (with_relu) {
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

// Every output of the two runs the same to the bit.
void check_bit_for_bit(const Run& fused, const Run& plain) {
  CHECK(max_abs_diff(fused.y, plain.y) == 0);
  CHECK(max_abs_diff(fused.dx, plain.dx) == 0);
  CHECK(max_abs_diff(fused.running_mean, plain.running_mean) == 0);
  CHECK(max_abs_diff(fused.running_var, plain.running_var) == 0);
  if (plain.dgamma.defined()) {
    CHECK(max_abs_diff(fused.dgamma, plain.dgamma) == 0);
    CHECK(max_abs_diff(fused.dbeta, plain.dbeta) == 0);
  }
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
          check_bit_for_bit(fused, plain);
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

// ---- with the 2x2 max pool fused after (BatchNormArgs::pool)

TEST_CASE("batch_norm2d pool=true: bit for bit max_pool2d(relu(batch_norm2d(x)), 2), every mode") {
  manual_seed(31);
  // Small (one thread), large (threads over channels; dx written with streaming
  // stores from 16 MiB on is another test's), odd sizes (a last row and column
  // in no window, which still get dx from the BatchNorm), and rows of 13
  // windows (the backward's vectors of 8 and 4, then one alone).
  for (Shape shape : {Shape{4, 3, 6, 4}, Shape{16, 3, 32, 32}, Shape{3, 2, 5, 7}, Shape{2, 3, 9, 26}})
    for (bool with_relu : {true, false})
      for (bool affine : {true, false})
        for (int mode = 0; mode < 3; ++mode) {  // 0 train, 1 eval, 2 freeze
          CAPTURE(shape, with_relu, affine, mode);
          const int64_t C = shape[1];
          Tensor x = randn(shape) * 2.0f + 0.3f;
          Tensor dy = randn({shape[0], C, shape[2] / 2, shape[3] / 2});
          Tensor g = affine ? rand({C}) + 0.5f : Tensor(), b = affine ? randn({C}) : Tensor();
          BatchNormArgs a;
          a.use_batch_stats = mode == 0;
          a.affine_grad = mode != 2;
          a.momentum = mode == 0 ? 0.1 : -1;
          const Run fused = run(true, x, g, b, dy, a, true, with_relu), plain = run(false, x, g, b, dy, a, true, with_relu);
          check_bit_for_bit(fused, plain);
          for (float v : fused.dx.to_vector()) REQUIRE(std::isfinite(v));
        }
}

TEST_CASE("batch_norm2d pool=true: NaN inputs win their window as in max_pool2d and gradcheck passes") {
  manual_seed(32);
  Tensor x = randn({2, 2, 4, 4});
  x.data_ptr()[5] = NAN;  // image 0, channel 0, row 1, column 1: window (0, 0)
  for (bool with_relu : {true, false}) {
    CAPTURE(with_relu);
    BatchNormArgs a;
    a.use_batch_stats = false;  // running statistics: the NaN stays in its own window
    const Run fused = run(true, x, Tensor(), Tensor(), ones({2, 2, 2, 2}), a, true, with_relu);
    const Run plain = run(false, x, Tensor(), Tensor(), ones({2, 2, 2, 2}), a, true, with_relu);
    CHECK(std::isnan(fused.y.at({0, 0, 0, 0})) == !with_relu);  // the ReLU turns a NaN into 0
    CHECK(std::isnan(max_abs_diff(fused.y, plain.y)) == false);
    CHECK(max_abs_diff(fused.y, plain.y) == 0);
  }
  // Finite differences across the ReLU's kink or a change of argmax mean
  // nothing: x is drawn again until every window's largest normalised value
  // is 0.05 clear of 0 and of the window's next value.
  for (bool train : {true, false}) {
    CAPTURE(train);
    Tensor g = (rand({2}) + 0.5f).requires_grad_(), b = (randn({2}) * 0.5f).requires_grad_();
    Tensor rm = randn({2}), rv = rand({2}) + 0.5f;
    BatchNormArgs a;
    a.use_batch_stats = train;
    Tensor xg;
    for (int tries = 0;; ++tries) {
      REQUIRE(tries < 10000);
      xg = randn({2, 2, 4, 2}).requires_grad_();
      NoGradGuard guard;
      const std::vector<float> v = batch_norm2d(xg, g, b, rm, rv, a).to_vector();
      bool clear = true;
      for (int64_t p = 0; p < 4 && clear; ++p)
        for (int64_t w = 0; w < 2 && clear; ++w) {  // window (p, 2w .. 2w+1 rows, both columns)
          std::vector<float> win;
          for (int64_t i : {0, 1, 2, 3}) win.push_back(v[size_t(p * 8 + (2 * w + i / 2) * 2 + i % 2)]);
          std::sort(win.begin(), win.end());
          clear = std::fabs(win[3]) > 0.05f && win[3] - win[2] > 0.05f;
        }
      if (clear) break;
    }
    a.relu = true, a.pool = true;
    auto r = gradcheck([&](const std::vector<Tensor>& in) { return batch_norm2d(in[0], in[1], in[2], rm, rv, a); },
                       {xg, g, b});
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("batch_norm2d pool=true: NHWC is an error and over a process group it runs the two ops") {
  BatchNormArgs a;
  a.pool = true;
  a.layout = Layout::NHWC;
  Tensor rm = zeros({3}), rv = ones({3});
  CHECK_THROWS_WITH(batch_norm2d(randn({2, 4, 4, 3}), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("batch_norm2d: pool=true pools (N, C, H, W) planes, but the input (2, 4, 4, 3) "
                                    "is NHWC (N, H, W, C)"));
  a.layout = Layout::NCHW;
  CHECK_THROWS_WITH(batch_norm2d(randn({2, 3, 1, 4}), Tensor(), Tensor(), rm, rv, a),
                    Catch::Contains("max_pool2d") && Catch::Contains("(2, 3, 1, 4)"));
  manual_seed(33);
  Tensor x = randn({4, 3, 6, 6}), dy = randn({4, 3, 3, 3}), g = rand({3}) + 0.5f, b = randn({3});
  a.process_group = dist::single_process();
  const Run grouped = run(true, x, g, b, dy, a, true);
  a.process_group = nullptr;
  const Run local = run(true, x, g, b, dy, a, true);
  CHECK(grouped.y.shape() == Shape{4, 3, 3, 3});
  NORMA_CHECK_CLOSE(grouped.y, local.y, 1e-6, 1e-6);
  NORMA_CHECK_CLOSE(grouped.dx, local.dx, 1e-5, 1e-6);
  NORMA_CHECK_CLOSE(grouped.dgamma, local.dgamma, 1e-5, 1e-6);
}

TEST_CASE("Sequential fuses a BatchNorm2d with a ReLU and a 2x2 MaxPool2d after it and only those") {
  manual_seed(34);
  auto bn = std::make_shared<BatchNorm2d>(3);
  Sequential fused{bn, std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(2)};
  Sequential wide{std::make_shared<BatchNorm2d>(3), std::make_shared<ReLU>(), std::make_shared<MaxPool2d>(3)};
  Sequential overlapping{std::make_shared<BatchNorm2d>(3), std::make_shared<ReLU>(),
                         std::make_shared<MaxPool2d>(2, Size2(1))};
  Sequential nhwc{std::make_shared<BatchNorm2d>(BatchNorm2dOptions(3).layout(Layout::NHWC)), std::make_shared<ReLU>(),
                  std::make_shared<MaxPool2d>(2)};
  CHECK(fuses_with_relu_pool(*fused[0], *fused[1], *fused[2]));
  CHECK_FALSE(fuses_with_relu_pool(*wide[0], *wide[1], *wide[2]));
  CHECK_FALSE(fuses_with_relu_pool(*overlapping[0], *overlapping[1], *overlapping[2]));
  CHECK_FALSE(fuses_with_relu_pool(*nhwc[0], *nhwc[1], *nhwc[2]));

  Tensor x = randn({4, 3, 6, 6}).requires_grad_();
  Tensor y = fused.forward(x);
  REQUIRE(y.grad_fn());
  CHECK(y.grad_fn()->name == "batch_norm2d_relu_pool");
  CHECK(bn->num_batches_tracked.item() == 1.0f);
  BatchNorm2d twin(3);
  CHECK(max_abs_diff(y, max_pool2d(relu(twin.forward(x)), 2)) == 0);
  CHECK(max_abs_diff(bn->running_var, twin.running_var) == 0);
  CHECK(wide.forward(x).grad_fn()->name == "max_pool2d");

  fused.eval(), twin.eval();
  NoGradGuard guard;
  CHECK(max_abs_diff(fused.forward(x), max_pool2d(relu(twin.forward(x)), 2)) == 0);
}
