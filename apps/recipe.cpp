// The command line's training recipe: TrainConfig's checks, the optimizer, the
// lr schedule and the data `norma train` makes from it, and the built-in models
// with a BatchNorm2d preset (build_model).
#include <algorithm>
#include <cmath>

#include <norma/norma.h>

#include "download.h"
#include "models.h"
#include "trainer.h"
#include "trainer_detail.h"

namespace norma::app {

std::shared_ptr<nn::Module> build_model(const std::string& model, const std::string& bn_preset,
                                        std::shared_ptr<dist::ProcessGroup> pg) {
  nn::bn_presets::preset_by_name(bn_preset, 1);  // an unknown name fails here, listing the accepted ones
  auto bn = [bn_preset, pg](int64_t c) -> nn::ModulePtr {
    nn::BatchNorm2dOptions o = nn::bn_presets::preset_by_name(bn_preset, c);
    o.layout(nn::Layout::NCHW);  // Norma's convolutions are NCHW; statistics are per channel either way
    if (pg) o.process_group(pg);
    return std::make_shared<nn::BatchNorm2d>(o);
  };
  return nn::make_model(model, bn);
}

namespace detail {

std::unique_ptr<optim::Optimizer> make_optimizer(const TrainConfig& c, nn::Module& model) {
  auto groups = optim::decay_groups(model, c.weight_decay);
  if (c.optimizer == "sgd")
    return std::make_unique<optim::SGD>(groups, c.lr, c.momentum, 0.0, c.weight_decay, c.nesterov && c.momentum > 0);
  if (c.optimizer == "adam")
    return std::make_unique<optim::Adam>(groups, c.lr, std::pair{0.9, 0.999}, 1e-8, c.weight_decay);
  if (c.optimizer == "adamw")
    return std::make_unique<optim::AdamW>(groups, c.lr, std::pair{0.9, 0.999}, 1e-8, c.weight_decay);
  fail("--optimizer: '{}' is not one of sgd, adam, adamw", c.optimizer);
}

// The per-step schedule over total_steps, with `warmup_steps` of linear warm-up
// (from 0.1 x lr); null for a constant lr without warm-up.
std::shared_ptr<optim::LRScheduler> make_schedule(const TrainConfig& c, optim::Optimizer& opt, int64_t total_steps,
                                                  int64_t warmup_steps) {
  using namespace optim;
  if (c.schedule == "onecycle") {
    OneCycleOptions o;
    if (warmup_steps > 0) o.pct_start = static_cast<double>(warmup_steps) / total_steps;
    o.cycle_momentum = c.optimizer != "sgd" || c.momentum > 0;
    return std::make_shared<OneCycleLR>(opt, c.lr, total_steps, o);
  }
  std::shared_ptr<LRScheduler> main;
  const int64_t rest = std::max<int64_t>(1, total_steps - warmup_steps);
  if (c.schedule == "cosine")
    main = std::make_shared<CosineAnnealingLR>(opt, rest);
  else if (c.schedule == "step")
    main = std::make_shared<MultiStepLR>(opt, std::vector<int64_t>{rest / 2, rest * 3 / 4}, 0.1);
  else if (c.schedule != "constant")
    fail("--schedule: '{}' is not one of onecycle, cosine, step, constant", c.schedule);
  if (warmup_steps == 0) return main;
  auto warm = std::make_shared<LinearLR>(opt, 0.1, 1.0, warmup_steps);
  if (!main) return warm;
  return std::make_shared<SequentialLR>(opt, std::vector<std::shared_ptr<LRScheduler>>{warm, main},
                                        std::vector<int64_t>{warmup_steps});
}

// torch.nn.utils.clip_grad_norm_: when the L2 norm of all the gradients
// together exceeds max_norm, scales them to max_norm.
void clip_grad_norm(nn::Module& model, double max_norm) {
  std::vector<Tensor> grads;
  double sq = 0;
  for (Tensor& p : model.parameters()) {
    if (!p.grad().defined()) continue;
    if (!p.grad().is_contiguous()) p.set_grad(p.grad().contiguous());
    grads.push_back(p.grad());
    const float* g = grads.back().data_ptr();
    for (int64_t i = 0, n = grads.back().numel(); i < n; ++i) sq += static_cast<double>(g[i]) * g[i];
  }
  const double norm = std::sqrt(sq);
  if (norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (Tensor& g : grads) {
      float* d = g.data_ptr();
      for (int64_t i = 0, n = g.numel(); i < n; ++i) d[i] *= scale;
    }
  }
}


void check_tta(const std::string& tta) {
  if (tta != "none" && tta != "flip") fail("--tta: must be 'none' or 'flip', got '{}'", tta);
}

void check_config(const TrainConfig& c) {
  if (c.epochs < 1) fail("--epochs: must be at least 1, got {}", c.epochs);
  if (c.batch_size < 2) fail("--batch-size: must be at least 2 (BatchNorm needs 2 values per channel), got {}", c.batch_size);
  if (!(c.lr > 0) || !std::isfinite(c.lr)) fail("--lr: must be a positive finite number, got {}", c.lr);
  if (!(c.momentum >= 0 && c.momentum < 1)) fail("--momentum: must be in [0, 1), got {}", c.momentum);
  if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay))
    fail("--weight-decay: must be a finite number >= 0, got {}", c.weight_decay);
  if (!(c.warmup >= 0 && c.warmup < c.epochs))
    fail("--warmup: must be in [0, epochs = {}), got {}", c.epochs, c.warmup);
  if (!(c.label_smoothing >= 0 && c.label_smoothing < 1))
    fail("--label-smoothing: must be in [0, 1), got {}", c.label_smoothing);
  if (c.limit == 0 || c.limit < -1) fail("--limit: must be a positive number of images, got {}", c.limit);
  if (c.threads < 0) fail("--threads: must be >= 1, got {}", c.threads);
  if (c.crop_padding < 0 || c.crop_padding > 32) fail("--crop-padding: must be in [0, 32], got {}", c.crop_padding);
  if (!(c.clip_grad_norm >= 0) || !std::isfinite(c.clip_grad_norm))
    fail("--clip-grad-norm: must be a finite number >= 0 (0: no clipping), got {}", c.clip_grad_norm);
  if (c.bn_stats_every < 1) fail("--bn-stats-every: must be >= 1, got {}", c.bn_stats_every);
  check_tta(c.tta);
}

// `given` when there is one, else the split loaded from c.data (its first c.limit or c.test_limit images).
std::shared_ptr<const data::CifarDataset> load_split(const TrainConfig& c, data::Split split,
                                                     std::shared_ptr<const data::CifarDataset> given) {
  if (given) return given;
  const std::string dir = data::find_cifar10_dir(c.data);
  return std::make_shared<const data::CifarDataset>(data::CifarDataset::load(
      dir, split, data::CifarKind::cifar10, split == data::Split::train ? c.limit : c.test_limit));
}

}  // namespace detail

}  // namespace norma::app
