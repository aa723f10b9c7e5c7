// BatchNorm2d: the worked example, gradcheck in both layouts and all modes,
// numerics with |mean| >> std, the momentum rules, errors.
#include "test_util.h"

#include <norma/layers/batchnorm2d.h>
#include <norma/layers/batchnorm_composite.h>

using namespace norma;
using namespace norma::nn;

namespace {
// Double-precision reference of the training forward for NCHW.
std::vector<float> reference_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  std::vector<float> xv = x.to_vector(), y(xv.size());
  for (int64_t c = 0; c < C; ++c) {
    double m = 0, v = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) m += xv[(n * C + c) * HW + i];
    m /= double(N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) v += (xv[(n * C + c) * HW + i] - m) * (xv[(n * C + c) * HW + i] - m);
    v /= double(N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        int64_t k = (n * C + c) * HW + i;
        y[k] = float((xv[k] - m) / std::sqrt(v + eps) * gamma.to_vector()[c] + beta.to_vector()[c]);
      }
  }
  return y;
}
}  // namespace

TEST_CASE("BatchNorm2d: the worked example, PyTorch convention") {
  BatchNorm2d bn(1);
  Tensor x = tensor({1, 2, 3, 4}).reshape({4, 1, 1, 1});
  Tensor y = bn.forward(x);
  CHECK(bn.running_mean.item() == Approx(0.25f).epsilon(1e-7));
  CHECK(bn.running_var.item() == Approx(1.0666667f).epsilon(1e-7));
  CHECK(bn.num_batches_tracked.item() == 1.0f);
  // y = (x - 2.5) / sqrt(1.25 + 1e-5)
  CHECK(y.at({0, 0, 0, 0}) == Approx(-1.5 / std::sqrt(1.25 + 1e-5)).epsilon(1e-6));
  CHECK(y.at({3, 0, 0, 0}) == Approx(1.5 / std::sqrt(1.25 + 1e-5)).epsilon(1e-6));
}

TEST_CASE("BatchNorm2d: eval uses the running statistics") {
  BatchNorm2d bn(2);
  {
    NoGradGuard g;
    bn.running_mean.copy_(tensor({1.0f, -2.0f}));
    bn.running_var.copy_(tensor({4.0f, 0.25f}));
    bn.weight.copy_(tensor({2.0f, 3.0f}));
    bn.bias.copy_(tensor({0.5f, -0.5f}));
  }
  bn.eval();
  Tensor x = tensor({3.0f, 0.0f}).reshape({1, 2, 1, 1});  // m = 1 is fine in eval
  Tensor y = bn.forward(x);
  CHECK(y.at({0, 0, 0, 0}) == Approx((3.0 - 1.0) / std::sqrt(4.0 + 1e-5) * 2.0 + 0.5));
  CHECK(y.at({0, 1, 0, 0}) == Approx((0.0 + 2.0) / std::sqrt(0.25 + 1e-5) * 3.0 - 0.5));
  CHECK(bn.num_batches_tracked.item() == 0.0f);  // eval does not count
  CHECK(bn.running_mean.to_vector() == std::vector<float>{1.0f, -2.0f});
}

TEST_CASE("batch_norm2d: gradcheck in both layouts, affine on and off, train, eval and freeze") {
  manual_seed(11);
  for (Layout layout : {Layout::NCHW, Layout::NHWC})
    for (bool affine : {true, false})
      for (int mode = 0; mode < 3; ++mode) {  // 0 train, 1 eval, 2 freeze
        CAPTURE(int(layout), affine, mode);
        Shape shape = layout == Layout::NCHW ? Shape{3, 2, 3, 2} : Shape{3, 3, 2, 2};
        Tensor x = randn(shape).requires_grad_();
        // Frozen gamma and beta are constants (the module turns their requires_grad off).
        Tensor g = affine ? (rand({2}) + 0.5f).requires_grad_(mode != 2) : Tensor();
        Tensor b = affine ? randn({2}).requires_grad_(mode != 2) : Tensor();
        Tensor rm = randn({2}), rv = rand({2}) + 0.5f;
        BatchNormArgs a;
        a.layout = layout;
        a.use_batch_stats = mode == 0;
        a.affine_grad = mode != 2;
        std::vector<Tensor> inputs{x};
        if (affine) inputs.insert(inputs.end(), {g, b});
        auto r = gradcheck([&](const std::vector<Tensor>& in) {
          return batch_norm2d(in[0], affine ? in[1] : Tensor(), affine ? in[2] : Tensor(), rm, rv, a);
        }, inputs);
        INFO(r.message);
        CHECK(r.ok);
      }
}

