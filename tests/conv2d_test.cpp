// Conv2d: the im2col + sgemm path against the naive loops, gradcheck, errors.
#include "test_util.h"

#include <cmath>
#include <cstdlib>

#include <norma/layers/conv2d.h>

using namespace norma;
using namespace norma::nn;

namespace {
struct Case {
  int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool bias;
};
}  // namespace

TEST_CASE("conv2d: im2col+sgemm matches the naive loops forward and backward") {
  const Case cases[] = {
      {2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},    // the cifar-small shape, small
      {1, 3, 7, 9, 5, 3, 2, 2, 1, 0, 1, 1, 1, 1, true},    // odd sizes, rectangular kernel, batch 1
      {2, 4, 9, 9, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2, false},   // stride 2, dilation 2, groups 2
      {3, 6, 5, 5, 6, 1, 1, 1, 1, 0, 0, 1, 1, 3, true},    // 1x1, groups 3
      {2, 2, 4, 4, 3, 4, 4, 1, 1, 0, 0, 1, 1, 1, true},    // kernel covers the input
      {1, 4, 6, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 4, true},    // depthwise, padding 2
      {1, 2, 3, 2, 3, 3, 5, 1, 3, 1, 4, 1, 2, 1, true},    // taps that only ever read padding
      {2, 3, 5, 6, 2, 3, 3, 2, 3, 3, 4, 1, 1, 1, true},    // padding wider than the kernel, stride 3
  };
  manual_seed(7);
  for (const Case& c : cases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups);
    Tensor x = randn({c.N, c.C, c.H, c.W}), w = randn({c.K, c.C / c.groups, c.kh, c.kw});
    Tensor b = c.bias ? randn({c.K}) : Tensor();
    ConvShape s = conv2d_shape(x.shape(), w.shape(), {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.groups);
    Tensor y = empty({s.N, s.K, s.OH, s.OW}), y_ref = empty(y.shape());
    conv2d_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), c.bias ? b.data_ptr() : nullptr, s);
    conv2d_forward_naive(y_ref.data_ptr(), x.data_ptr(), w.data_ptr(), c.bias ? b.data_ptr() : nullptr, s);
    NORMA_CHECK_CLOSE(y, y_ref, 1e-5, 1e-5);

    Tensor dy = randn(y.shape());
    Tensor dx = empty(x.shape()), dw = empty(w.shape()), db = empty({s.K});
    Tensor dx_ref = empty(x.shape()), dw_ref = empty(w.shape()), db_ref = empty({s.K});
    conv2d_backward(dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
    conv2d_backward_naive(dx_ref.data_ptr(), dw_ref.data_ptr(), db_ref.data_ptr(), dy.data_ptr(), x.data_ptr(),
                          w.data_ptr(), s);
    NORMA_CHECK_CLOSE(dx, dx_ref, 1e-4, 1e-4);
    NORMA_CHECK_CLOSE(dw, dw_ref, 1e-4, 1e-4);
    NORMA_CHECK_CLOSE(db, db_ref, 1e-4, 1e-4);
  }
}

