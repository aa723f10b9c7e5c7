// Pooling: known values, tie and NaN rules, oracles built from reductions,
// gradcheck of every op, errors, module printing.
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <norma/core/kernel_policy.h>
#include <norma/layers/pooling.h>
#include <norma/layers/sequential.h>

using namespace norma;
using namespace norma::nn;
using Catch::Contains;

namespace {
// Distinct values 0.1 apart in random order: no ties even after a gradcheck step of 1e-2.
Tensor distinct(const Shape& shape) {
  std::vector<float> v(size_t(shape.numel()));
  std::iota(v.begin(), v.end(), 0.0f);
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[random_u32() % i]);
  for (float& f : v) f = 0.1f * f - 0.05f * float(v.size());
  return from_vector(v, shape);
}

void check_grad(const std::function<Tensor(const std::vector<Tensor>&)>& fn, Tensor x) {
  auto r = gradcheck(fn, {x.requires_grad_()});
  INFO(r.message);
  CHECK(r.ok);
}
}  // namespace

TEST_CASE("max_pool2d: known values") {
  Tensor x = arange(16).reshape({1, 1, 4, 4});
  CHECK(max_pool2d(x, 2).to_vector() == std::vector<float>{5, 7, 13, 15});
  // 3x3 windows with padding 1 over 1..9: the max of each neighbourhood.
  Tensor y = max_pool2d(arange(1, 10).reshape({1, 1, 3, 3}), 3, 1, 1);
  CHECK(y.shape() == Shape{1, 1, 3, 3});
  CHECK(y.to_vector() == std::vector<float>{5, 6, 6, 8, 9, 9, 8, 9, 9});
  // Output size floor((H + 2p - k) / s) + 1: a 5x7 input, kernel 2, stride 2 -> 2x3.
  CHECK(max_pool2d(zeros({2, 3, 5, 7}), 2).shape() == Shape{2, 3, 2, 3});
  CHECK(max_pool2d(zeros({1, 1, 5, 7}), {2, 3}, Size2{1, 2}, Size2{1, 0}).shape() == Shape{1, 1, 6, 3});
  // Padding is -inf, never a maximum, even over negative inputs.
  CHECK(max_pool2d(full({1, 1, 2, 2}, -5.0f), 2, 1, 1).to_vector() == std::vector<float>(9, -5.0f));
}

TEST_CASE("max_pool2d: ties send the gradient to the first maximum and NaN propagates") {
  Tensor x = ones({1, 1, 2, 2}).requires_grad_();
  max_pool2d(x, 2).sum().backward();
  CHECK(x.grad().to_vector() == std::vector<float>{1, 0, 0, 0});
  // Overlapping windows (stride 1) that share one maximum add their gradients into it.
  Tensor z = from_vector({0, 1, 2, 3, 9, 4, 5, 6, 7}, {1, 1, 3, 3}).requires_grad_();
  max_pool2d(z, 2, 1).backward(from_vector({1, 2, 3, 4}, {1, 1, 2, 2}));
  CHECK(z.grad().to_vector() == std::vector<float>{0, 0, 0, 0, 10, 0, 0, 0, 0});
  Tensor n = from_vector({1, NAN, 3, 2}, {1, 1, 2, 2}).requires_grad_();
  Tensor y = max_pool2d(n, 2);
  CHECK(std::isnan(y.item()));
  y.backward();
  CHECK(n.grad().to_vector() == std::vector<float>{0, 1, 0, 0});
}

TEST_CASE("avg_pool2d: known values with and without count_include_pad") {
  Tensor x = arange(1, 10).reshape({1, 1, 3, 3});
  // Corner window {1, 2, 4, 5}: 12 / 9 counting the padding (PyTorch's default), 12 / 4 without.
  Tensor y = avg_pool2d(x, 3, 1, 1);
  CHECK(y.at({0, 0, 0, 0}) == Approx(12.0 / 9));
  CHECK(y.at({0, 0, 1, 1}) == Approx(5.0));
  CHECK(y.at({0, 0, 2, 2}) == Approx(28.0 / 9));
  Tensor e = avg_pool2d(x, 3, 1, 1, /*count_include_pad=*/false);
  CHECK(e.at({0, 0, 0, 0}) == Approx(3.0));
  CHECK(e.at({0, 0, 0, 1}) == Approx(21.0 / 6));
  CHECK(avg_pool2d(arange(16).reshape({1, 1, 4, 4}), 2).to_vector() == std::vector<float>{2.5, 4.5, 10.5, 12.5});
}

