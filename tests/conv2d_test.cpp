// Conv2d, the op and the module: which kernels run, gradcheck through each
// path, known values, errors. The kernels themselves are held equal in
// conv_kernels_test.cpp.
#include "conv_naive.h"
#include "test_util.h"

#include <cmath>
#include <cstdlib>
#include <optional>

#if NORMA_FAST_KERNELS
#include <norma/layers/fast/kernels.h>
#endif
#include <norma/core/kernel_policy.h>
#include <norma/layers/conv2d.h>

using namespace norma;
using namespace norma::nn;
using norma::test::fast_kernels_or_skip;


TEST_CASE("conv2d: Winograd's dw is right when called from inside a parallel region") {
  if (!fast_kernels_or_skip()) return;
  KernelPolicyGuard g(KernelPolicy{});
  // Nested, the runtime gives the conv one thread: all blocks land in the
  // first thread's slice of dU, whose first block writes over it.
  manual_seed(17);
  Tensor x = randn({4, 16, 16, 16}), w = randn({16, 16, 3, 3}) * (1 / std::sqrt(144.0f));
  const ConvShape s = conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1);
  REQUIRE(conv2d_winograd_applies(s));
  Tensor dy = randn({s.N, s.K, s.OH, s.OW}), dw = full(w.shape(), NAN), dw_ref = empty(w.shape());
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    conv2d_backward(nullptr, dw.data_ptr(), nullptr, dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
  }
  test::conv2d_backward_naive(nullptr, dw_ref.data_ptr(), nullptr, dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
  const float per_sum = float(1 / std::sqrt(double(s.N * s.OH * s.OW)));
  NORMA_CHECK_CLOSE(dw * per_sum, dw_ref * per_sum, 1e-4, 1e-5);
}

TEST_CASE("conv2d: the direct path is taken for stride 1, one group and at most 64 taps, and only those") {
  if (!fast_kernels_or_skip()) return;
  KernelPolicyGuard g(KernelPolicy{});
  auto applies = [](Shape x, Shape w, Size2 stride, Size2 pad, Size2 dil, int64_t groups) {
    return conv2d_direct_applies(conv2d_shape(x, w, stride, pad, dil, groups));
  };
  CHECK(applies({128, 3, 32, 32}, {32, 3, 3, 3}, 1, 1, 1, 1));       // the RGB layer
  CHECK(applies({1, 1, 28, 28}, {8, 1, 5, 5}, 1, 0, 1, 1));          // MNIST's
  CHECK_FALSE(applies({1, 8, 9, 9}, {8, 8, 3, 3}, 1, 1, 1, 1));      // 72 taps: im2col
  CHECK_FALSE(applies({1, 3, 9, 9}, {8, 3, 3, 3}, 2, 1, 1, 1));      // stride 2
  CHECK_FALSE(applies({1, 4, 9, 9}, {8, 2, 3, 3}, 1, 1, 1, 2));      // groups
  CHECK_FALSE(applies({0, 3, 9, 9}, {8, 3, 3, 3}, 1, 1, 1, 1));      // empty batch
}

TEST_CASE("conv2d: gradcheck through the direct path") {
  if (!fast_kernels_or_skip()) return;
  KernelPolicyGuard g(KernelPolicy{});
  manual_seed(6);
  Tensor x = randn({2, 3, 5, 6}).requires_grad_();
  Tensor w = randn({10, 3, 3, 3}).requires_grad_();
  Tensor b = randn({10}).requires_grad_();
  REQUIRE(conv2d_direct_applies(conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1)));
  auto r = gradcheck([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, 1); }, {x, w, b});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("conv2d: Winograd is taken for stride-1 3x3 convolutions with 16 or more channels, and only those") {
  if (!fast_kernels_or_skip()) return;
  KernelPolicyGuard g(KernelPolicy{});
  auto applies = [](Shape x, Shape w, Size2 stride, Size2 pad, Size2 dil, int64_t groups) {
    return conv2d_winograd_applies(conv2d_shape(x, w, stride, pad, dil, groups));
  };
  CHECK(applies({128, 32, 32, 32}, {32, 32, 3, 3}, 1, 1, 1, 1));
  CHECK(applies({128, 64, 8, 8}, {128, 64, 3, 3}, 1, 1, 1, 1));
  CHECK_FALSE(applies({128, 3, 32, 32}, {32, 3, 3, 3}, 1, 1, 1, 1));   // the RGB layer: im2col
  CHECK_FALSE(applies({1, 32, 9, 9}, {32, 32, 3, 3}, 2, 1, 1, 1));     // stride 2
  CHECK_FALSE(applies({1, 32, 9, 9}, {32, 32, 3, 3}, 1, 1, 2, 1));     // dilation 2
  CHECK_FALSE(applies({1, 32, 9, 9}, {32, 16, 3, 3}, 1, 1, 1, 2));     // groups
  CHECK_FALSE(applies({1, 32, 9, 9}, {32, 32, 3, 3}, 1, 3, 1, 1));     // padding 3
  CHECK_FALSE(applies({1, 32, 9, 9}, {32, 32, 5, 5}, 1, 2, 1, 1));     // 5x5
  CHECK_FALSE(applies({0, 32, 9, 9}, {32, 32, 3, 3}, 1, 1, 1, 1));     // empty batch
}

