// The convolution kernels held equal: the reference (layers/ref/conv2d.h) to
// the naive loops (conv_naive.h), and each fast kernel (layers/fast/), reached
// through conv2d_forward / conv2d_backward under a KernelPolicy that picks it,
// to the reference: odd sizes, padding 0-2, with and without bias, the
// parallel paths, Winograd's F(4x2) and F(4x4) tiles, the direct path, the
// inference epilogue, and the op on either set of kernels.
#include "conv_naive.h"
#include "test_util.h"

#include <omp.h>

#include <cmath>

#include <norma/core/kernel_policy.h>
#include <norma/layers/conv2d.h>
#include <norma/layers/pooling.h>
#include <norma/layers/ref/conv2d.h>

using namespace norma;
using namespace norma::nn;
using norma::test::fast_kernels_or_skip;

namespace {

// The policies that pick each fast convolution (each still only where it applies).
const KernelPolicy kIm2col{.winograd = false, .direct_conv = false};
const KernelPolicy kWinogradF42{.direct_conv = false};
const KernelPolicy kWinogradF44{.direct_conv = false, .winograd_f44_channels = 32};
const KernelPolicy kDirect{.winograd = false};

struct Case {
  int64_t N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, groups;
  bool bias;
};

// A convolution's operands and gradient; the weights at PyTorch's initial
// scale, 1/sqrt(fan_in), so outputs and dx are of order 1.
struct Problem {
  Tensor x, w, b, dy;  // b undefined without bias
  ConvShape s;
  explicit Problem(const Case& c) {
    x = randn({c.N, c.C, c.H, c.W});
    w = randn({c.K, c.C / c.groups, c.kh, c.kw}) * float(1 / std::sqrt(double(c.C / c.groups * c.kh * c.kw)));
    if (c.bias) b = randn({c.K});
    s = conv2d_shape(x.shape(), w.shape(), {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.groups);
    dy = randn({s.N, s.K, s.OH, s.OW});
  }
  const float* bias() const { return b.defined() ? b.data_ptr() : nullptr; }
};

// y, dx, dw, db of one set of kernels, NaN where a kernel did not write.
struct Result {
  Tensor y, dx, dw, db;
  explicit Result(const Problem& p)
      : y(full(p.dy.shape(), NAN)), dx(full(p.x.shape(), NAN)), dw(full(p.w.shape(), NAN)), db(full({p.s.K}, NAN)) {}
};

Result run_naive(const Problem& p) {
  Result r(p);
  test::conv2d_forward_naive(r.y.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.bias(), p.s);
  test::conv2d_backward_naive(r.dx.data_ptr(), r.dw.data_ptr(), r.db.data_ptr(), p.dy.data_ptr(), p.x.data_ptr(),
                              p.w.data_ptr(), p.s);
  return r;
}

Result run_ref(const Problem& p) {
  Result r(p);
  ref::conv2d_forward(r.y.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.bias(), p.s);
  ref::conv2d_backward(r.dx.data_ptr(), r.dw.data_ptr(), r.db.data_ptr(), p.dy.data_ptr(), p.x.data_ptr(),
                       p.w.data_ptr(), p.s);
  return r;
}

// Through the dispatching entry points, under the policy in force.
Result run_dispatched(const Problem& p) {
  Result r(p);
  conv2d_forward(r.y.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.bias(), p.s);
  conv2d_backward(r.dx.data_ptr(), r.dw.data_ptr(), r.db.data_ptr(), p.dy.data_ptr(), p.x.data_ptr(),
                  p.w.data_ptr(), p.s);
  return r;
}

// dw is a sum over N OH OW positions: compared divided by the square root of
// that count, so one tolerance fits it and the order-1 y and dx.
void check_close(const Result& got, const Result& want, const Problem& p, double rtol, double atol) {
  NORMA_CHECK_CLOSE(got.y, want.y, rtol, atol);
  NORMA_CHECK_CLOSE(got.dx, want.dx, rtol, atol);
  const float per_sum = float(1 / std::sqrt(double(std::max<int64_t>(1, p.s.N * p.s.OH * p.s.OW))));
  NORMA_CHECK_CLOSE(got.dw * per_sum, want.dw * per_sum, rtol, atol);
  NORMA_CHECK_CLOSE(got.db * per_sum, want.db * per_sum, rtol, atol);
}

// Every path's shapes: odd sizes, padding 0-2, strides, dilations, groups, bias or not.
const Case kGeneralCases[] = {
    {2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, true},    // the cifar-small shape, small
    {1, 3, 7, 9, 5, 3, 2, 2, 1, 0, 1, 1, 1, 1, true},    // odd sizes, rectangular kernel, batch 1
    {2, 4, 9, 9, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2, false},   // stride 2, dilation 2, groups 2
    {3, 6, 5, 5, 6, 1, 1, 1, 1, 0, 0, 1, 1, 3, true},    // 1x1, groups 3
    {2, 2, 4, 4, 3, 4, 4, 1, 1, 0, 0, 1, 1, 1, true},    // kernel covers the input
    {1, 4, 6, 5, 4, 3, 3, 3, 2, 2, 1, 1, 1, 4, true},    // depthwise, padding 2
    {1, 2, 3, 2, 3, 3, 5, 1, 3, 1, 4, 1, 2, 1, true},    // taps that only ever read padding
    {2, 3, 5, 6, 2, 3, 3, 2, 3, 3, 4, 1, 1, 1, true},    // padding wider than the kernel, stride 3
    {2, 8, 11, 7, 12, 3, 3, 1, 1, 2, 2, 1, 1, 1, false}, // 72 taps (not direct), 8 channels (not Winograd)
    {3, 20, 9, 9, 18, 3, 3, 1, 1, 1, 1, 1, 1, 2, true},  // Winograd's shape but for the groups
};

}  // namespace

TEST_CASE("conv2d: the reference kernels match the naive loops forward and backward") {
  manual_seed(7);
  for (const Case& c : kGeneralCases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.bias);
    const Problem p(c);
    const Result got = run_ref(p), want = run_naive(p);
    check_close(got, want, p, 1e-5, 1e-5);
    if (!c.bias) continue;
    // Each gradient alone gives what it gives with the others.
    Result alone(p);
    ref::conv2d_backward(alone.dx.data_ptr(), nullptr, nullptr, p.dy.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.s);
    ref::conv2d_backward(nullptr, alone.dw.data_ptr(), nullptr, p.dy.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.s);
    ref::conv2d_backward(nullptr, nullptr, alone.db.data_ptr(), p.dy.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.s);
    CHECK(alone.dx.to_vector() == got.dx.to_vector());
    CHECK(alone.dw.to_vector() == got.dw.to_vector());
    CHECK(alone.db.to_vector() == got.db.to_vector());
  }
}

