// The training loop behind `norma train` and `norma eval`, for any model:
//
//   MyNet model;                                  // any class deriving nn::Module
//   app::TrainConfig config;                      // the CLI's recipe, its defaults
//   config.epochs = 5, config.checkpoint = "run.safetensors";
//   app::TrainResult r = app::train(model, config);
//
// or, for a model of the registry (nn::make_model, nn::register_model) by name,
// app::train(config) with config.model set, which is what `norma train` runs.
// TrainParts swaps in an optimizer, a schedule or datasets of the program's
// own; each part left empty is made from the config as the CLI makes it. One
// epoch = one pass over the training set; the schedule steps once per batch; a
// checkpoint is written after every epoch (and on SIGINT/SIGTERM after the
// current step) so config.resume continues exactly where it stopped, bit for bit.
//
// A run stops with norma::Error, and the checkpoint file keeps the last good
// state, when the loss becomes NaN/Inf (the error names the step, and with
// detect_anomaly the first op that produced a non-finite value), when the
// weights are not finite at the end of an epoch (they are not saved), and when
// a checkpoint cannot be written (a full disk: the write's error, after which
// the file still holds the previous checkpoint). Before training, each output
// path is checked for writability and room for the checkpoints is reserved once
// (posix_fallocate), so a full disk or a file size limit is found up front.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include <norma/layers/module.h>

namespace norma::dist {
class ProcessGroup;
}
namespace norma::data {
class CifarDataset;
}
namespace norma::optim {
class Optimizer;
class LRScheduler;
}

