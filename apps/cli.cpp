// The `norma` command line's parser; main.cpp runs what it fills.
#include "cli.h"

#include <algorithm>
#include <map>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <vector>

#include <norma/norma.h>

#include "models.h"

namespace norma::app {

std::unique_ptr<CLI::App> make_cli(CliOptions& opt) {
  auto app = std::make_unique<CLI::App>("norma: a minimal, fast and readable deep-learning framework");
  app->require_subcommand(1);
  const std::vector<std::string> models = nn::model_names();
  const std::vector<std::string> presets = nn::bn_presets::preset_names();
  // The presets' older names, still accepted.
  const CLI::Transformer old_preset_names(std::map<std::string, std::string>{{"brainpy", "brainpy_2_7"},
                                                                           {"brainpy-2.8", "brainpy_2_8"}});
  TrainConfig& tc = opt.train;
  EvalConfig& ec = opt.eval;
  BenchConfig& bc = opt.bench;

  // ---- train
  auto* train = app->add_subcommand("train", "train a CNN on CIFAR-10");
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
  train->add_option("--clip-grad-norm", tc.clip_grad_norm, "clip the gradients' joint L2 norm to this (0: off)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  train->add_flag("--no-augment", opt.no_augment, "no random crop and flip");
  train->add_option("--crop-padding", tc.crop_padding, "zero padding of the random crop (offsets in [-p, p])")
      ->check(CLI::Range(int64_t{0}, int64_t{32}))->capture_default_str();
  train->add_option("--tta", tc.tta, "test-time augmentation of the test evaluations: none, or flip (the mean of "
                                     "the logits of each image and its mirror)")
      ->check(CLI::IsMember({"none", "flip"}))->capture_default_str();
  train->add_option("--bn-preset", tc.bn_preset, "BatchNorm2d convention")->transform(old_preset_names)->check(CLI::IsMember(presets))
      ->capture_default_str();
  train->add_option("--seed", tc.seed, "random seed (weights, shuffling, augmentation)")->capture_default_str();
  train->add_option("--threads", tc.threads, "threads (default: all cores)")->check(CLI::PositiveNumber);
  train->add_option("--limit", tc.limit, "train on the first N training images")->check(CLI::PositiveNumber);
  train->add_option("--test-limit", tc.test_limit, "evaluate on the first N test images")->check(CLI::PositiveNumber);
  train->add_option("--checkpoint", tc.checkpoint, "checkpoint written after every epoch (atomically)");
  train->add_option("--resume", tc.resume, "continue the run saved in this checkpoint")->check(CLI::ExistingFile);
  train->add_option("--metrics", tc.metrics, "CSV of per-epoch metrics (and PATH.steps.csv, per step)");
  train->add_flag("--metrics-steps", tc.metrics_every_step, "also one --metrics row per step");
  train->add_option("--bn-stats", tc.bn_stats, "CSV of BatchNorm batch vs running statistics");
  train->add_option("--bn-stats-every", tc.bn_stats_every, "steps between --bn-stats rows")
      ->check(CLI::PositiveNumber)->capture_default_str();
  train->add_option("--plot", tc.plot, "PNG of the loss, accuracy and lr curves (needs gnuplot)");
  train->add_flag("--json", tc.json, "print a one-line JSON summary as the last line");
  train->add_flag("--detect-anomaly", tc.detect_anomaly,
                  "check every op's output and every gradient for NaN/Inf and stop at the first, naming its op (slower)");
  train->add_flag("--quiet", tc.quiet, "no progress output");
  train->add_flag("--distributed", opt.distributed,
                  "data-parallel over the ranks mpirun started (mpirun -np K build/apps/norma train --distributed)");
  train->add_flag("--no-sync-bn", opt.no_sync_bn, "with --distributed: BatchNorm statistics per rank, not global");

  // ---- eval
  auto* eval = app->add_subcommand("eval", "test accuracy and loss of a checkpoint");
  eval->add_option("--data", ec.data, "CIFAR-10 directory (default: as train)");
  eval->add_option("--checkpoint", ec.checkpoint, "checkpoint (Norma's, or a PyTorch-written safetensors)")
      ->required()->check(CLI::ExistingFile);
  eval->add_option("--model", ec.model, "model, when the checkpoint does not name one")->check(CLI::IsMember(models))
      ->capture_default_str();
  eval->add_option("--bn-preset", ec.bn_preset, "BatchNorm2d convention, when the checkpoint does not name one")
      ->transform(old_preset_names)->check(CLI::IsMember(presets))->capture_default_str();
  eval->add_option("--batch-size", ec.batch_size, "images per forward")->check(CLI::PositiveNumber)->capture_default_str();
  eval->add_option("--limit", ec.limit, "the first N test images")->check(CLI::PositiveNumber);
  eval->add_option("--threads", ec.threads, "threads")->check(CLI::PositiveNumber);
  eval->add_flag("--fuse-bn", ec.fuse_bn, "fold each BatchNorm2d into the Conv2d before it");
  eval->add_option("--tta", ec.tta, "test-time augmentation: none, or flip (the mean of the logits of each image "
                                    "and its mirror)")
      ->check(CLI::IsMember({"none", "flip"}))->capture_default_str();
  eval->add_flag("--json", opt.eval_json, "print a one-line JSON result");

  // ---- bench
  auto* bench = app->add_subcommand("bench", "training and inference throughput on random data, per-layer times");
  bench->add_option("--model", bc.model, "model")->check(CLI::IsMember(models))->capture_default_str();
  bench->add_option("--bn-preset", bc.bn_preset, "BatchNorm2d convention")->transform(old_preset_names)->check(CLI::IsMember(presets))
      ->capture_default_str();
  bench->add_option("--batch-size", bc.batch_size, "images per step")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  bench->add_option("--steps", bc.steps, "timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  bench->add_option("--warmup", bc.warmup, "untimed steps first")->check(CLI::NonNegativeNumber)->capture_default_str();
  bench->add_option("--threads", bc.threads, "threads")->check(CLI::PositiveNumber);
  bench->add_flag("--json", opt.bench_json, "print one line of JSON instead of the report");

  // ---- summary
  auto* summary = app->add_subcommand("summary", "layer table with output shapes and parameter counts");
  summary->add_option("--model", opt.summary_model, "model")->check(CLI::IsMember(models))->capture_default_str();

  // ---- download
  auto* download = app->add_subcommand("download", "fetch and unpack CIFAR-10 (or unpack a local archive)");
  download->add_option("dataset", opt.dataset, "dataset")->required()->check(CLI::IsMember({"cifar10"}));
  download->add_option("--dir", opt.download_dir, "where to unpack (gives DIR/cifar-10-batches-bin)")
      ->capture_default_str();
  download->add_option("--archive", opt.archive, "a local cifar-10-binary.tar.gz instead of the download")
      ->check(CLI::ExistingFile);

  // ---- demo
  auto* demo = app->add_subcommand("demo", "fit y = sin(3x) with a small MLP using the autograd");
  demo->add_option("--steps", opt.demo_steps, "gradient steps")->check(CLI::PositiveNumber);
  demo->add_option("--lr", opt.demo_lr, "learning rate")->check(CLI::PositiveNumber);
  demo->add_option("--seed", opt.demo_seed, "random seed");

  return app;
}

std::string unknown_command(const CLI::App& app, int argc, const char* const* argv) {
  if (argc < 2 || argv[1][0] == '-') return "";
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
  if (std::find(names.begin(), names.end(), argv[1]) != names.end()) return "";
  return fmt::format("unknown command '{}' (expected one of: {})", argv[1], fmt::join(names, ", "));
}

}  // namespace norma::app