TEST_CASE("conv2d: the fast im2col kernels match the reference, the batch split over threads or not") {
  if (!fast_kernels_or_skip()) return;
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!norma::test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  KernelPolicyGuard g(norma::test::at_isa(kIm2col, isa));
  manual_seed(8);
  // A batch of at least the thread count splits the images across threads.
  const int64_t split = std::max(omp_get_max_threads(), 2) + 1;
  CAPTURE(omp_get_max_threads(), split);
  std::vector<Case> cases(std::begin(kGeneralCases), std::end(kGeneralCases));
  cases.push_back({split, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, true});
  cases.push_back({split, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, false});
  cases.push_back({split, 4, 7, 9, 6, 3, 2, 2, 1, 0, 2, 1, 2, 2, true});
  for (const Case& c : cases) {
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.kh, c.kw, c.sh, c.sw, c.ph, c.pw, c.dh, c.dw, c.groups, c.bias);
    const Problem p(c);
    REQUIRE_FALSE(conv2d_winograd_applies(p.s));
    REQUIRE_FALSE(conv2d_direct_applies(p.s));
    check_close(run_dispatched(p), run_ref(p), p, 1e-5, 1e-5);
  }
}

// Also run by ctest with NORMA_WINOGRAD_F44=32 (tests/CMakeLists.txt), which
// changes nothing here: the policy is set for each tile.
TEST_CASE("conv2d: Winograd F(4x2, 3x3) and F(4x4, 3x3) match the reference forward and backward") {
  if (!fast_kernels_or_skip()) return;
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!norma::test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  struct W {
    int64_t N, C, K, H, W, ph, pw;
  };
  const W cases[] = {
      {2, 16, 16, 8, 8, 1, 1},    // cifar-small's convs, small: 8 tiles from 2 or 4 tile rows
      {3, 16, 17, 20, 20, 1, 1},  // one block of several images; 5 (or 10) tiles a row, rounded up
      {3, 64, 65, 20, 20, 1, 1},  // blocks of 6 tile rows that cross images (64 tiles: 129 channels), threads
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
  for (const KernelPolicy& policy : {kWinogradF42, kWinogradF44}) {
    KernelPolicyGuard g(norma::test::at_isa(policy, isa));
    manual_seed(11);
    for (const W& c : cases) {
      CAPTURE(policy.winograd_f44_channels, c.N, c.C, c.K, c.H, c.W, c.ph, c.pw);
      const bool bias = c.N != 1;
      const Problem p(Case{c.N, c.C, c.H, c.W, c.K, 3, 3, 1, 1, c.ph, c.pw, 1, 1, 1, bias});
      REQUIRE(conv2d_winograd_applies(p.s));
      const Result got = run_dispatched(p);
      check_close(got, run_ref(p), p, 1e-4, 1e-5);
      // dx alone and dw alone (a frozen weight, an input that needs no
      // gradient) give what they give together.
      Result alone(p);
      conv2d_backward(alone.dx.data_ptr(), nullptr, nullptr, p.dy.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.s);
      conv2d_backward(nullptr, alone.dw.data_ptr(), nullptr, p.dy.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.s);
      CHECK(alone.dx.to_vector() == got.dx.to_vector());
      CHECK(alone.dw.to_vector() == got.dw.to_vector());
    }
  }
  // F(4x4) really ran: its tiles round differently from F(4x2)'s.
  const Problem p(Case{2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, false});
  std::vector<float> y42, y44;
  {
    KernelPolicyGuard g(norma::test::at_isa(kWinogradF42, isa));
    y42 = run_dispatched(p).y.to_vector();
  }
  {
    KernelPolicyGuard g(norma::test::at_isa(kWinogradF44, isa));
    y44 = run_dispatched(p).y.to_vector();
  }
  CHECK(y42 != y44);
}

TEST_CASE("conv2d: the direct kernels match the reference forward and backward") {
  if (!fast_kernels_or_skip()) return;
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!norma::test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  KernelPolicyGuard g(norma::test::at_isa(kDirect, isa));
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
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.kh, c.kw, c.ph, c.pw, c.dh, c.dw, c.bias);
    const Problem p(c);
    REQUIRE(conv2d_direct_applies(p.s));
    REQUIRE_FALSE(conv2d_winograd_applies(p.s));
    // dw from the direct kernel, dx from im2col, db summed.
    check_close(run_dispatched(p), run_ref(p), p, 1e-5, 1e-5);
  }
}