TEST_CASE("BatchNorm2d: freeze gives gamma and beta no gradient and never updates") {
  BatchNorm2d bn(BatchNorm2dOptions(2).freeze(true));
  CHECK_FALSE(bn.weight.requires_grad());
  Tensor x = randn({4, 2, 3, 3}).requires_grad_();
  bn.forward(x).sum().backward();
  CHECK_FALSE(bn.weight.grad().defined());
  CHECK(bn.num_batches_tracked.item() == 0.0f);
  CHECK(bn.running_mean.to_vector() == std::vector<float>{0.0f, 0.0f});
  // dx = dy * gamma / sqrt(running_var + eps) with dy = 1, gamma = 1, running_var = 1.
  CHECK(x.grad().at({0, 0, 0, 0}) == Approx(1.0 / std::sqrt(1.0 + 1e-5)));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).freeze(true).track_running_stats(false)),
                    Catch::Contains("freeze=true needs track_running_stats=true"));
}

TEST_CASE("BatchNorm2d: float32-accurate when |mean| >> std, both layouts") {
  // NCHW takes two passes (mean, then squared deviations); NHWC one sweep of
  // sums shifted by each channel's first value, so its worst case is a first
  // value far out from the rest: the second input puts 1e4 + 300 there.
  manual_seed(5);
  const bool outlier = GENERATE(false, true);
  const Layout layout = GENERATE(Layout::NCHW, Layout::NHWC);
  CAPTURE(outlier, layout == Layout::NHWC);
  Tensor x = randn({8, 3, 4, 4}) + 1e4f;
  if (outlier)
    for (int64_t c = 0; c < 3; ++c) x.data_ptr()[c * 16] = 1e4f + 300.0f;  // (0, c, 0, 0)
  BatchNorm2d bn(BatchNorm2dOptions(3).layout(layout));
  const bool nhwc = layout == Layout::NHWC;
  Tensor y = bn.forward(nhwc ? x.permute({0, 2, 3, 1}).contiguous() : x);
  if (nhwc) y = y.permute({0, 3, 1, 2}).contiguous();
  Tensor ref = from_vector(reference_forward(x, bn.weight, bn.bias, 1e-5), x.shape());
  NORMA_CHECK_CLOSE(y, ref, 1e-5, 1e-5);
}

TEST_CASE("BatchNorm2d: NHWC equals NCHW on the permuted input") {
  manual_seed(6);
  Tensor x = randn({4, 3, 5, 2});
  BatchNorm2d a(3), b(BatchNorm2dOptions(3).layout(Layout::NHWC));
  Tensor ya = a.forward(x);
  Tensor yb = b.forward(x.permute({0, 2, 3, 1}).contiguous()).permute({0, 3, 1, 2});
  NORMA_CHECK_CLOSE(yb, ya, 1e-6, 1e-6);
  NORMA_CHECK_CLOSE(b.running_var, a.running_var, 1e-6, 1e-7);
}