TEST_CASE("conv2d: gradcheck through the Winograd path") {
  if (!fast_kernels_or_skip()) return;
  KernelPolicyGuard g(KernelPolicy{});
  manual_seed(5);
  Tensor x = randn({2, 16, 5, 4}).requires_grad_();
  Tensor w = (randn({16, 16, 3, 3}) * 0.2f).requires_grad_();
  Tensor b = randn({16}).requires_grad_();
  REQUIRE(conv2d_winograd_applies(conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1)));
  auto r = gradcheck([](const std::vector<Tensor>& in) { return conv2d(in[0], in[1], in[2], 1, 1); }, {x, w, b});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("conv2d: known values") {
  // A 3x3 all-ones kernel over a 3x3 input with padding 1 sums each neighbourhood.
  Tensor x = arange(1, 10).reshape({1, 1, 3, 3});
  Tensor w = ones({1, 1, 3, 3});
  Tensor y = conv2d(x, w, tensor({0.5f}), 1, 1);
  CHECK(y.to_vector() == std::vector<float>{12.5f, 21.5f, 16.5f, 27.5f, 45.5f, 33.5f, 24.5f, 39.5f, 28.5f});
}

TEST_CASE("conv2d: gradcheck of input, weight and bias") {
  // On the kernels the environment picks (the direct path for the first) and on the reference ones.
  for (const bool reference : {false, true}) {
  std::optional<KernelPolicyGuard> g;
  if (reference) g.emplace(KernelPolicy{.fast = false});
  manual_seed(3);
  for (auto [stride, pad, dil, groups] : {std::tuple{1, 1, 1, 1}, {2, 0, 1, 1}, {1, 2, 2, 2}}) {
    CAPTURE(reference, stride, pad, dil, groups);
    Tensor x = randn({2, 4, 5, 5}).requires_grad_();
    Tensor w = randn({4, 4 / groups, 3, 3}).requires_grad_();
    Tensor b = randn({4}).requires_grad_();
    // Bindings captured by name: clang 14 cannot capture structured bindings implicitly.
    auto r = gradcheck([stride = stride, pad = pad, dil = dil, groups = groups](const std::vector<Tensor>& in) {
      return conv2d(in[0], in[1], in[2], stride, pad, dil, groups);
    }, {x, w, b});
    INFO(r.message);
    CHECK(r.ok);
  }
  }
}

TEST_CASE("conv2d: a bad backward is caught by gradcheck against the same check") {
  // Guards the test above: perturb the weight gradient and the check must fail.
  manual_seed(4);
  Tensor x = randn({1, 2, 4, 4}).requires_grad_();
  Tensor w = randn({2, 2, 3, 3}).requires_grad_();
  auto wrong = [](const std::vector<Tensor>& in) {
    Tensor y = conv2d(in[0].detach(), in[1].detach(), Tensor(), 1, 1);
    Tensor x = in[0], w = in[1];
    autograd::record(y, "wrong_conv", {x, w}, [x, w](const Tensor&) {
      autograd::accumulate(w, ones(w.shape()));  // not the gradient
    });
    return y;
  };
  CHECK_FALSE(gradcheck(wrong, {x, w}).ok);
}

