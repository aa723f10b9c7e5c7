// norma_bench_alloc: does a training loop stop asking the system for memory
// after its first step? Runs an MLP's forward, backward and SGD update (as in
// `norma demo`) and prints the caching allocator's counters and step times.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#include <norma/norma.h>

using namespace norma;

namespace {

using Clock = std::chrono::steady_clock;

void print_stats(const char* when, const AllocatorStats& s) {
  fmt::print("{:<16} fresh_allocs {:5d}  fresh_bytes {:10d}  cached_allocs {:6d}  peak_bytes_in_use {:10d}\n", when,
             s.fresh_allocs, s.fresh_bytes, s.cached_allocs, s.peak_bytes_in_use);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma_bench_alloc: caching-allocator counters over a training loop"};
  int steps = 100, batch = 256, in = 64, hidden = 256, out = 10, threads = get_num_threads();
  app.add_option("--steps", steps, "training steps")->check(CLI::Range(2, 1 << 30));
  app.add_option("--batch", batch, "batch size")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "width of the two hidden layers")->check(CLI::PositiveNumber);
  app.add_option("--threads", threads, "threads for OpenMP and OpenBLAS")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  set_num_threads(threads);
  fmt::print("MLP {}-{}-{}-{}, batch {}, MSE loss, SGD; {} steps, {} threads\n\n", in, hidden, hidden, out, batch,
             steps, get_num_threads());

  manual_seed(0);
  Tensor x = randn({batch, in}), y = randn({batch, out});
  auto param = [](Shape s, float fan_in) { return uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).requires_grad_(); };
  Tensor w1 = param({in, hidden}, in), b1 = param({hidden}, in);            // (in, hidden), (hidden)
  Tensor w2 = param({hidden, hidden}, hidden), b2 = param({hidden}, hidden);  // (hidden, hidden), (hidden)
  Tensor w3 = param({hidden, out}, hidden), b3 = param({out}, hidden);        // (hidden, out), (out)
  std::vector<Tensor> params{w1, b1, w2, b2, w3, b3};
  const float lr = 0.01f;
  print_stats("before step 1", allocator_stats());

  std::vector<double> seconds;
  float first_loss = 0, last_loss = 0;
  for (int step = 1; step <= steps; ++step) {
    auto t0 = Clock::now();
    Tensor h = relu(matmul(x, w1) + b1);
    h = relu(matmul(h, w2) + b2);
    Tensor loss = (matmul(h, w3) + b3 - y).pow(2).mean();
    loss.backward();
    {
      NoGradGuard g;
      for (Tensor& p : params) {
        p.sub_(p.grad() * lr);
        p.zero_grad();
      }
    }
    last_loss = loss.item();
    seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    if (step == 1) {
      first_loss = last_loss;
      print_stats("after step 1", allocator_stats());
    }
  }
  print_stats(fmt::format("after step {}", steps).c_str(), allocator_stats());

  std::vector<double> rest(seconds.begin() + 1, seconds.end());
  std::sort(rest.begin(), rest.end());
  fmt::print("\nstep 1: {:.3f} ms   steps 2-{}: median {:.3f} ms, min {:.3f} ms   loss {:.4f} -> {:.4f}\n",
             seconds[0] * 1e3, steps, rest[rest.size() / 2] * 1e3, rest.front() * 1e3, first_loss, last_loss);
  return 0;
}