TEST_CASE("BatchNorm2d: tensors of 16 MiB and more (written with streaming stores) equal NHWC, fwd and bwd") {
  // Both layouts write y and dx of tensors this large with streaming stores
  // through an L1 buffer, each by its own code (NCHW a plane at a time, NHWC
  // whole rows at a time), so each checks the other. The odd shape leaves
  // unaligned starts and chunk tails; 300 channels are wider than NHWC's
  // buffer, which it then writes directly.
  manual_seed(8);
  const Shape shape = GENERATE(Shape{17, 4, 255, 255}, Shape{8, 2, 512, 512}, Shape{1, 300, 120, 120});
  const bool relu = GENERATE(false, true);
  CAPTURE(shape, relu);
  const int64_t C = shape[1];
  Tensor x0 = randn(shape), dy0 = randn(shape), g0 = randn({C}), b0 = randn({C});
  auto run = [&](Layout layout) {
    BatchNorm2d bn(BatchNorm2dOptions(C).layout(layout));
    {
      NoGradGuard no_grad;
      bn.weight.copy_(g0), bn.bias.copy_(b0);
    }
    const bool nhwc = layout == Layout::NHWC;
    Tensor x = (nhwc ? x0.permute({0, 2, 3, 1}).contiguous() : x0.clone()).requires_grad_();
    Tensor y = relu ? bn.forward_relu(x) : bn.forward(x);
    y.backward(nhwc ? dy0.permute({0, 2, 3, 1}).contiguous() : dy0);
    Tensor dx = x.grad();
    if (nhwc) y = y.permute({0, 3, 1, 2}), dx = dx.permute({0, 3, 1, 2});
    return std::vector<Tensor>{y.detach(), dx, bn.weight.grad(), bn.bias.grad()};
  };
  const std::vector<Tensor> nchw = run(Layout::NCHW), nhwc = run(Layout::NHWC);
  NORMA_CHECK_CLOSE(nchw[0], nhwc[0], 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(nchw[1], nhwc[1], 1e-4, 1e-6);
  NORMA_CHECK_CLOSE(nchw[2], nhwc[2], 1e-4, 1e-2);
  NORMA_CHECK_CLOSE(nchw[3], nhwc[3], 1e-4, 1e-2);
}

TEST_CASE("BatchNorm2d: momentum None is the cumulative average, schedule switches at its floor") {
  manual_seed(8);
  BatchNorm2d cum(BatchNorm2dOptions(1).momentum(MomentumRule::cumulative()));
  BatchNorm2d sched(BatchNorm2dOptions(1).momentum(MomentumRule::schedule(1.0, 0.1)));
  double sum_mean = 0, run_sched = 0;
  for (int t = 1; t <= 12; ++t) {
    Tensor x = randn({4, 1, 2, 2}) + float(t);
    double m = x.mean().item();
    sum_mean += m;
    double p = std::max(1.0 / t, 0.1);
    run_sched = (1 - p) * run_sched + p * m;
    cum.forward(x);
    sched.forward(x);
    CHECK(cum.running_mean.item() == Approx(sum_mean / t).epsilon(1e-5));
    CHECK(sched.running_mean.item() == Approx(run_sched).epsilon(1e-5));
  }
  CHECK(MomentumRule::decay(0.9).factor(5) == Approx(0.1));
}

TEST_CASE("BatchNorm2d: errors") {
  BatchNorm2d bn(3);
  CHECK_THROWS_WITH(bn.forward(zeros({1, 3, 1, 1})),
                    Catch::Contains("expected more than 1 value per channel when training, got input size (1, 3, 1, 1)"));
  CHECK(bn.num_batches_tracked.item() == 0.0f);  // a rejected batch is not counted
  CHECK_THROWS_WITH(bn.forward(zeros({2, 4, 2, 2})),
                    Catch::Contains("batch_norm2d: weight has shape (3,) but input (2, 4, 2, 2) has 4 channels"));
  CHECK_THROWS_WITH(bn.forward(zeros({2, 3, 2})), Catch::Contains("batch_norm2d: expected a 4-D input (N, C, H, W), got (2, 3, 2)"));
  CHECK_THROWS_WITH(BatchNorm2d(-1), Catch::Contains("BatchNorm2d: num_features must be positive (or 0 for lazy), got -1"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).eps(0)), Catch::Contains("BatchNorm2d: eps must be positive"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).momentum(MomentumRule::pytorch(1.5))),
                    Catch::Contains("momentum factors must lie in [0, 1]"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).inplace(true)).forward(zeros({2, 2, 2, 2})),
                    Catch::Contains("BatchNorm2d: inplace=true is only allowed in eval mode (training needs the input for backward)"));
}