// Run twice by ctest: as is, on F(4x2) tiles, and with NORMA_WINOGRAD_F44=32
// (tests/CMakeLists.txt), where the forward and dx convolutions summing at most
// 32 channels take F(4x4) ones.
TEST_CASE("conv2d: Winograd F(4x2, 3x3) and F(4x4, 3x3) match the naive loops forward and backward") {
  struct W {
    int64_t N, C, K, H, W, ph, pw;
  };
  const W cases[] = {
      {2, 16, 16, 8, 8, 1, 1},    // cifar-small's convs, small: 8 tiles from 2 or 4 tile rows
      {3, 16, 17, 20, 20, 1, 1},  // one block of several images; 5 (or 10) tiles a row, rounded up
      {3, 64, 65, 20, 20, 1, 1},  // blocks of 6 tile rows that cross images (64 tiles: 129 channels)
      {1, 33, 40, 7, 9, 0, 2},    // odd outputs (a half-empty last tile), paddings 0 and 2
      {2, 40, 33, 1, 5, 1, 0},    // a single input row
      {2, 48, 48, 12, 10, 1, 1},  // 5 tiles a row, rounded up to 8: chunks wholly outside
      {1, 16, 16, 3, 530, 1, 1},  // a row of 265 (133) tiles, the last half empty
      {2, 32, 32, 32, 32, 1, 1},  // cifar-small's 32x32 conv, two images
      {1, 24, 40, 9, 35, 0, 2},   // 37 outputs a row (F(4x4): the last tile a quarter full), dx sums 40
      {2, 33, 20, 6, 31, 1, 1},   // 31 outputs a row, forward sums 33, dx 20
      {3, 16, 16, 10, 3, 1, 0},   // one output a row
      // Whole groups of 16 or 8 tiles a row (input_transform_rows, output_transform_rows):
      {2, 24, 20, 16, 16, 1, 1},  // cifar-small's 16x16 convs: one group of 8
      {1, 16, 16, 14, 64, 1, 1},  // two groups of 16, the second starting from the first's last columns
      {1, 16, 16, 34, 34, 0, 0},  // no padding
      {1, 16, 16, 28, 28, 2, 2},  // padding 2: 30 outputs, so the output takes the general path
  };
  // Winograd's float32 error scales with the values summed, not with their
  // sum, so the data are at a trained network's scale, where the tolerances
  // below mean what they say: weights at PyTorch's initial scale, 1/sqrt(9 C),
  // so y and dx are of order 1; dw, a sum over N OH OW positions, is compared
  // divided by the square root of that count.
  manual_seed(11);
  for (const W& c : cases) {
    CAPTURE(c.N, c.C, c.K, c.H, c.W, c.ph, c.pw);
    Tensor x = randn({c.N, c.C, c.H, c.W}), b = randn({c.K});
    Tensor w = randn({c.K, c.C, 3, 3}) * float(1 / std::sqrt(9.0 * c.C));
    ConvShape s = conv2d_shape(x.shape(), w.shape(), 1, {c.ph, c.pw}, 1, 1);
    REQUIRE(conv2d_winograd_applies(s));
    CAPTURE(conv2d_winograd_row_tile(s.C), conv2d_winograd_row_tile(s.K));
    Tensor y = full({s.N, s.K, s.OH, s.OW}, NAN), y_ref = empty(y.shape());
    conv2d_winograd_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), b.data_ptr(), s);
    conv2d_forward_naive(y_ref.data_ptr(), x.data_ptr(), w.data_ptr(), b.data_ptr(), s);
    NORMA_CHECK_CLOSE(y, y_ref, 1e-4, 1e-5);

    Tensor dy = randn(y.shape());
    Tensor dx = full(x.shape(), NAN), dw = full(w.shape(), NAN);
    Tensor dx_ref = empty(x.shape()), dw_ref = empty(w.shape()), db_ref = empty({s.K});
    conv2d_winograd_backward(dx.data_ptr(), dw.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
    conv2d_backward_naive(dx_ref.data_ptr(), dw_ref.data_ptr(), db_ref.data_ptr(), dy.data_ptr(), x.data_ptr(),
                          w.data_ptr(), s);
    NORMA_CHECK_CLOSE(dx, dx_ref, 1e-4, 1e-5);
    const float per_sum = float(1 / std::sqrt(double(s.N * s.OH * s.OW)));
    NORMA_CHECK_CLOSE(dw * per_sum, dw_ref * per_sum, 1e-4, 1e-5);
    // dx alone and dw alone (a frozen weight, an input that needs no gradient)
    // give what they give together.
    Tensor dx_only = full(x.shape(), NAN), dw_only = full(w.shape(), NAN);
    conv2d_winograd_backward(dx_only.data_ptr(), nullptr, dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
    conv2d_winograd_backward(nullptr, dw_only.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
    CHECK(dx_only.to_vector() == dx.to_vector());
    CHECK(dw_only.to_vector() == dw.to_vector());
  }
}

TEST_CASE("conv2d: Winograd's dw is right when called from inside a parallel region") {
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
    conv2d_winograd_backward(nullptr, dw.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
  }
  conv2d_backward_naive(nullptr, dw_ref.data_ptr(), nullptr, dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
  const float per_sum = float(1 / std::sqrt(double(s.N * s.OH * s.OW)));
  NORMA_CHECK_CLOSE(dw * per_sum, dw_ref * per_sum, 1e-4, 1e-5);
}

TEST_CASE("conv2d: the direct path for few input channels matches the naive loops forward and backward") {
  const Case cases[] = {
      {3, 3, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, false},  // cifar-small's RGB layer, 3 images
      {2, 3, 5, 64, 13, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},    // whole rows of 64: two blocks a row, 13 channels
      {1, 2, 9, 34, 6, 5, 3, 1, 1, 0, 2, 2, 3, 1, true},     // a row of 32 again: 5x3 taps dilated, padding 0 x 2
      {2, 2, 6, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},     // rows of 16: dw reads dy in place
      {2, 3, 7, 9, 5, 3, 2, 1, 1, 0, 1, 1, 1, 1, true},      // odd sizes, rectangular kernel, 5 channels out
      {1, 1, 11, 6, 9, 5, 5, 1, 1, 2, 2, 1, 1, 1, true},     // one channel, 5x5 (25 taps)
      {2, 2, 9, 10, 3, 3, 3, 1, 1, 2, 1, 2, 3, 1, true},     // dilations 2 and 3
      {2, 4, 4, 4, 17, 4, 4, 1, 1, 0, 0, 1, 1, 1, true},     // 64 taps (the limit), one output per plane
      {1, 3, 1, 40, 6, 1, 3, 1, 1, 0, 4, 1, 1, 1, true},     // one row, padding wider than the kernel
      {5, 7, 3, 3, 2, 1, 1, 1, 1, 0, 0, 1, 1, 1, false},     // 1x1, more images than positions
  };
  manual_seed(13);
  for (const Case& c : cases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.kh, c.kw, c.ph, c.pw, c.dh, c.dw);
    Tensor x = randn({c.N, c.C, c.H, c.W}), w = randn({c.K, c.C, c.kh, c.kw});
    Tensor b = c.bias ? randn({c.K}) : Tensor();
    ConvShape s = conv2d_shape(x.shape(), w.shape(), 1, {c.ph, c.pw}, {c.dh, c.dw}, 1);
    REQUIRE(conv2d_direct_applies(s));
    REQUIRE_FALSE(conv2d_winograd_applies(s));
    Tensor y = full({s.N, s.K, s.OH, s.OW}, NAN), y_ref = empty(y.shape());
    conv2d_direct_forward(y.data_ptr(), x.data_ptr(), w.data_ptr(), c.bias ? b.data_ptr() : nullptr, s);
    conv2d_forward_naive(y_ref.data_ptr(), x.data_ptr(), w.data_ptr(), c.bias ? b.data_ptr() : nullptr, s);
    NORMA_CHECK_CLOSE(y, y_ref, 1e-5, 1e-5);

    Tensor dy = randn(y.shape());
    Tensor dx_ref = empty(x.shape()), dw_ref = empty(w.shape()), db_ref = empty({s.K});
    conv2d_backward_naive(dx_ref.data_ptr(), dw_ref.data_ptr(), db_ref.data_ptr(), dy.data_ptr(), x.data_ptr(),
                          w.data_ptr(), s);
    Tensor dw = full(w.shape(), NAN);
    conv2d_direct_backward_weight(dw.data_ptr(), dy.data_ptr(), x.data_ptr(), s);
    NORMA_CHECK_CLOSE(dw, dw_ref, 1e-4, 1e-4);
    // Through conv2d_backward: dw from the direct path, dx from im2col, db.
    Tensor dx = full(x.shape(), NAN), db = full({s.K}, NAN);
    dw = full(w.shape(), NAN);
    conv2d_backward(dx.data_ptr(), dw.data_ptr(), db.data_ptr(), dy.data_ptr(), x.data_ptr(), w.data_ptr(), s);
    NORMA_CHECK_CLOSE(dx, dx_ref, 1e-4, 1e-4);
    NORMA_CHECK_CLOSE(dw, dw_ref, 1e-4, 1e-4);
    NORMA_CHECK_CLOSE(db, db_ref, 1e-4, 1e-4);
  }
}

TEST_CASE("conv2d: the direct path is taken for stride 1, one group and at most 64 taps, and only those") {
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
  manual_seed(3);
  for (auto [stride, pad, dil, groups] : {std::tuple{1, 1, 1, 1}, {2, 0, 1, 1}, {1, 2, 2, 2}}) {
    CAPTURE(stride, pad, dil, groups);
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
  const char* v = std::getenv("NORMA_WINOGRAD_F44");
  const int64_t limit = v ? std::atoll(v) : 0;
  CAPTURE(limit);
  for (int64_t summed : {1, 16, 32, 33, 64, 512})
    CHECK(conv2d_winograd_row_tile(summed) == (summed <= limit ? 4 : 2));
  CHECK(conv2d_winograd_row_tile(16) == (v ? 4 : 2));  // the F(4x4) run sets 32, the other nothing
}

TEST_CASE("conv2d: Winograd gives each image the same output whatever the batch around it") {
  // Evaluation in batches of another size must score the same (norma eval,
  // flip TTA): an image's output may not depend on which block it falls in,
  // nor on what an earlier block left in the scratch buffers. Up to rounding:
  // OpenBLAS may round a product with fewer columns differently (a bug in
  // the second gave errors of 10 and more).
  struct W {
    int64_t C, K, HW;
  };
  for (const W& c : {W{32, 32, 32}, W{32, 64, 16}, W{64, 64, 16}, W{64, 128, 8}, W{16, 16, 20}, W{48, 48, 12}}) {
    CAPTURE(c.C, c.K, c.HW);
    manual_seed(5);
    Tensor x = randn({7, c.C, c.HW, c.HW}), w = randn({c.K, c.C, 3, 3}) * float(1 / std::sqrt(9.0 * c.C));
    Tensor y7 = empty({7, c.K, c.HW, c.HW});
    conv2d_winograd_forward(y7.data_ptr(), x.data_ptr(), w.data_ptr(), nullptr,
                            conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1));
    const std::vector<float> all = y7.to_vector();
    const int64_t per_image = c.K * c.HW * c.HW;
    for (int64_t n : {0, 3, 6}) {
      CAPTURE(n);
      Tensor y1 = empty({1, c.K, c.HW, c.HW});
      conv2d_winograd_forward(y1.data_ptr(), x.data_ptr() + n * c.C * c.HW * c.HW, w.data_ptr(), nullptr,
                              conv2d_shape({1, c.C, c.HW, c.HW}, w.shape(), 1, 1, 1, 1));
      const std::vector<float> one = y1.to_vector();
      float worst = 0;
      for (int64_t i = 0; i < per_image; ++i) worst = std::max(worst, std::abs(one[i] - all[n * per_image + i]));
      CHECK(double(worst) <= 1e-5);  // measured up to 3.8e-6 where the products' columns differ
    }
  }
}
