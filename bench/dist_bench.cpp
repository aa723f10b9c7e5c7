// norma_bench_dist: data-parallel cifar-small training steps, and how much of
// a step is communication. Run alone (1 process, --threads T) or under mpirun
// (K ranks, each with batch/K images); both train on a global batch of --batch.
//   build-mpi/bench/norma_bench_dist --threads 2
//   mpirun -np 2 --allow-run-as-root -x OMP_NUM_THREADS=1 build-mpi/bench/norma_bench_dist --threads 1
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>

#include <norma/core/dist/mpi_process_group.h>
#include <norma/apps/models.h>
#include <norma/norma.h>
#include <norma/core/dist/data_parallel.h>

using namespace norma;

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Forwards to a group and adds up the seconds spent in its collectives
// (including any wait for a slower rank).
class TimedGroup : public dist::ProcessGroup {
 public:
  explicit TimedGroup(std::shared_ptr<dist::ProcessGroup> g) : g_(std::move(g)) {}
  int rank() const override { return g_->rank(); }
  int size() const override { return g_->size(); }
  std::string name() const override { return g_->name(); }
  void allreduce_sum(double* d, size_t n) override { timed([&] { g_->allreduce_sum(d, n); }); }
  void allreduce_sum(float* d, size_t n) override { timed([&] { g_->allreduce_sum(d, n); }); }
  void allreduce_sum(int64_t* d, size_t n) override { timed([&] { g_->allreduce_sum(d, n); }); }
  void broadcast(float* d, size_t n, int r) override { timed([&] { g_->broadcast(d, n, r); }); }
  void broadcast(double* d, size_t n, int r) override { timed([&] { g_->broadcast(d, n, r); }); }
  void broadcast(int64_t* d, size_t n, int r) override { timed([&] { g_->broadcast(d, n, r); }); }
  void barrier() override { g_->barrier(); }
  [[noreturn]] void abort(int code) override {
    g_->abort(code);
    std::_Exit(code);  // not reached
  }
  double seconds = 0;
  int64_t calls = 0;

 private:
  template <class F>
  void timed(F f) {
    auto t0 = Clock::now();
    f();
    seconds += since(t0);
    ++calls;
  }
  std::shared_ptr<dist::ProcessGroup> g_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma_bench_dist: data-parallel cifar-small steps (run alone or under mpirun)"};
  int batch = 128, steps = 10, warmup = 2, threads = get_num_threads();
  bool sync_bn = true;
  size_t bucket_kib = 4096;
  app.add_option("--batch", batch, "global batch per step, split evenly over the ranks")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::NonNegativeNumber);
  app.add_option("--threads", threads, "threads per rank (OpenMP and OpenBLAS)")->check(CLI::PositiveNumber);
  app.add_option("--sync-bn", sync_bn, "SyncBatchNorm (global statistics) when running on several ranks");
  app.add_option("--bucket-kib", bucket_kib, "gradient allreduce bucket size in KiB")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  auto base = dist::default_group();
  auto pg = std::make_shared<TimedGroup>(base);
  const int K = pg->size();
  if (batch % K != 0) fail("norma_bench_dist: --batch {} is not divisible by {} ranks", batch, K);
  const int64_t B = batch / K;
  set_num_threads(threads);
  manual_seed(1);
  std::shared_ptr<dist::ProcessGroup> bn_group = (sync_bn && K > 1) ? pg : nullptr;
  auto model = nn::cifar_small([&](int64_t c) {
    return std::make_shared<nn::BatchNorm2d>(nn::BatchNorm2dOptions(c).process_group(bn_group));
  });
  dist::broadcast_state(*model, *pg);
  int64_t n_params = 0;
  for (const Tensor& p : model->parameters()) n_params += p.numel();
  optim::SGD opt(model->parameters(), 0.01, 0.9);
  manual_seed(100 + uint64_t(pg->rank()));
  Tensor x = randn({B, 3, 32, 32});
  std::vector<float> labels(static_cast<size_t>(B));
  for (float& l : labels) l = float(random_u32() % 10);
  Tensor y = from_vector(labels, {B});

  double step_s = 0, grad_s = 0, comm_s = 0;
  for (int s = 0; s < warmup + steps; ++s) {
    pg->barrier();
    const double comm0 = pg->seconds;
    auto t0 = Clock::now();
    opt.zero_grad();
    Tensor loss = nn::cross_entropy(model->forward(x), y);
    loss.backward();
    auto tg = Clock::now();
    dist::allreduce_gradients(*model, *pg, bucket_kib << 10);
    const double g = since(tg);
    opt.step();
    dist::allreduce_mean(loss.item(), *pg);
    if (s >= warmup) step_s += since(t0), grad_s += g, comm_s += pg->seconds - comm0;
  }
  // Per-step means, gathered by rank (each fills its slot of a zeroed vector, then one sum).
  double stats[3] = {step_s / steps, grad_s / steps, comm_s / steps}, worst[3];
  std::vector<double> all(size_t(3 * K), 0.0);
  std::copy(stats, stats + 3, all.begin() + 3 * pg->rank());
  base->allreduce_sum(all.data(), all.size());
  for (int i = 0; i < 3; ++i) {
    worst[i] = 0;
    for (int r = 0; r < K; ++r) worst[i] = std::max(worst[i], all[size_t(3 * r + i)]);
  }
  if (pg->rank() == 0) {
    fmt::print("group {} ({} ranks x {} threads), batch {} per step ({} per rank), SyncBatchNorm {}\n", pg->name(), K,
               get_num_threads(), batch, B, bn_group ? "on" : "off");
    fmt::print("cifar-small: {} parameters = {} bytes of float32 gradients, buckets of {} KiB\n", n_params,
               n_params * 4, bucket_kib);
    fmt::print("step {:.1f} ms -> {:.1f} images/s (slowest rank; mean of {} steps after {} warm-up)\n",
               worst[0] * 1e3, batch / worst[0], steps, warmup);
    fmt::print("communication per step {:.2f} ms = {:.2f}% of the step (gradient allreduce {:.2f} ms, "
               "the rest SyncBatchNorm and the loss; includes waiting for the slower rank)\n",
               worst[2] * 1e3, 100 * worst[2] / worst[0], worst[1] * 1e3);
  }
  return 0;
}