TEST_CASE("BatchNorm2d: edge cases fail at the entry point, naming the op and values") {
  using Catch::Contains;
  // The issue's case: one value per channel in training (PyTorch: "Expected more than 1 value per channel
  // when training, got input size [1, 3, 1, 1]"); an empty batch as well.
  CHECK_THROWS_WITH(BatchNorm2d(3).forward(zeros({0, 3, 4, 4})),
                    Contains("batch_norm2d: expected more than 1 value per channel when training, got input size (0, 3, 4, 4)"));
  BatchNorm2d ev(3);
  ev.eval();
  CHECK(ev.forward(zeros({1, 3, 1, 1})).shape() == Shape{1, 3, 1, 1});  // eval: one value is fine
  CHECK(ev.forward(zeros({0, 3, 4, 4})).shape() == Shape{0, 3, 4, 4});  // and so is an empty batch
  // Non-finite hyper-parameters.
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).eps(NAN)), Contains("BatchNorm2d: eps must be positive and finite, got nan"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).eps(INFINITY)), Contains("BatchNorm2d: eps must be positive and finite, got inf"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).momentum(MomentumRule::pytorch(NAN))),
                    Contains("BatchNorm2d: momentum factors must lie in [0, 1], got init_factor 0 and min_factor nan"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(2).freeze(true).track_running_stats(false)),
                    Contains("BatchNorm2d: freeze=true needs track_running_stats=true (it normalises with the running statistics)"));
  // Unknown enum values: named, not read as the other layout.
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(3).layout(Layout(7))), Contains("BatchNorm2d: unknown layout 7 (not a Layout value)"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(3).variance_method(VarianceMethod(2))),
                    Contains("BatchNorm2d: unknown variance_method 2 (not a VarianceMethod value)"));
  CHECK_THROWS_WITH(BatchNorm2d(BatchNorm2dOptions(3).sync_rule(SyncRule(-1))),
                    Contains("BatchNorm2d: unknown sync_rule -1 (not a SyncRule value)"));
  BatchNormArgs a;
  a.layout = Layout(9);
  CHECK_THROWS_WITH(batch_norm2d(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Contains("batch_norm2d: unknown layout 9 (not a Layout value)"));
  CHECK_THROWS_WITH(batch_norm2d_composite(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Contains("batch_norm2d_composite: unknown layout 9 (not a Layout value)"));
  a = BatchNormArgs();
  a.variance_method = VarianceMethod(4);
  CHECK_THROWS_WITH(batch_norm2d(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Contains("batch_norm2d: unknown variance_method 4 (not a VarianceMethod value)"));
  a = BatchNormArgs();
  a.sync_rule = SyncRule(3);
  CHECK_THROWS_WITH(batch_norm2d(zeros({2, 3, 2, 2}), Tensor(), Tensor(), Tensor(), Tensor(), a),
                    Contains("batch_norm2d: unknown sync_rule 3 (not a SyncRule value)"));
  // Lazy modules.
  CHECK_THROWS_WITH(BatchNorm2d(0).forward(zeros({2, 0, 4, 4})), Contains("BatchNorm2d: cannot materialize with 0 channels"));
  BatchNorm2d lazy(0);
  lazy.materialize(3);
  CHECK_THROWS_WITH(lazy.materialize(4), Contains("BatchNorm2d: already has 3 channels, cannot materialize with 4"));
}

TEST_CASE("BatchNorm2d: parameters are not buffers") {
  BatchNorm2d bn(4);
  auto p = bn.named_parameters();
  auto b = bn.named_buffers();
  REQUIRE(p.size() == 2);
  CHECK(p[0].first == "weight");
  CHECK(p[1].first == "bias");
  REQUIRE(b.size() == 3);
  CHECK(b[0].first == "running_mean");
  CHECK(b[1].first == "running_var");
  CHECK(b[2].first == "num_batches_tracked");
  for (auto& [n, t] : b) CHECK_FALSE(t.requires_grad());
  BatchNorm2d nt(BatchNorm2dOptions(4).track_running_stats(false));
  CHECK(nt.named_buffers().empty());
  // Without running stats the batch statistics are used in eval too.
  nt.eval();
  Tensor x = randn({4, 4, 2, 2});
  Tensor y = nt.forward(x);
  CHECK(std::fabs(y.mean({0, 2, 3}).to_vector()[0]) < 1e-5);
}
