// The training loop behind `norma train` and `norma eval`, usable from C++ too:
// fill a TrainConfig, call train(). One epoch = one pass over the (limited)
// training set; the schedule steps once per batch; a checkpoint is written after
// every epoch (and on SIGINT/SIGTERM after the current step) so --resume
// continues exactly where it stopped.
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

namespace norma::app {

struct TrainConfig {
  std::string data;                 // CIFAR-10 directory ("" = data::find_cifar10_dir's search)
  std::string model = "cifar-small";
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
