// norma_bench_matmul: how close norma::matmul comes to a bare cblas_sgemm.
// Three variants run interleaved in one process, round after round; each
// prints the median and best GFLOP/s over the rounds and its ratio to raw sgemm.
#include <cblas.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <norma/norma.h>

#include "bench_util.h"

using namespace norma;

namespace {

using bench::median;
using bench::seconds_per_call;

struct Variant {
  std::string name;
  std::function<void()> run;
  std::vector<double> seconds;  // one entry per round
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma_bench_matmul: norma::matmul against raw cblas_sgemm"};
  int n = 1024, rounds = 7, reps = 5, threads = get_num_threads();
  app.add_option("--size", n, "N of the N x N x N product")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "interleaved rounds (median and best are reported)")->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "calls per variant per round")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "threads for OpenMP and OpenBLAS")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  set_num_threads(threads);
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  fmt::print("OPENBLAS_CORETYPE={}  openblas core: {}  config: {}\n", coretype ? coretype : "(unset)",
             openblas_get_corename(), openblas_get_config());
  fmt::print("threads: norma/OpenMP {}, OpenBLAS {}\n", get_num_threads(), openblas_get_num_threads());
  fmt::print("size {0} x {0} x {0}, {1} rounds x {2} calls, order rotated each round\n\n", n, rounds, reps);

  manual_seed(0);
  Tensor a = randn({n, n}), b = randn({n, n});
  Tensor at = a.t().contiguous();  // at.t() holds a's values as a transposed view
  // Raw sgemm reads and writes preallocated buffers: the inputs are Norma's own, the output is fixed.
  std::vector<float> c_raw(size_t(n) * n);
  auto raw = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data_ptr(), n, b.data_ptr(), n, 0.0f,
                c_raw.data(), n);
  };

  // Sanity: both Norma paths give raw sgemm's answer, and the transposed view costs one block (the output), no copy.
  raw();
  Tensor c1 = matmul(a, b);
  AllocatorStats s0 = allocator_stats();
  Tensor c2 = matmul(at.t(), b);
  AllocatorStats s1 = allocator_stats();
  int64_t blocks = (s1.fresh_allocs + s1.cached_allocs) - (s0.fresh_allocs + s0.cached_allocs);
  double diff1 = 0, diff2 = 0;
  for (int64_t i = 0; i < int64_t(n) * n; ++i) {
    diff1 = std::max(diff1, double(std::fabs(c1.data_ptr()[i] - c_raw[i])));
    diff2 = std::max(diff2, double(std::fabs(c2.data_ptr()[i] - c_raw[i])));
  }
  fmt::print("check: max |norma - raw| = {:.3g} (contiguous), {:.3g} (a.t() view); "
             "blocks allocated by matmul(a.t(), b): {} (1 = output only, no copy)\n\n",
             diff1, diff2, blocks);
  c1 = c2 = Tensor();

  std::vector<Variant> variants{
      {"raw cblas_sgemm", raw, {}},
      {"norma::matmul(a, b)", [&] { Tensor c = matmul(a, b); }, {}},
      {"norma::matmul(a.t(), b)", [&] { Tensor c = matmul(at.t(), b); }, {}},
  };
  for (Variant& v : variants) seconds_per_call(v.run, reps);  // warm-up: thread pools, caches, output blocks
  for (int r = 0; r < rounds; ++r)
    for (size_t i = 0; i < variants.size(); ++i) {
      Variant& v = variants[(i + r) % variants.size()];
      v.seconds.push_back(seconds_per_call(v.run, reps));
    }

  const double flop = 2.0 * n * n * n;
  const double raw_median = median(variants[0].seconds);
  fmt::print("{:<26} {:>14} {:>14} {:>16}\n", "variant", "median GFLOP/s", "best GFLOP/s", "median vs raw");
  for (const Variant& v : variants) {
    double med = median(v.seconds), best = *std::min_element(v.seconds.begin(), v.seconds.end());
    fmt::print("{:<26} {:>14.1f} {:>14.1f} {:>15.3f}x\n", v.name, flop / med * 1e-9, flop / best * 1e-9,
               raw_median / med);
  }
  return 0;
}