TEST_CASE("adaptive_avg_pool2d: known values") {
  Tensor x = arange(12).reshape({1, 2, 2, 3});
  Tensor y = adaptive_avg_pool2d(x, 1);
  CHECK(y.shape() == Shape{1, 2, 1, 1});
  CHECK(y.to_vector() == std::vector<float>{2.5, 8.5});
  // 5 -> 3 windows: [0, 2), [1, 4), [3, 5).
  CHECK(adaptive_avg_pool2d(arange(5).reshape({1, 1, 1, 5}), {1, 3}).to_vector() == std::vector<float>{0.5, 2, 3.5});
  // More outputs than inputs: windows repeat.
  CHECK(adaptive_avg_pool2d(arange(2).reshape({1, 1, 1, 2}), {1, 4}).to_vector() == std::vector<float>{0, 0, 1, 1});
}

TEST_CASE("max_pool2d: the 2x2 stride-2 path chooses as the general rule does, ties and NaN included") {
  // Few distinct values give many ties; some NaNs; odd sizes drop the last row and column.
  // Rows of 5 outputs take the kernel's narrow loop (4 lanes), rows of 17 its wide one.
  const int64_t W = GENERATE(11, 35);
  CAPTURE(W);
  manual_seed(13);
  const int64_t N = 3, C = 5, H = 9, OH = 4, OW = (W - 1) / 2;
  std::vector<float> v(size_t(N * C * H * W));
  for (float& f : v) f = random_u32() % 17 == 0 ? NAN : float(random_u32() % 3);
  Tensor x = from_vector(v, {N, C, H, W}).requires_grad_();
  Tensor y = max_pool2d(x, 2);
  Tensor dy = randn({N, C, OH, OW});
  y.backward(dy);
  std::vector<float> y_ref, dx_ref(v.size(), 0.0f);
  const std::vector<float> g = dy.to_vector();
  for (int64_t p = 0; p < N * C; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        float best = -INFINITY;  // the rule: a strictly larger value or a NaN takes over
        int64_t arg = -1;
        for (int64_t i : {2 * oh * W + 2 * ow, 2 * oh * W + 2 * ow + 1, (2 * oh + 1) * W + 2 * ow,
                          (2 * oh + 1) * W + 2 * ow + 1}) {
          const float f = v[size_t(p * H * W + i)];
          if (arg < 0 || f > best || std::isnan(f)) best = f, arg = i;
        }
        y_ref.push_back(best);
        dx_ref[size_t(p * H * W + arg)] += g[size_t((p * OH + oh) * OW + ow)];
      }
  const std::vector<float> got = y.to_vector();
  REQUIRE(got.size() == y_ref.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK((std::isnan(got[i]) ? std::isnan(y_ref[i]) : got[i] == y_ref[i]));
  }
  CHECK(x.grad().to_vector() == dx_ref);
}

TEST_CASE("max_pool2d: the fast 2x2 kernel equals the reference one bit for bit, forward and backward") {
  if (!norma::test::fast_kernels_or_skip()) return;
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!norma::test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  // Ties, NaNs, odd sizes (the last row and column dropped), rows of 1, 4, 5
  // and 17 outputs, and planes enough for the parallel path.
  struct P {
    int64_t N, C, H, W;
  };
  manual_seed(14);
  for (const P& c : {P{3, 5, 9, 11}, P{2, 3, 8, 8}, P{1, 2, 3, 35}, P{2, 4, 7, 3}, P{8, 16, 32, 32}, P{1, 1, 2, 2}}) {
    CAPTURE(c.N, c.C, c.H, c.W);
    std::vector<float> v(size_t(c.N * c.C * c.H * c.W));
    for (float& f : v) f = random_u32() % 23 == 0 ? NAN : float(random_u32() % 4);
    const Tensor dy = randn({c.N, c.C, c.H / 2, c.W / 2});
    auto run = [&](const KernelPolicy& policy) {
      KernelPolicyGuard g(policy);
      Tensor x = from_vector(v, {c.N, c.C, c.H, c.W}).requires_grad_();
      Tensor y = max_pool2d(x, 2);
      y.backward(dy);
      return std::pair{y.to_vector(), x.grad().to_vector()};
    };
    const auto [y_fast, dx_fast] = run(KernelPolicy{.isa = isa});
    const auto [y_ref, dx_ref] = run(KernelPolicy{.fast = false});
    REQUIRE(y_fast.size() == y_ref.size());
    for (size_t i = 0; i < y_fast.size(); ++i) {
      CAPTURE(i);
      CHECK((std::isnan(y_fast[i]) ? std::isnan(y_ref[i]) : y_fast[i] == y_ref[i]));
    }
    CHECK(dx_fast == dx_ref);
  }
}