TEST_CASE("conv2d: the fused epilogue equals conv, BatchNorm, ReLU and pool on the reference kernels") {
  if (!fast_kernels_or_skip()) return;
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!norma::test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  KernelPolicyGuard g(KernelPolicy{.isa = isa});
  struct E {
    Case c;
    bool pool;
  };
  const E cases[] = {
      {{2, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, false},     // Winograd
      {{2, 16, 8, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, true},      // Winograd with the pool
      {{3, 24, 11, 13, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, false}, true},   // odd outputs: the last row and column dropped
      {{1, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, false},   // whole groups of tiles a row
      {{2, 20, 9, 10, 17, 3, 3, 1, 1, 0, 2, 1, 1, 1, true}, true},     // paddings 0 and 2
      {{2, 3, 10, 32, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, false},     // direct, rows of 32
      {{3, 3, 6, 66, 12, 3, 3, 1, 1, 0, 0, 1, 1, 1, false}, false},    // direct, rows of 64
  };
  manual_seed(21);
  for (const E& e : cases) {
    const Case& c = e.c;
    CAPTURE(c.N, c.C, c.H, c.W, c.K, c.ph, c.pw, c.bias, e.pool);
    const Problem p(c);
    REQUIRE(conv2d_epilogue_applies(p.s, e.pool));
    const int64_t K = p.s.K;
    const Tensor hi = randn({K}), lo = randn({K}) * 0.1f, scale = randn({K}), shift = randn({K});
    const ConvEpilogue ep{hi.data_ptr(), lo.data_ptr(), scale.data_ptr(), shift.data_ptr(), e.pool};
    Tensor fused = full({p.s.N, K, e.pool ? p.s.OH / 2 : p.s.OH, e.pool ? p.s.OW / 2 : p.s.OW}, NAN);
    conv2d_forward_epilogue(fused.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.bias(), p.s, ep);

    Tensor y = empty(p.dy.shape());
    ref::conv2d_forward(y.data_ptr(), p.x.data_ptr(), p.w.data_ptr(), p.bias(), p.s);
    const Shape per_channel{1, K, 1, 1};
    Tensor want = relu((y - hi.reshape(per_channel) - lo.reshape(per_channel)) * scale.reshape(per_channel) +
                       shift.reshape(per_channel));
    if (e.pool) {
      KernelPolicyGuard reference(KernelPolicy{.fast = false});
      want = max_pool2d(want, 2);
    }
    NORMA_CHECK_CLOSE(fused, want, 1e-4, 1e-4);
  }
}

TEST_CASE("conv2d: with the fast kernels off no fused epilogue applies, and the fused entry refuses") {
  KernelPolicyGuard g(KernelPolicy{.fast = false});
  Tensor x = randn({2, 16, 8, 8}), w = randn({16, 16, 3, 3}), y = empty({2, 16, 8, 8});
  const ConvShape s = conv2d_shape(x.shape(), w.shape(), 1, 1, 1, 1);  // Winograd's shape
  CHECK_FALSE(conv2d_winograd_applies(s));
  CHECK_FALSE(conv2d_direct_applies(conv2d_shape({2, 3, 8, 32}, {8, 3, 3, 3}, 1, 1, 1, 1)));
  CHECK_FALSE(conv2d_epilogue_applies(s, false));
  CHECK_FALSE(conv2d_epilogue_applies(s, true));
  const std::vector<float> one(16, 1.0f), zero(16, 0.0f);
  const ConvEpilogue e{zero.data(), zero.data(), one.data(), zero.data(), false};
  CHECK_THROWS_WITH(conv2d_forward_epilogue(y.data_ptr(), x.data_ptr(), w.data_ptr(), nullptr, s, e),
                    Catch::Contains("conv2d_forward_epilogue: no fused path for input (2, 16, 8, 8)"));
}

TEST_CASE("conv2d: the op on the reference kernels equals the op on the fast ones, forward and backward") {
  if (!fast_kernels_or_skip()) return;
  const int64_t split = std::max(omp_get_max_threads(), 2) + 1;
  struct O {
    Case c;
    const char* path;
  };
  const O cases[] = {
      {{4, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, "winograd"},
      {{3, 3, 16, 32, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, true}, "direct"},
      {{split, 8, 9, 9, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, true}, "im2col"},
      {{2, 4, 7, 7, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, false}, "im2col"},
  };
  manual_seed(23);
  for (const O& o : cases) {
    const Case& c = o.c;
    CAPTURE(o.path, c.N, c.C, c.H, c.W, c.K, c.sh, c.ph, c.dh, c.groups);
    const Problem p(c);
    auto run = [&](const KernelPolicy& policy) {
      KernelPolicyGuard g(policy);
      Tensor x = p.x.clone().requires_grad_(), w = p.w.clone().requires_grad_();
      Tensor b = p.b.defined() ? p.b.clone().requires_grad_() : Tensor();
      Tensor y = conv2d(x, w, b, {c.sh, c.sw}, {c.ph, c.pw}, {c.dh, c.dw}, c.groups);
      y.backward(p.dy);
      return std::vector<Tensor>{y, x.grad(), w.grad(), b.defined() ? b.grad() : zeros({1})};
    };
    {
      KernelPolicyGuard g(KernelPolicy{});
      CHECK(conv2d_winograd_applies(p.s) == (std::string(o.path) == "winograd"));
      CHECK(conv2d_direct_applies(p.s) == (std::string(o.path) == "direct"));
    }
    const std::vector<Tensor> fast = run(KernelPolicy{}), reference = run(KernelPolicy{.fast = false});
    const float per_sum = float(1 / std::sqrt(double(p.s.N * p.s.OH * p.s.OW)));
    NORMA_CHECK_CLOSE(fast[0], reference[0], 1e-4, 1e-5);
    NORMA_CHECK_CLOSE(fast[1], reference[1], 1e-4, 1e-5);
    NORMA_CHECK_CLOSE(fast[2] * per_sum, reference[2] * per_sum, 1e-4, 1e-5);
    NORMA_CHECK_CLOSE(fast[3] * per_sum, reference[3] * per_sum, 1e-4, 1e-5);
  }
}
