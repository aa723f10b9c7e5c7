// BatchNorm2d's fast kernels (layers/fast/) against the reference kernels
// that define them (layers/ref/): every kernel, both layouts, the fused ReLU
// and pool, batch and fixed statistics, both variance methods, gamma/beta
// null or set, odd sizes, NaN and inf, the parallel and streaming-store paths;
// then the op and the module on either set of kernels.
#include "test_util.h"

#include <norma/core/kernel_policy.h>
#include <norma/layers/batchnorm2d.h>
#include <norma/layers/batchnorm2d_op.h>

#include <array>
#include <limits>
#include <random>
#include <tuple>
#include <utility>

using namespace norma;
using namespace norma::nn;

namespace {

// One problem: x and dy (N*C*H*W, read in either layout), dy_pool for the
// pooled output (NCHW), gamma and beta (C), and fixed statistics (C).
struct Data {
  int64_t N, C, H, W;
  std::vector<float> x, dy, dy_pool, gamma, beta;
  std::vector<double> mean, invstd;
  bool finite = true;  // false: x or dy holds inf or NaN
};

Data make_data(int64_t N, int64_t C, int64_t H, int64_t W, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Data d{N, C, H, W, {}, {}, {}, {}, {}, {}, {}, true};
  const int64_t n = N * C * H * W;
  for (int64_t i = 0; i < n; ++i) d.x.push_back(2.0f + 1.5f * normal(rng)), d.dy.push_back(normal(rng));
  for (int64_t i = 0; i < N * C * (H / 2) * (W / 2); ++i) d.dy_pool.push_back(normal(rng));
  for (int64_t c = 0; c < C; ++c) {
    d.gamma.push_back(1.0f + 0.5f * normal(rng)), d.beta.push_back(0.5f * normal(rng));
    d.mean.push_back(2.0 + 0.1 * normal(rng)), d.invstd.push_back(0.7 + 0.1 * std::fabs(normal(rng)));
  }
  return d;
}

void check_close(const std::vector<float>& fast, const std::vector<float>& ref, const char* what,
                 double rtol = 1e-5, double atol = 1e-5) {
  const test::Diff d = test::compare(fast, ref, rtol, atol);
  INFO(what << ": max abs diff " << d.max_abs << ", worst at flat index " << d.index << ": fast " << d.got
            << ", reference " << d.want);
  CHECK(d.ok);
}

// Statistics and sums in double, relative to the largest magnitude (a sum
// over a channel may cancel to near 0). From inputs with inf or NaN only the
// finite values are compared: there the reference's two-pass variance is NaN
// where the fast NHWC sweep (a shifted one-pass form, clamped at 0 by
// std::max) gives 0; the outputs y and dx are NaN from either and are compared.
void check_close(const std::vector<double>& fast, const std::vector<double>& ref, const char* what,
                 bool finite_inputs) {
  REQUIRE(fast.size() == ref.size());
  double worst = 0, scale = 1;
  bool finite_alike = true;
  for (size_t i = 0; i < ref.size(); ++i) {
    finite_alike = finite_alike && std::isfinite(fast[i]) == std::isfinite(ref[i]);
    if (std::isfinite(ref[i])) scale = std::max(scale, std::fabs(ref[i]));
    if (std::isfinite(ref[i]) && std::isfinite(fast[i])) worst = std::max(worst, std::fabs(fast[i] - ref[i]));
  }
  INFO(what << ": max abs diff " << worst << " (largest value " << scale << ")");
  CHECK((finite_alike || !finite_inputs));
  CHECK(worst <= 1e-9 * scale);
}

// Every kernel of `fast` against `ref` on one problem and one set of options.
void check_kernels(const BatchNorm2dKernels& fast, const BatchNorm2dKernels& ref, const Data& d, Layout layout,
                   VarianceMethod method, bool relu, bool affine, bool batch_stats) {
  const int64_t N = d.N, C = d.C, H = d.H, W = d.W, HW = H * W, n = N * C * HW;
  CAPTURE(N, C, H, W, layout == Layout::NHWC, method == VarianceMethod::one_pass, relu, affine, batch_stats);
  const float* gamma = affine ? d.gamma.data() : nullptr;
  const float* beta = affine ? d.beta.data() : nullptr;
  const double *mean = d.mean.data(), *invstd = d.invstd.data();
  const double M = double(N * HW);
  auto each = [&](auto run) {  // run(kernels, outputs...) once per set of kernels
    return std::pair{run(fast), run(ref)};
  };

  {  // statistics
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<double> m(C), v(C);
      k.stats(m.data(), v.data(), d.x.data(), N, C, HW, layout, method);
      return std::pair{m, v};
    });
    check_close(f.first, r.first, "stats: mean", d.finite);
    check_close(f.second, r.second, "stats: var", d.finite);
  }
  {  // the training forward
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> y(n);
      std::vector<double> m(C), v(C), s(C);
      k.forward_train(y.data(), m.data(), v.data(), s.data(), d.x.data(), gamma, beta, 1e-5, N, C, HW, layout,
                      method, relu);
      return std::tuple{y, m, v, s};
    });
    check_close(std::get<0>(f), std::get<0>(r), "forward_train: y");
    check_close(std::get<1>(f), std::get<1>(r), "forward_train: mean", d.finite);
    check_close(std::get<2>(f), std::get<2>(r), "forward_train: var", d.finite);
    check_close(std::get<3>(f), std::get<3>(r), "forward_train: invstd", d.finite);
  }
  // Given the same statistics (or sums), the elementwise kernels do the same
  // float arithmetic (SplitMean, scale_shift, bn_value, float coefficients):
  // equal to the bit, where both are compiled for the same ISA level. The
  // reference is compiled for baseline x86-64, where GCC rounds a * b + c as a
  // product then a sum; the AVX2 and AVX-512 copies contract it into one FMA:
  // there within a rounding. Statistics and sums are summed in another order: close.
  const double bits = kernel_isa() == Isa::baseline ? 0 : 1e-6;
  {  // the forward with given statistics, then in place
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> y(n), y_inplace = d.x;
      k.forward(y.data(), d.x.data(), mean, invstd, gamma, beta, N, C, HW, layout, relu);
      k.forward(y_inplace.data(), y_inplace.data(), mean, invstd, gamma, beta, N, C, HW, layout, relu);
      return std::pair{y, y_inplace};
    });
    check_close(f.first, r.first, "forward: y", bits, bits);
    check_close(f.second, r.second, "forward: y in place", bits, bits);
  }
  // The backward: its two halves, each on the same inputs, then the whole.
  std::vector<double> sum_dy(C), sum_dy_xhat(C);
  {
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<double> a(C), b(C);
      k.backward_reduce(a.data(), b.data(), d.dy.data(), d.x.data(), mean, invstd, N, C, HW, layout, relu, gamma,
                        beta);
      return std::pair{a, b};
    });
    check_close(f.first, r.first, "backward_reduce: sum_dy", d.finite);
    check_close(f.second, r.second, "backward_reduce: sum_dy_xhat", d.finite);
    sum_dy = r.first, sum_dy_xhat = r.second;
  }
  {
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> dx(n);
      k.backward_dx(dx.data(), d.dy.data(), d.x.data(), mean, invstd, gamma, sum_dy.data(), sum_dy_xhat.data(), M, N,
                    C, HW, layout, batch_stats, relu, beta);
      return dx;
    });
    check_close(f, r, "backward_dx: dx", bits, bits);
  }
  {
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> dx(n), dgamma(C), dbeta(C), dgamma_only(C);
      k.backward(dx.data(), dgamma.data(), dbeta.data(), d.dy.data(), d.x.data(), mean, invstd, gamma, N, C, HW,
                 layout, batch_stats, relu, beta);
      k.backward(nullptr, dgamma_only.data(), nullptr, d.dy.data(), d.x.data(), mean, invstd, gamma, N, C, HW,
                 layout, batch_stats, relu, beta);
      return std::tuple{dx, dgamma, dbeta, dgamma_only};
    });
    check_close(std::get<0>(f), std::get<0>(r), "backward: dx");
    check_close(std::get<1>(f), std::get<1>(r), "backward: dgamma");
    check_close(std::get<2>(f), std::get<2>(r), "backward: dbeta");
    check_close(std::get<3>(f), std::get<3>(r), "backward without dx: dgamma");
  }
  if (layout != Layout::NCHW || H < 2 || W < 2) return;  // the pool: NCHW planes of 2x2 and more
  const int64_t pooled = N * C * (H / 2) * (W / 2);
  auto same_arg = [](const std::vector<int32_t>& f, const std::vector<int32_t>& r, const char* what) {
    INFO(what);
    CHECK(f == r);
  };
  {
    auto [f, r] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> y(pooled), y_train(pooled);
      std::vector<int32_t> arg(pooled), arg_train(pooled);
      std::vector<double> m(C), v(C), s(C);
      k.pool_forward(y.data(), arg.data(), d.x.data(), mean, invstd, gamma, beta, N, C, H, W, relu);
      k.pool_forward_train(y_train.data(), arg_train.data(), m.data(), v.data(), s.data(), d.x.data(), gamma, beta,
                           1e-5, N, C, H, W, method, relu);
      return std::tuple{y, arg, y_train, arg_train, m};
    });
    check_close(std::get<0>(f), std::get<0>(r), "pool_forward: y", bits, bits);
    same_arg(std::get<1>(f), std::get<1>(r), "pool_forward: arg");
    check_close(std::get<2>(f), std::get<2>(r), "pool_forward_train: y");
    same_arg(std::get<3>(f), std::get<3>(r), "pool_forward_train: arg");
    check_close(std::get<4>(f), std::get<4>(r), "pool_forward_train: mean", d.finite);
    const std::vector<int32_t> arg = std::get<1>(r);
    auto [bf, br] = each([&](const BatchNorm2dKernels& k) {
      std::vector<float> dx(n), dgamma(C), dbeta(C);
      k.pool_backward(dx.data(), dgamma.data(), dbeta.data(), d.dy_pool.data(), arg.data(), d.x.data(), mean, invstd,
                      gamma, beta, N, C, H, W, batch_stats, relu);
      return std::tuple{dx, dgamma, dbeta};
    });
    check_close(std::get<0>(bf), std::get<0>(br), "pool_backward: dx");
    check_close(std::get<1>(bf), std::get<1>(br), "pool_backward: dgamma");
    check_close(std::get<2>(bf), std::get<2>(br), "pool_backward: dbeta");
  }
}