TEST_CASE("pooling: ops match reductions over reshaped windows, on the parallel path") {
  // 8*16*32*32 elements is above the OpenMP grain, so the planes run in parallel.
  manual_seed(11);
  Tensor x = randn({8, 16, 32, 32});
  Tensor windows = x.reshape({8, 16, 16, 2, 16, 2});
  NORMA_CHECK_CLOSE(max_pool2d(x, 2), windows.max({3, 5}), 0, 1e-7);
  NORMA_CHECK_CLOSE(avg_pool2d(x, 2), windows.mean({3, 5}), 1e-6, 1e-6);
  NORMA_CHECK_CLOSE(adaptive_avg_pool2d(x, 1), x.mean({2, 3}, true), 1e-5, 1e-6);
  NORMA_CHECK_CLOSE(adaptive_avg_pool2d(x, 16), windows.mean({3, 5}), 1e-6, 1e-6);
  // Backward of the fused avg pool against the composed one.
  Tensor a = x.clone().requires_grad_(), b = x.clone().requires_grad_();
  Tensor dy = randn({8, 16, 16, 16});
  avg_pool2d(a, 2).backward(dy);
  b.reshape({8, 16, 16, 2, 16, 2}).mean({3, 5}).backward(dy);
  NORMA_CHECK_CLOSE(a.grad(), b.grad(), 1e-6, 1e-6);
}

TEST_CASE("pooling: strided views give the same result as contiguous inputs") {
  manual_seed(12);
  Tensor nhwc = randn({2, 6, 5, 3});
  Tensor x = nhwc.permute({0, 3, 1, 2});  // (2, 3, 6, 5), not contiguous
  REQUIRE_FALSE(x.is_contiguous());
  CHECK(max_pool2d(x, 3, 2, 1).to_vector() == max_pool2d(x.contiguous(), 3, 2, 1).to_vector());
  CHECK(avg_pool2d(x, 2, 1).to_vector() == avg_pool2d(x.contiguous(), 2, 1).to_vector());
  CHECK(adaptive_avg_pool2d(x, {2, 3}).to_vector() == adaptive_avg_pool2d(x.contiguous(), {2, 3}).to_vector());
}

TEST_CASE("max_pool2d: gradcheck") {
  manual_seed(5);
  check_grad([](const auto& in) { return max_pool2d(in[0], 2); }, distinct({2, 2, 4, 6}));
  check_grad([](const auto& in) { return max_pool2d(in[0], 3, 1, 1); }, distinct({1, 2, 5, 4}));
  check_grad([](const auto& in) { return max_pool2d(in[0], 3, 2, 1); }, distinct({2, 1, 7, 7}));
  check_grad([](const auto& in) { return max_pool2d(in[0], {2, 3}, Size2{1, 2}, Size2{1, 0}); }, distinct({1, 1, 5, 6}));
}

TEST_CASE("avg_pool2d: gradcheck") {
  manual_seed(6);
  for (bool include : {true, false}) {
    CAPTURE(include);
    check_grad([=](const auto& in) { return avg_pool2d(in[0], 2, 2, 0, include); }, randn({2, 2, 5, 4}));
    check_grad([=](const auto& in) { return avg_pool2d(in[0], 3, 1, 1, include); }, randn({1, 2, 5, 5}));
    check_grad([=](const auto& in) { return avg_pool2d(in[0], 3, 2, 1, include); }, randn({2, 1, 7, 6}));
  }
}

TEST_CASE("adaptive_avg_pool2d: gradcheck") {
  manual_seed(7);
  check_grad([](const auto& in) { return adaptive_avg_pool2d(in[0], 1); }, randn({2, 3, 4, 5}));
  check_grad([](const auto& in) { return adaptive_avg_pool2d(in[0], {3, 2}); }, randn({2, 2, 7, 5}));
  check_grad([](const auto& in) { return adaptive_avg_pool2d(in[0], 3); }, randn({1, 1, 2, 4}));
}