TEST_CASE("Conv2d module: parameters, shapes, PyTorch default init bounds") {
  manual_seed(0);
  Conv2d conv(Conv2dOptions(3, 16, 3).padding(1).bias(true));
  auto named = conv.named_parameters();
  REQUIRE(named.size() == 2);
  CHECK(named[0].first == "weight");
  CHECK(named[0].second.shape() == Shape{16, 3, 3, 3});
  CHECK(named[1].first == "bias");
  const float bound = 1.0f / std::sqrt(27.0f);  // kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
  for (float v : conv.weight.to_vector()) CHECK(std::fabs(v) <= bound);
  for (float v : conv.bias.to_vector()) CHECK(std::fabs(v) <= bound);
  CHECK(conv.weight.abs().max().item() > 0.8f * bound);  // and it spans the interval
  CHECK(conv.forward(randn({2, 3, 8, 8})).shape() == Shape{2, 16, 8, 8});
  CHECK(Conv2d(3, 8, 3, 2, 0, 1, 1, false).forward(randn({1, 3, 9, 9})).shape() == Shape{1, 8, 4, 4});
  CHECK(conv.repr() == "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
}

TEST_CASE("conv2d: errors name the op and every shape") {
  Tensor w = zeros({16, 3, 3, 3});
  CHECK_THROWS_WITH(conv2d(zeros({8, 4, 32, 32}), w, Tensor()),
                    Catch::Contains("conv2d: input (8, 4, 32, 32) has 4 channels but weight (16, 3, 3, 3) expects 3"));
  CHECK_THROWS_WITH(conv2d(zeros({8, 3, 32}), w, Tensor()), Catch::Contains("conv2d: input must be 4-D (N, C, H, W), got (8, 3, 32)"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 2, 2}), w, Tensor()),
                    Catch::Contains("conv2d: kernel (3, 3) (dilated (3, 3)) is larger than the padded input (2, 2)"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 8, 8}), w, zeros({8})),
                    Catch::Contains("conv2d: bias (8,) does not match the 16 output channels of weight (16, 3, 3, 3)"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 8, 8}), w, Tensor(), 0),
                    Catch::Contains("conv2d: stride (0, 0) and dilation (1, 1) must be >= 1"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 4, 8, 8}), zeros({3, 2, 3, 3}), Tensor(), 1, 0, 1, 2),
                    Catch::Contains("conv2d: groups 2 must divide both input channels 4"));
  CHECK_THROWS_WITH(Conv2d(3, 4, 3, 1, 0, 1, 2), Catch::Contains("Conv2d: groups 2 must divide in_channels 3 and out_channels 4"));
  CHECK_THROWS_WITH(Conv2d(0, 4, 3), Catch::Contains("Conv2d: in_channels 0, out_channels 4 and kernel_size (3, 3) must be positive"));
  CHECK_THROWS_WITH(Conv2d(3, 4, 3, {1, 0}), Catch::Contains("Conv2d: stride (1, 0) and dilation (1, 1) must be >= 1 and padding (0, 0) >= 0"));
  CHECK_THROWS_WITH(Conv2d(3, 4, 3, 1, {-1, 2}, 2),
                    Catch::Contains("Conv2d: stride (1, 1) and dilation (2, 2) must be >= 1 and padding (-1, 2) >= 0"));
  // Empty planes (not an empty batch) and an empty kernel are errors, not a bias-only output.
  CHECK_THROWS_WITH(conv2d(zeros({2, 0, 8, 8}), zeros({4, 0, 3, 3}), Tensor()),
                    Catch::Contains("conv2d: input (2, 0, 8, 8) must have non-zero channels, height and width"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 0, 0}), zeros({4, 3, 1, 1}), ones({4}), 1, 1),
                    Catch::Contains("conv2d: input (1, 3, 0, 0) must have non-zero channels, height and width"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 4, 4}), zeros({4, 3, 0, 3}), Tensor()),
                    Catch::Contains("conv2d: weight (4, 3, 0, 3) has an empty kernel (0, 3)"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 4, 4}), zeros({4, 3, 3, 3}), Tensor(), 1, 0, 3),
                    Catch::Contains("conv2d: kernel (3, 3) (dilated (7, 7)) is larger than the padded input (4, 4) of input (1, 3, 4, 4)"));
  CHECK_THROWS_WITH(conv2d(Tensor(), w, Tensor()), Catch::Contains("conv2d: input and weight must be defined tensors"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 8, 8}), zeros({16, 3, 3}), Tensor()),
                    Catch::Contains("conv2d: weight must be 4-D (K, C/groups, kh, kw), got (16, 3, 3)"));
  CHECK_THROWS_WITH(conv2d(zeros({1, 3, 8, 8}), w, Tensor(), 1, {0, -1}),
                    Catch::Contains("conv2d: stride (1, 1) and dilation (1, 1) must be >= 1 and padding (0, -1) >= 0"));
}

