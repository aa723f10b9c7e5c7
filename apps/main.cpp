// The `norma` command line: train, eval, bench, summary, download, and demo
// (fits a small model with nothing but the tensor core and autograd).
// Exit codes: 0 success, 1 an error (on stderr), 130/143 training interrupted
// by SIGINT/SIGTERM after writing its checkpoint; CLI11's own codes for bad flags.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <fmt/ranges.h>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>

#include <norma/core/mpi_process_group.h>
#include <norma/core/process_group.h>
#include <norma/data/download.h>
#include <norma/norma.h>

#include "bench.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"norma: a minimal, fast and readable deep-learning framework"};
  app.require_subcommand(1);
  const std::vector<std::string> models = nn::model_names();
  const std::vector<std::string> presets = nn::bn_presets::preset_names();

  // ---- train
  app::TrainConfig tc;
  auto* train = app.add_subcommand("train", "train a CNN on CIFAR-10");
  train->add_option("--data", tc.data, "CIFAR-10 directory (default: $NORMA_DATA, ./data/cifar-10-batches-bin, "
                                       "../shared/cifar10/cifar-10-batches-bin)");
  train->add_option("--model", tc.model, "model")->check(CLI::IsMember(models))->capture_default_str();
  train->add_option("--epochs", tc.epochs, "epochs")->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--batch-size", tc.batch_size, "images per step")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  train->add_option("--lr", tc.lr, "learning rate (the peak for onecycle)")->check(CLI::PositiveNumber)
      ->capture_default_str();
  train->add_option("--optimizer", tc.optimizer, "optimizer")->check(CLI::IsMember({"sgd", "adam", "adamw"}))
      ->capture_default_str();
  train->add_option("--momentum", tc.momentum, "SGD momentum")->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  train->add_flag("--nesterov,!--no-nesterov", tc.nesterov, "Nesterov momentum (SGD)")->capture_default_str();
  train->add_option("--weight-decay", tc.weight_decay, "weight decay on conv and linear weights")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  train->add_option("--schedule", tc.schedule, "lr schedule, stepped every batch")
      ->check(CLI::IsMember({"onecycle", "cosine", "step", "constant"}))->capture_default_str();
  train->add_option("--warmup", tc.warmup, "epochs of linear lr warm-up (onecycle: its rising phase; default 30%)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  train->add_option("--label-smoothing", tc.label_smoothing, "cross-entropy label smoothing")
      ->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  bool no_augment = false;
  train->add_flag("--no-augment", no_augment, "no random crop and flip");
  train->add_option("--bn-preset", tc.bn_preset, "BatchNorm2d convention")->check(CLI::IsMember(presets))
      ->capture_default_str();
  train->add_option("--seed", tc.seed, "random seed (weights, shuffling, augmentation)")->capture_default_str();
  train->add_option("--threads", tc.threads, "threads (default: all cores)")->check(CLI::PositiveNumber);
  train->add_option("--limit", tc.limit, "train on the first N training images")->check(CLI::PositiveNumber);
  train->add_option("--test-limit", tc.test_limit, "evaluate on the first N test images")->check(CLI::PositiveNumber);
  train->add_option("--checkpoint", tc.checkpoint, "checkpoint written after every epoch (atomically)");
  train->add_option("--resume", tc.resume, "continue the run saved in this checkpoint")->check(CLI::ExistingFile);
  train->add_option("--metrics", tc.metrics, "CSV of per-epoch metrics");
  train->add_flag("--metrics-steps", tc.metrics_every_step, "also one --metrics row per step");
  train->add_option("--bn-stats", tc.bn_stats, "CSV of BatchNorm batch vs running statistics");
  train->add_option("--bn-stats-every", tc.bn_stats_every, "steps between --bn-stats rows")
      ->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--plot", tc.plot, "PNG of the loss and accuracy curves (needs gnuplot)");
  train->add_flag("--json", tc.json, "print a one-line JSON summary as the last line");
  train->add_flag("--quiet", tc.quiet, "no progress output");
  bool distributed = false, no_sync_bn = false;
  train->add_flag("--distributed", distributed,
                  "data-parallel over the ranks mpirun started (mpirun -np K build/apps/norma train --distributed)");
  train->add_flag("--no-sync-bn", no_sync_bn, "with --distributed: BatchNorm statistics per rank, not global");

  // ---- eval
  app::EvalConfig ec;
  bool eval_json = false;
  auto* eval = app.add_subcommand("eval", "test accuracy and loss of a checkpoint");
  eval->add_option("--data", ec.data, "CIFAR-10 directory (default: as train)");
  eval->add_option("--checkpoint", ec.checkpoint, "checkpoint (Norma's, or a PyTorch-written safetensors)")
      ->required()->check(CLI::ExistingFile);
  eval->add_option("--model", ec.model, "model, when the checkpoint does not name one")->check(CLI::IsMember(models))
      ->capture_default_str();
  eval->add_option("--bn-preset", ec.bn_preset, "BatchNorm2d convention, when the checkpoint does not name one")
      ->check(CLI::IsMember(presets))->capture_default_str();
  eval->add_option("--batch-size", ec.batch_size, "images per forward")->check(CLI::PositiveNumber)->capture_default_str();
  eval->add_option("--limit", ec.limit, "the first N test images")->check(CLI::PositiveNumber);
  eval->add_option("--threads", ec.threads, "threads")->check(CLI::PositiveNumber);
  eval->add_flag("--fuse-bn", ec.fuse_bn, "fold each BatchNorm2d into the Conv2d before it");
  eval->add_flag("--json", eval_json, "print a one-line JSON result");

  // ---- bench
  app::BenchConfig bc;
  bool bench_json = false;
  auto* bench = app.add_subcommand("bench", "training and inference throughput on random data, per-layer times");
  bench->add_option("--model", bc.model, "model")->check(CLI::IsMember(models))->capture_default_str();
  bench->add_option("--bn-preset", bc.bn_preset, "BatchNorm2d convention")->check(CLI::IsMember(presets))
      ->capture_default_str();
  bench->add_option("--batch-size", bc.batch_size, "images per step")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  bench->add_option("--steps", bc.steps, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  bench->add_option("--warmup", bc.warmup, "untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  bench->add_option("--threads", bc.threads, "threads")->check(CLI::PositiveNumber);
  bench->add_flag("--json", bench_json, "print one line of JSON instead of the report");

  // ---- summary
  std::string summary_model = "cifar-small";
  auto* summary = app.add_subcommand("summary", "layer table with output shapes and parameter counts");
  summary->add_option("--model", summary_model, "model")->check(CLI::IsMember(models))->capture_default_str();

  // ---- download
  std::string dataset, download_dir = "data", archive;
  auto* download = app.add_subcommand("download", "fetch and unpack CIFAR-10 (or unpack a local archive)");
  download->add_option("dataset", dataset, "dataset")->required()->check(CLI::IsMember({"cifar10"}));
  download->add_option("--dir", download_dir, "where to unpack (gives DIR/cifar-10-batches-bin)")->capture_default_str();
  download->add_option("--archive", archive, "a local cifar-10-binary.tar.gz instead of the download")
      ->check(CLI::ExistingFile);

  // ---- demo
  auto* demo = app.add_subcommand("demo", "fit y = sin(3x) with a small MLP using the autograd");
  int steps = 2000;
  float lr = 0.1f;
  uint64_t seed = 0;
  demo->add_option("--steps", steps, "gradient steps")->check(CLI::PositiveNumber);
  demo->add_option("--lr", lr, "learning rate")->check(CLI::PositiveNumber);
  demo->add_option("--seed", seed, "random seed");

  // CLI11 answers an unknown command with "A subcommand is required"; name it.
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      fmt::print(stderr, "norma: unknown command '{}' (expected one of: {})\n", argv[1], fmt::join(names, ", "));
      return 2;
    }
  }
  CLI11_PARSE(app, argc, argv);
  try {
    if (*train) {
      tc.augment = !no_augment;
      if (distributed) {
        tc.process_group = dist::mpi_world();
        tc.sync_bn = !no_sync_bn;
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
    } else if (*eval) {
      const app::EvalResult r = app::evaluate_checkpoint(ec);
      if (eval_json)
        fmt::print("{}\n", nlohmann::json{{"test_acc", r.acc}, {"test_loss", r.loss}, {"images", r.images},
                                          {"img_per_s", r.img_per_s}}
                                .dump());
      else
        fmt::print("test loss {:.4f} acc {:.4f} on {} images ({:.0f} img/s)\n", r.loss, r.acc, r.images, r.img_per_s);
    } else if (*bench) {
      const app::BenchResult r = app::run_bench(bc);
      fmt::print("{}", bench_json ? app::bench_json(r) + "\n" : app::format_bench(r));
    } else if (*summary) {
      auto model = app::build_model(summary_model, "pytorch");
      fmt::print("{}", nn::summary(*model, {1, 3, 32, 32}));
    } else if (*download) {
      try {
        data::download_cifar10(download_dir, archive);
      } catch (const Error& e) {
        if (!archive.empty()) throw;
        fail("{}\n(from the command line: norma download cifar10 --archive cifar-10-binary.tar.gz --dir {})", e.what(),
             download_dir);
      }
      fmt::print("CIFAR-10 is in {}/cifar-10-batches-bin\n", download_dir);
    } else if (*demo) {
      float mse = run_demo(steps, lr, seed);
      fmt::print("final mse {:.6f}\n", mse);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "norma: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
