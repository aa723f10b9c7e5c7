// The `norma` command line: train, eval, bench, summary, download, and demo
// (fits a small model with nothing but the tensor core and autograd).
// Exit codes: 0 success, 1 an error (on stderr), 130/143 training interrupted
// by SIGINT/SIGTERM after writing its checkpoint; CLI11's own codes for bad
// flags, 2 for an unknown command. The flags themselves are in apps/cli.cpp.
#include <cblas.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include <norma/core/dist/mpi_process_group.h>
#include <norma/core/dist/process_group.h>
#include <norma/norma.h>

#include "bench.h"
#include "cli.h"
#include "download.h"
#include "models.h"
#include "trainer.h"

using namespace norma;

namespace {

// Fits y = sin(3x) on [-1, 1] with a 1-64-64-1 MLP and plain gradient descent,
// printing the loss as it falls. Returns the final mean squared error.
float run_demo(int steps, float lr, uint64_t seed) {
  // CLI11's PositiveNumber lets NaN through (every comparison with NaN is false).
  if (!(lr > 0) || !std::isfinite(lr)) fail("--lr: must be a positive finite number, got {}", lr);
  manual_seed(seed);
  Tensor x = arange(-1.0f, 1.0f, 2.0f / 256).reshape({256, 1});
  std::vector<float> ys;
  for (float v : x.to_vector()) ys.push_back(std::sin(3.0f * v));
  Tensor y = from_vector(ys, x.shape());
  auto param = [](Shape s, float fan_in) { return uniform(s, -1 / std::sqrt(fan_in), 1 / std::sqrt(fan_in)).requires_grad_(); };
  Tensor w1 = param({1, 64}, 1), b1 = param({64}, 1);
  Tensor w2 = param({64, 64}, 64), b2 = param({64}, 64);
  Tensor w3 = param({64, 1}, 64), b3 = param({1}, 64);
  std::vector<Tensor> params{w1, b1, w2, b2, w3, b3};
  float loss_value = 0;
  for (int step = 1; step <= steps; ++step) {
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
    loss_value = loss.item();
    if (step == 1 || step % (steps / 10 > 0 ? steps / 10 : 1) == 0)
      fmt::print("step {:5d}  mse {:.6f}\n", step, loss_value);
  }
  return loss_value;
}

// OpenBLAS 0.3.21 picks its kernels once, when it loads, from OPENBLAS_CORETYPE
// or from CPUID, and it takes AMD's AVX-512 CPUs (Zen 4/5) for AVX2-only cores,
// whose sgemm then runs at about half the speed (docs/performance.md has the figures).
// Where the CPU and the OS both support AVX-512 and OpenBLAS did not choose an
// AVX-512 core, run this program again with OPENBLAS_CORETYPE=SKYLAKEX. Never
// without AVX-512: those kernels die with SIGILL (seen on a VM whose EPYC hides
// AVX-512 from CPUID; docs/performance.md).
// __builtin_cpu_supports checks the OS's XCR0 state as well as CPUID.
// Setting OPENBLAS_CORETYPE (to anything) or NORMA_NO_REEXEC=1 turns this off.
void prefer_avx512_openblas(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") || std::getenv("NORMA_NO_REEXEC")) return;
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd")))
    return;
  std::string core = openblas_get_corename();
  for (char& c : core) c = char(std::tolower(static_cast<unsigned char>(c)));
  if (core == "skylakex" || core == "cooperlake" || core == "sapphirerapids") return;
  setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the core OpenBLAS chose
  unsetenv("OPENBLAS_CORETYPE");
}

}  // namespace

int main(int argc, char** argv) {
  prefer_avx512_openblas(argv);
  app::CliOptions opt;
  std::unique_ptr<CLI::App> cli = app::make_cli(opt);
  if (std::string unknown = app::unknown_command(*cli, argc, argv); !unknown.empty()) {
    fmt::print(stderr, "norma: {}\n", unknown);
    return 2;
  }
  CLI11_PARSE(*cli, argc, argv);
  app::TrainConfig& tc = opt.train;
  const std::string command = cli->get_subcommands()[0]->get_name();  // exactly one (make_cli requires it)
  try {
    if (command == "train") {
      tc.augment = !opt.no_augment;
      if (opt.distributed) {
        tc.process_group = dist::mpi_world();
        tc.sync_bn = !opt.no_sync_bn;
      }
      app::TrainResult r;
      try {
        r = app::train(tc);
      } catch (const std::exception& e) {
        if (!tc.process_group) throw;
        // Returning would leave the other ranks waiting in a collective: end the job.
        fmt::print(stderr, "norma: error on rank {}: {}\n", tc.process_group->rank(), e.what());
        tc.process_group->abort(1);
      }
      if (tc.json && (!tc.process_group || tc.process_group->rank() == 0))
        fmt::print("{}\n", nlohmann::json{{"epochs", r.epochs},
                                          {"steps", r.steps},
                                          {"train_loss", r.train_loss},
                                          {"train_acc", r.train_acc},
                                          {"test_loss", r.test_loss},
                                          {"test_acc", r.test_acc},
                                          {"train_img_per_s", r.train_img_per_s},
                                          {"wall_s", r.wall_s},
                                          {"peak_rss_mb", r.peak_rss_mb},
                                          {"interrupted", r.interrupted}}
                                .dump());
      if (r.interrupted) return 128 + app::interrupt_signal();
    } else if (command == "eval") {
      const app::EvalResult r = app::evaluate_checkpoint(opt.eval);
      if (opt.eval_json)
        fmt::print("{}\n", nlohmann::json{{"test_acc", r.acc}, {"test_loss", r.loss}, {"images", r.images},
                                          {"img_per_s", r.img_per_s}}
                                .dump());
      else
        fmt::print("test loss {:.4f} acc {:.4f} on {} images ({:.0f} img/s)\n", r.loss, r.acc, r.images, r.img_per_s);
    } else if (command == "bench") {
      const app::BenchResult r = app::run_bench(opt.bench);
      fmt::print("{}", opt.bench_json ? app::bench_json(r) + "\n" : app::format_bench(r));
    } else if (command == "summary") {
      auto model = app::build_model(opt.summary_model, "pytorch");
      fmt::print("{}", nn::summary(*model, {1, 3, 32, 32}));
    } else if (command == "download") {
      try {
        data::download_cifar10(opt.download_dir, opt.archive);
      } catch (const Error& e) {
        if (!opt.archive.empty()) throw;
        fail("{}\n(from the command line: norma download cifar10 --archive cifar-10-binary.tar.gz --dir {})", e.what(),
             opt.download_dir);
      }
      fmt::print("CIFAR-10 is in {}/cifar-10-batches-bin\n", opt.download_dir);
    } else if (command == "demo") {
      float mse = run_demo(opt.demo_steps, opt.demo_lr, opt.demo_seed);
      fmt::print("final mse {:.6f}\n", mse);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "norma: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