TEST_CASE("pooling: errors name the op and the shapes") {
  Tensor x = zeros({1, 2, 4, 4});
  CHECK_THROWS_WITH(max_pool2d(zeros({2, 4, 4}), 2), Contains("max_pool2d: input must be 4-D (N, C, H, W), got (2, 4, 4)"));
  CHECK_THROWS_WITH(avg_pool2d(zeros({4, 4}), 2), Contains("avg_pool2d: input must be 4-D (N, C, H, W), got (4, 4)"));
  CHECK_THROWS_WITH(adaptive_avg_pool2d(zeros({2, 4, 4}), 1),
                    Contains("adaptive_avg_pool2d: input must be 4-D (N, C, H, W), got (2, 4, 4)"));
  CHECK_THROWS_WITH(max_pool2d(zeros({1, 1, 2, 2}), 3),
                    Contains("max_pool2d: kernel (3, 3) is larger than the padded input (2, 2) of input (1, 1, 2, 2)"));
  CHECK_THROWS_WITH(avg_pool2d(zeros({1, 1, 1, 5}), 4, 1, 1),
                    Contains("avg_pool2d: kernel (4, 4) is larger than the padded input (3, 7) of input (1, 1, 1, 5)"));
  CHECK_THROWS_WITH(max_pool2d(x, 0), Contains("max_pool2d: kernel_size (0, 0) must be positive for input (1, 2, 4, 4)"));
  CHECK_THROWS_WITH(avg_pool2d(x, {2, -1}), Contains("avg_pool2d: kernel_size (2, -1) must be positive"));
  CHECK_THROWS_WITH(max_pool2d(x, 2, 0), Contains("max_pool2d: stride (0, 0) must be positive for input (1, 2, 4, 4)"));
  CHECK_THROWS_WITH(max_pool2d(x, 2, 1, -1), Contains("max_pool2d: padding (-1, -1) must be non-negative"));
  CHECK_THROWS_WITH(max_pool2d(x, 3, 1, 2),
                    Contains("max_pool2d: pad should be at most half of kernel size, but got padding (2, 2) and "
                             "kernel_size (3, 3) for input (1, 2, 4, 4)"));
  CHECK_THROWS_WITH(avg_pool2d(x, 2, 2, 2), Contains("avg_pool2d: pad should be at most half of kernel size"));
  CHECK_THROWS_WITH(max_pool2d(zeros({1, 2, 0, 4}), 1),
                    Contains("max_pool2d: input (1, 2, 0, 4) must have non-zero channels, height and width"));
  CHECK_THROWS_WITH(adaptive_avg_pool2d(x, {0, 1}),
                    Contains("adaptive_avg_pool2d: output_size (0, 1) must be positive, for input (1, 2, 4, 4)"));
  CHECK_THROWS_WITH(max_pool2d(Tensor(), 2), Contains("max_pool2d: input is an undefined tensor"));
  CHECK_THROWS_WITH(MaxPool2d(0), Contains("MaxPool2d: kernel_size (0, 0) must be positive"));
  CHECK_THROWS_WITH(AvgPool2d(2, 1, 3), Contains("AvgPool2d: pad should be at most half of kernel size"));
  CHECK_THROWS_WITH(AdaptiveAvgPool2d({1, -2}), Contains("AdaptiveAvgPool2d: output_size (1, -2) must be positive"));
  // A batch of zero images is allowed, as in PyTorch.
  CHECK(max_pool2d(zeros({0, 2, 4, 4}), 2).shape() == Shape{0, 2, 2, 2});
}

TEST_CASE("pooling modules: forward and PyTorch's print") {
  manual_seed(8);
  Tensor x = randn({2, 3, 6, 6});
  CHECK(MaxPool2d(3, 2, 1).forward(x).to_vector() == max_pool2d(x, 3, 2, 1).to_vector());
  CHECK(AvgPool2d(2).forward(x).to_vector() == avg_pool2d(x, 2).to_vector());
  CHECK(AdaptiveAvgPool2d(1).forward(x).to_vector() == adaptive_avg_pool2d(x, 1).to_vector());
  Sequential net{std::make_shared<MaxPool2d>(2), std::make_shared<AvgPool2d>(3, 1, 1),
                 std::make_shared<MaxPool2d>(Size2{2, 3}, Size2{1, 2}), std::make_shared<AdaptiveAvgPool2d>(1),
                 std::make_shared<AdaptiveAvgPool2d>(Size2{2, 3})};
  CHECK(net.repr() ==
        "Sequential(\n"
        "  (0): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
        "  (1): AvgPool2d(kernel_size=3, stride=1, padding=1)\n"
        "  (2): MaxPool2d(kernel_size=(2, 3), stride=(1, 2), padding=0, dilation=1, ceil_mode=False)\n"
        "  (3): AdaptiveAvgPool2d(output_size=1)\n"
        "  (4): AdaptiveAvgPool2d(output_size=(2, 3))\n"
        ")");
  CHECK(net.parameters().empty());
}