void check_every_option(const BatchNorm2dKernels& fast, const Data& d) {
  const BatchNorm2dKernels& ref = batchnorm2d_reference_kernels();
  for (Layout layout : {Layout::NCHW, Layout::NHWC})
    for (VarianceMethod method : {VarianceMethod::two_pass, VarianceMethod::one_pass})
      for (bool relu : {false, true})
        for (bool affine : {false, true})
          for (bool batch_stats : {false, true}) check_kernels(fast, ref, d, layout, method, relu, affine, batch_stats);
}

}  // namespace

TEST_CASE("bn kernels: each fast kernel equals its reference, every option, odd and parallel sizes") {
  if (!batchnorm2d_fast_kernels()) {
    WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
    return;
  }
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  KernelPolicyGuard g(KernelPolicy{.isa = isa});
  const BatchNorm2dKernels* fast = batchnorm2d_fast_kernels();
  // HW = 1, C = 1, C = 13, 7x5 and 5x7 planes (a last odd row or column in no
  // pool window), N = 1; (8, 16, 32, 32) takes the kernels' parallel path.
  const auto [N, C, H, W] = GENERATE(std::array<int64_t, 4>{2, 3, 4, 4}, std::array<int64_t, 4>{3, 13, 7, 5},
                                     std::array<int64_t, 4>{1, 2, 5, 7}, std::array<int64_t, 4>{6, 1, 1, 1},
                                     std::array<int64_t, 4>{5, 13, 1, 1}, std::array<int64_t, 4>{4, 1, 6, 6},
                                     std::array<int64_t, 4>{8, 16, 32, 32});
  check_every_option(*fast, make_data(N, C, H, W, unsigned(N * 1000 + C * 10 + H)));
}

