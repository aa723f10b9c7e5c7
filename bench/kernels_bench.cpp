// norma_bench_kernels: Norma's kernels against the machine's own limits,
// measured in the same run: BatchNorm2d forward+backward against memcpy
// bandwidth, and each cifar-small convolution against sgemm's GFLOP/s.
// Every figure is the median over --rounds rounds; the rounds interleave the
// measurements so that the machine's noise hits them all alike.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <norma/norma.h>

#include "bench_util.h"

using namespace norma;

namespace {

using bench::median;
using bench::seconds_per_call;

struct Measure {
  std::string name;
  std::function<void()> run;
  double work;  // bytes moved, or floating-point operations, per call
  std::vector<double> seconds;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma_bench_kernels: BatchNorm2d against memcpy bandwidth, Conv2d against sgemm"};
  int rounds = 5, reps = 3, threads = get_num_threads(), batch = 128;
  bool json = false;
  app.add_option("--rounds", rounds, "interleaved rounds (medians are reported)")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "calls per measurement per round")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "threads for OpenMP and OpenBLAS")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", batch, "N of the BatchNorm2d and Conv2d inputs")->check(CLI::PositiveNumber);
  app.add_flag("--json", json, "print one JSON line instead of the tables");
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  manual_seed(0);
  std::vector<Measure> ms;

  // ---- limits: memcpy over both threads (bytes read + written) and sgemm 2048^3.
  const int64_t bn_numel = int64_t(batch) * 64 * 32 * 32;
  std::vector<float> src(size_t(bn_numel), 1.0f), dst(size_t(bn_numel), 0.0f);
  ms.push_back({"memcpy", [&] {
#pragma omp parallel for schedule(static)
                  for (int t = 0; t < threads; ++t) {
                    const int64_t lo = bn_numel * t / threads, hi = bn_numel * (t + 1) / threads;
                    std::memcpy(dst.data() + lo, src.data() + lo, size_t(hi - lo) * sizeof(float));
                  }
                },
                2.0 * bn_numel * sizeof(float), {}});
  const int n = 2048;
  Tensor a = randn({n, n}), b = randn({n, n}), c = empty({n, n});
  ms.push_back({"sgemm 2048", [&] {
                  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data_ptr(), n,
                              b.data_ptr(), n, 0.0f, c.data_ptr(), n);
                },
                2.0 * n * n * n, {}});

  // ---- BatchNorm2d forward + backward, training mode, through the op and
  // autograd, alone and with the ReLU fused. Bytes: the tensors each layout's
  // kernels stream through memory. NCHW works a channel at a time (a channel is
  // 512 KiB at batch 128), so its second and third looks at x, and the dx pass's
  // at dy and x, hit L2: forward reads x and writes y, backward reads dy and x
  // and writes dx, 5 tensors. NHWC reads x for the mean and variance (one
  // sweep), then reads x and writes y; backward reads dy and x for the sums,
  // then again, and writes dx: 8 tensors. (5 is the least any kernel moves.)
  for (bool relu : {false, true})
    for (auto layout : {nn::Layout::NCHW, nn::Layout::NHWC}) {
      const bool nhwc = layout == nn::Layout::NHWC;
      Shape shape = nhwc ? Shape{batch, 32, 32, 64} : Shape{batch, 64, 32, 32};
      auto x = std::make_shared<Tensor>(randn(shape).requires_grad_());
      auto gamma = std::make_shared<Tensor>(ones({64}).requires_grad_());
      auto beta = std::make_shared<Tensor>(zeros({64}).requires_grad_());
      auto rm = std::make_shared<Tensor>(zeros({64})), rv = std::make_shared<Tensor>(ones({64}));
      auto dy = std::make_shared<Tensor>(randn(shape));
      nn::BatchNormArgs args;
      args.layout = layout;
      args.momentum = 0.1;
      args.relu = relu;
      ms.push_back({fmt::format("BatchNorm2d{} {}", relu ? "+ReLU" : "", nhwc ? "NHWC" : "NCHW"), [=] {
                      Tensor y = nn::batch_norm2d(*x, *gamma, *beta, *rm, *rv, args);
                      y.backward(*dy);
                      x->zero_grad(), gamma->zero_grad(), beta->zero_grad();
                    },
                    (nhwc ? 8.0 : 5.0) * bn_numel * sizeof(float), {}});
    }

  // ---- the five convolutions of cifar-small (3x3, padding 1), raw kernels.
  // Forward 2*N*K*C*9*OH*OW FLOPs; backward twice that (dx and dw), except the
  // first layer, whose input needs no gradient (dw only, as in training).
  struct ConvLayer { int64_t C, K, H; };
  for (ConvLayer l : {ConvLayer{3, 32, 32}, {32, 32, 32}, {32, 64, 16}, {64, 64, 16}, {64, 128, 8}}) {
    nn::ConvShape s = nn::conv2d_shape({batch, l.C, l.H, l.H}, {l.K, l.C, 3, 3}, {1, 1}, {1, 1}, {1, 1}, 1);
    auto x = std::make_shared<Tensor>(randn({batch, l.C, l.H, l.H}));
    auto w = std::make_shared<Tensor>(randn({l.K, l.C, 3, 3}));
    auto y = std::make_shared<Tensor>(empty({batch, l.K, l.H, l.H}));
    auto dx = std::make_shared<Tensor>(empty(x->shape()));
    auto dw = std::make_shared<Tensor>(empty(w->shape()));
    const double flop = 2.0 * batch * l.K * l.C * 9 * l.H * l.H;
    const bool first = l.C == 3;
    const std::string name = fmt::format("conv {}->{} {}x{}", l.C, l.K, l.H, l.H);
    ms.push_back({name + " fwd", [=] { nn::conv2d_forward(y->data_ptr(), x->data_ptr(), w->data_ptr(), nullptr, s); },
                  flop, {}});
    ms.push_back({name + " bwd", [=] {
                    nn::conv2d_backward(first ? nullptr : dx->data_ptr(), dw->data_ptr(), nullptr, y->data_ptr(),
                                        x->data_ptr(), w->data_ptr(), s);
                  },
                  first ? flop : 2 * flop, {}});
  }

  // After its sgemm, OpenBLAS's threads keep spinning for a while; the next
  // measurement would share the cores with them (BatchNorm2d NCHW, measured
  // next, ran at half speed in some runs). A pause lets them go to sleep.
  auto measure = [&](Measure& m, int n) {
    const double sec = seconds_per_call(m.run, n);
    if (&m == &ms[1]) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return sec;
  };
  for (Measure& m : ms) measure(m, 1);  // warm-up: pools, caches, pages
  for (int r = 0; r < rounds; ++r)
    for (Measure& m : ms) m.seconds.push_back(measure(m, reps));

  const double copy_gbs = ms[0].work / median(ms[0].seconds) * 1e-9;
  const double gemm_gflops = ms[1].work / median(ms[1].seconds) * 1e-9;
  nlohmann::json out{{"threads", threads}, {"batch_size", batch}, {"blas_core", openblas_get_corename()},
                     {"memcpy_gb_per_s", copy_gbs}, {"sgemm_gflop_per_s", gemm_gflops}};
  if (!json) {
    fmt::print("{} thread(s), batch {}, OpenBLAS core {}, median of {} rounds x {} calls\n", threads, batch,
               openblas_get_corename(), rounds, reps);
    fmt::print("memcpy {:.1f} GB/s (read + written), sgemm 2048^3 {:.1f} GFLOP/s\n\n", copy_gbs, gemm_gflops);
    fmt::print("{:<26} {:>9} {:>12} {:>10}\n", "kernel", "ms", "rate", "of limit");
  }
  for (size_t i = 2; i < ms.size(); ++i) {
    const Measure& m = ms[i];
    const double sec = median(m.seconds);
    const bool bn = m.name.rfind("BatchNorm2d", 0) == 0;
    const double rate = m.work / sec * 1e-9, frac = rate / (bn ? copy_gbs : gemm_gflops);
    out["kernels"].push_back({{"name", m.name}, {"ms", sec * 1e3}, {bn ? "gb_per_s" : "gflop_per_s", rate},
                              {bn ? "of_memcpy" : "of_sgemm", frac}});
    if (!json)
      fmt::print("{:<26} {:>9.2f} {:>7.1f} {:<4} {:>9.0f}%\n", m.name, sec * 1e3, rate, bn ? "GB/s" : "GF/s",
                 100 * frac);
  }
  if (json) fmt::print("{}\n", out.dump());
  return 0;
}
