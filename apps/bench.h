// `norma bench`: training-step and inference throughput on random data, and
// where a step's time goes (per phase, and per layer for Sequential models).
#pragma once
#include <string>
#include <vector>

namespace norma::app {

struct BenchConfig {
  std::string model = "cifar-small", bn_preset = "pytorch";
  int64_t batch_size = 128;
  int64_t steps = 20;   // timed training steps (after `warmup` untimed ones)
  int64_t warmup = 3;
  int threads = 0;      // 0 = leave as is
  uint64_t seed = 0;
};

struct LayerTime {
  std::string name, type;
  double forward_ms = 0, backward_ms = 0;  // median over the timed repetitions
};

struct BenchResult {
  int64_t batch_size = 0, threads = 0;
  double train_img_per_s = 0, eval_img_per_s = 0;
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;  // per training step, medians
  double peak_rss_mb = 0;
  std::string blas_core;  // the kernels OpenBLAS runs (openblas_get_corename)
  std::vector<LayerTime> layers;
};

BenchResult run_bench(const BenchConfig& config);
std::string format_bench(const BenchResult& r);  // the human-readable report
std::string bench_json(const BenchResult& r);     // one line

}  // namespace norma::app