TEST_CASE("bn kernels: NaN and inf inputs give the reference's results") {
  if (!batchnorm2d_fast_kernels()) {
    WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
    return;
  }
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  KernelPolicyGuard g(KernelPolicy{.isa = isa});
  const BatchNorm2dKernels* fast = batchnorm2d_fast_kernels();
  // NaN, inf and -inf in x (in several channels for either layout) and NaN in
  // dy: the fused ReLU turns a NaN output to 0 and masks a NaN gradient where
  // its output was not positive; a NaN wins its pool window.
  Data d = make_data(3, 5, 6, 4, 99);
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (int64_t i : {0, 7, 40, 41, 200}) d.x[i] = nan;
  for (int64_t i : {3, 90, 301}) d.x[i] = inf;
  for (int64_t i : {5, 150}) d.x[i] = -inf;
  for (int64_t i : {11, 12, 250, 251}) d.dy[i] = nan;
  d.dy_pool[4] = nan;
  d.finite = false;
  check_every_option(*fast, d);
}

TEST_CASE("bn kernels: outputs of 16 MiB and more, streaming stores on and off, equal the reference") {
  if (!batchnorm2d_fast_kernels()) {
    WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
    return;
  }
  const Isa isa = GENERATE(Isa::baseline, Isa::avx2, Isa::avx512);
  if (!test::isa_or_skip(isa)) return;
  CAPTURE(isa_name(isa));
  // 17 MiB of floats in planes of 255x255: unaligned starts and chunk tails.
  const Data d = make_data(17, 4, 255, 255, 5);
  const bool stream_stores = GENERATE(true, false);
  KernelPolicy policy;
  policy.stream_stores = stream_stores;
  policy.isa = isa;
  KernelPolicyGuard g(policy);
  const BatchNorm2dKernels* fast = batchnorm2d_fast_kernels();
  CAPTURE(stream_stores);
  for (Layout layout : {Layout::NCHW, Layout::NHWC})
    check_kernels(*fast, batchnorm2d_reference_kernels(), d, layout, VarianceMethod::two_pass, true, true, true);
}