TEST_CASE("conv2d: an empty batch gives an empty output, forward and backward") {
  Tensor x = zeros({0, 3, 8, 8}).requires_grad_(), w = randn({4, 3, 3, 3}).requires_grad_();
  Tensor y = conv2d(x, w, Tensor(), 1, 1);
  CHECK(y.shape() == Shape{0, 4, 8, 8});
  y.sum().backward();
  CHECK(x.grad().shape() == Shape{0, 3, 8, 8});
  NORMA_CHECK_CLOSE(w.grad(), zeros({4, 3, 3, 3}), 0, 0);
}

TEST_CASE("conv2d: Winograd takes F(4x4) tiles only up to NORMA_WINOGRAD_F44 channels") {
#if !NORMA_FAST_KERNELS
  WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
#else
  const char* v = std::getenv("NORMA_WINOGRAD_F44");
  const int64_t limit = v ? std::atoll(v) : 0;
  CAPTURE(limit);
  for (int64_t summed : {1, 16, 32, 33, 64, 512})
    CHECK(fast::kernels().winograd_row_tile(summed) == (summed <= limit ? 4 : 2));
  CHECK(fast::kernels().winograd_row_tile(16) == (v ? 4 : 2));  // the F(4x4) run sets 32, the other nothing
#endif
}

TEST_CASE("conv2d: Winograd gives each image the same output whatever the batch around it") {
  if (!fast_kernels_or_skip()) return;
  // Evaluation in batches of another size must score the same (norma eval,
  // flip TTA): an image's output may not depend on which block it falls in,
  // nor on what an earlier block left in the scratch buffers. Up to rounding:
  // OpenBLAS may round a product with fewer columns differently (a bug in
  // the second gave errors of 10 and more).
  struct W {
    int64_t C, K, HW;
  };
  for (const int64_t f44 : {0, 32}) {
    KernelPolicyGuard g(KernelPolicy{.winograd_f44_channels = f44});
    for (const W& c : {W{32, 32, 32}, W{32, 64, 16}, W{64, 64, 16}, W{64, 128, 8}, W{16, 16, 20}, W{48, 48, 12}}) {
      CAPTURE(f44, c.C, c.K, c.HW);
      manual_seed(5);
      Tensor x = randn({7, c.C, c.HW, c.HW}), w = randn({c.K, c.C, 3, 3}) * float(1 / std::sqrt(9.0 * c.C));
      const ConvShape s7 = conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1);
      REQUIRE(conv2d_winograd_applies(s7));
      Tensor y7 = empty({7, c.K, c.HW, c.HW});
      conv2d_forward(y7.data_ptr(), x.data_ptr(), w.data_ptr(), nullptr, s7);
      const std::vector<float> all = y7.to_vector();
      const int64_t per_image = c.K * c.HW * c.HW;
      for (int64_t n : {0, 3, 6}) {
        CAPTURE(n);
        Tensor y1 = empty({1, c.K, c.HW, c.HW});
        conv2d_forward(y1.data_ptr(), x.data_ptr() + n * c.C * c.HW * c.HW, w.data_ptr(), nullptr,
                       conv2d_shape({1, c.C, c.HW, c.HW}, w.shape(), 1, 1, 1, 1));
        const std::vector<float> one = y1.to_vector();
        float worst = 0;
        for (int64_t i = 0; i < per_image; ++i) worst = std::max(worst, std::abs(one[i] - all[n * per_image + i]));
        CHECK(double(worst) <= 1e-5);  // measured up to 3.8e-6 where the products' columns differ
      }
    }
  }
}