namespace norma::app {

struct TrainConfig {
  std::string data;                 // CIFAR-10 directory ("" = data::find_cifar10_dir's search)
  std::string model = "cifar-small";  // the registered model train(config) builds (nn::model_names())
  std::string bn_preset = "pytorch";
  int64_t epochs = 15;
  int64_t batch_size = 128;
  double lr = 0.2;                  // the peak lr for onecycle
  std::string optimizer = "sgd";    // sgd | adam | adamw
  double momentum = 0.9;
  bool nesterov = true;
  double weight_decay = 5e-4;       // on conv/linear weights only (not BN, not biases)
  std::string schedule = "onecycle";  // onecycle | cosine | step | constant
  double warmup = 0;                // epochs of linear warm-up (onecycle: its rising phase)
  double label_smoothing = 0.1;
  double clip_grad_norm = 1;        // gradients scaled down to this joint L2 norm when above it (0: off);
                                    // without it short runs diverge in their first steps (docs/training.md)
  bool augment = true;              // random crop + horizontal flip
  int64_t crop_padding = 2;         // the random crop's zero padding (offsets in [-p, p])
  std::string tta = "flip";         // test-time augmentation of the test evaluations: none | flip
  uint64_t seed = 0;
  int threads = 0;                  // 0 = leave as is
  int64_t limit = -1;               // train on the first N training images
  int64_t test_limit = -1;          // evaluate on the first N test images
  std::string checkpoint;           // written after each epoch, atomically
  std::string resume;
  std::string metrics;              // CSV, one row per epoch (and per step with metrics_every_step); beside it
                                    // a .steps.csv, one row per step with moving averages (docs/training.md)
  bool metrics_every_step = false;
  std::string bn_stats;             // BatchNorm diagnostics CSV
  int64_t bn_stats_every = 50;      // steps between BatchNorm diagnostics rows
  std::string plot;                 // PNG of the loss, accuracy and lr, per step and per epoch (gnuplot)
  bool json = false;                // one-line JSON summary as the last line of stdout
  bool detect_anomaly = false;      // autograd::DetectAnomalyGuard for the run: a NaN/Inf stops it naming the op
  bool quiet = false;               // no progress output
  std::shared_ptr<dist::ProcessGroup> process_group;  // data-parallel training; null = one process
  bool sync_bn = true;              // with a process group: BatchNorm statistics over the global batch
  // Called after every training step (global step from 1, the step's loss);
  // for logging or custom stopping rules. Raising SIGINT here stops the run
  // exactly as Ctrl-C does.
  std::function<void(int64_t step, double loss)> on_step;
};

// Makes a run's lr schedule, once, for the run's optimizer and its total number
// of steps (epochs x steps per epoch); the trainer steps it after every
// optimizer step and saves its state in checkpoints. Null keeps the lr constant.
//   parts.lr_scheduler = [](optim::Optimizer& opt, int64_t total_steps) {
//     return std::make_shared<optim::CosineAnnealingLR>(opt, total_steps);
//   };
using SchedulerFactory =
    std::function<std::shared_ptr<optim::LRScheduler>(optim::Optimizer& optimizer, int64_t total_steps)>;

// What train(model, config, parts) takes from the program instead of making it
// from the config; each part left empty is made as `norma train` makes it.
struct TrainParts {
  // Over the model's parameters. Null: config.optimizer with config.lr,
  // momentum, nesterov and weight_decay (on conv/linear weights only).
  std::shared_ptr<optim::Optimizer> optimizer;
  SchedulerFactory lr_scheduler;  // null: config.schedule with config.warmup
  // Null: loaded from config.data (the first config.limit / test_limit images);
  // given ones are used whole, and a resumed run must be given the same ones.
  std::shared_ptr<const data::CifarDataset> train_dataset, test_dataset;
  // The name checkpoints record (what `norma eval` builds by make_model); ""
  // records model.name(), the class's name.
  std::string model_name;
};

struct TrainResult {
  int64_t epochs = 0;               // epochs completed
  int64_t steps = 0;
  double train_loss = 0, train_acc = 0;
  double test_loss = 0, test_acc = 0;
  double train_img_per_s = 0;
  double wall_s = 0;
  double peak_rss_mb = 0;
  bool interrupted = false;         // stopped by SIGINT/SIGTERM after writing a checkpoint
};

// The accuracy and mean loss of `model` (eval mode, no grad) on a CIFAR-10 split.
struct EvalResult {
  double loss = 0, acc = 0;
  int64_t images = 0;
  double img_per_s = 0;
};

// Builds a model by name ("cifar-small", ...) with BatchNorm2d layers from the
// named preset (see nn::bn_presets::preset_names()), laid out NCHW.
std::shared_ptr<nn::Module> build_model(const std::string& model, const std::string& bn_preset,
                                        std::shared_ptr<dist::ProcessGroup> pg = nullptr);

// Trains `model` (kept in place: its weights are the result) with `config`'s
// recipe and outputs: progress, a checkpoint after each epoch, exact resume,
// SIGINT/SIGTERM, the metrics CSV, the plot, BatchNorm diagnostics, flip TTA,
// the test evaluation after each epoch, and with config.process_group
// data-parallel training (the model's weights are broadcast from rank 0 and
// gradients all-reduced every step; its BatchNorm layers sync statistics only
// if built with that process group). config.model is not used; manual_seed
// before building the model makes its initial weights reproducible.
TrainResult train(nn::Module& model, const TrainConfig& config, const TrainParts& parts = {});

// Builds config.model from the registry (after manual_seed(config.seed), with
// config.bn_preset and, with sync_bn, the process group) and trains it as above.
TrainResult train(const TrainConfig& config);

// Accuracy and mean cross-entropy of `model` on `ds` (eval mode, no grad, no
// augmentation); the model's training flag is restored. With a process group
// each rank evaluates its share and every rank gets the totals. `flip_tta`
// scores the mean of the logits of each image and of its mirror image.
EvalResult evaluate(nn::Module& model, const data::CifarDataset& ds, int64_t batch_size,
                    dist::ProcessGroup* pg = nullptr, bool flip_tta = false);

struct EvalConfig {
  std::string data, checkpoint;
  std::string model = "cifar-small", bn_preset = "pytorch";  // used when the checkpoint does not say
  int64_t batch_size = 500;
  int64_t limit = -1;
  bool fuse_bn = false;
  std::string tta = "flip";         // none | flip (the mean of the logits of each image and its mirror)
  int threads = 0;
};
EvalResult evaluate_checkpoint(const EvalConfig& config);

// Peak resident set size of this process so far, in MB.
double peak_rss_mb();

// Set by SIGINT/SIGTERM while train() runs; the loop stops after the current step.
int interrupt_signal();

}  // namespace norma::app