TEST_CASE("batch_norm2d: the dispatch point follows kernel_policy().fast") {
  {
    KernelPolicyGuard g(KernelPolicy{.fast = false});
    CHECK(&batchnorm2d_kernels() == &batchnorm2d_reference_kernels());
  }
  KernelPolicyGuard g(KernelPolicy{.fast = true});
  if (fast_kernels_built())
    CHECK(&batchnorm2d_kernels() == batchnorm2d_fast_kernels());
  else
    CHECK(&batchnorm2d_kernels() == &batchnorm2d_reference_kernels());
}

TEST_CASE("BatchNorm2d on the reference kernels equals the fast ones: outputs, gradients, running statistics") {
  if (!fast_kernels_built()) {
    WARN("skipped: built without the fast kernels (NORMA_FAST_KERNELS=OFF)");
    return;
  }
  const Layout layout = GENERATE(Layout::NCHW, Layout::NHWC);
  const int fusion = GENERATE(0, 1, 2);  // forward, forward_relu, forward_relu_pool (NCHW)
  const bool training = GENERATE(true, false);
  if (fusion == 2 && layout == Layout::NHWC) return;
  CAPTURE(layout == Layout::NHWC, fusion, training);
  manual_seed(3);
  const Shape shape = layout == Layout::NCHW ? Shape{4, 6, 10, 9} : Shape{4, 10, 9, 6};
  Tensor x0 = randn(shape) * 2.0f + 1.0f, g0 = randn({6}), b0 = randn({6});
  auto run = [&](bool fast) {
    KernelPolicy policy;
    policy.fast = fast;
    KernelPolicyGuard g(policy);
    BatchNorm2d bn(BatchNorm2dOptions(6).layout(layout));
    {
      NoGradGuard no_grad;
      bn.weight.copy_(g0), bn.bias.copy_(b0);
      bn.running_mean.fill_(0.5f), bn.running_var.fill_(2.0f);
    }
    training ? bn.train() : bn.eval();
    Tensor x = x0.clone().requires_grad_();
    Tensor y;
    for (int step = 0; step < 2; ++step)  // two steps: the running statistics move twice
      y = fusion == 0 ? bn.forward(x) : fusion == 1 ? bn.forward_relu(x) : bn.forward_relu_pool(x);
    manual_seed(4);
    y.backward(randn(y.shape()));
    return std::vector<Tensor>{y.detach(), x.grad(), bn.weight.grad(), bn.bias.grad(), bn.running_mean,
                               bn.running_var};
  };
  const std::vector<Tensor> fast = run(true), ref = run(false);
  NORMA_CHECK_CLOSE(fast[0], ref[0], 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(fast[1], ref[1], 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(fast[2], ref[2], 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(fast[3], ref[3], 1e-5, 1e-5);
  NORMA_CHECK_CLOSE(fast[4], ref[4], 1e-6, 1e-6);
  NORMA_CHECK_CLOSE(fast[5], ref[5], 1e-6, 1e-6);
}
