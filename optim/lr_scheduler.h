// Learning-rate schedulers, after PyTorch 1.13's torch.optim.lr_scheduler and
// giving its values step for step: they use PyTorch's recursive ("chainable")
// formulas, which update the lr the groups hold, not only the closed forms.
//
// A scheduler writes each param group's lr (and OneCycleLR its momentum or
// beta1). Building one applies epoch 0; call step() after each optimizer.step():
//
//   optim::SGD opt(model.parameters(), 0.1, 0.9);
//   optim::CosineAnnealingLR sched(opt, /*T_max=*/100);
//   for (int epoch = 0; epoch < 100; ++epoch) { train_one_epoch(opt); sched.step(); }
//
// The optimizer must outlive its schedulers. As in PyTorch, the first
// scheduler built on an optimizer records each group's initial_lr, and the
// base_lrs of every later one are those initial lrs.
#pragma once
#include <nlohmann/json_fwd.hpp>  // state_dict()'s JSON: include <nlohmann/json.hpp> to use it

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "optimizer.h"

namespace norma::optim {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch (or iteration) and writes the new lrs into the groups.
  virtual void step();
  // The lrs written by the latest step (one per param group).
  const std::vector<double>& get_last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  Optimizer& optimizer() const { return *optimizer_; }
  const std::string& name() const { return name_; }

  // {"scheduler": name, "last_epoch", "step_count", "base_lrs", "last_lr"}
  // (+ "schedulers": [...] for SequentialLR and ChainedScheduler). Hyper-
  // parameters are the constructor's; the groups' lrs are in the optimizer's state.
  virtual nlohmann::json state_dict() const;
  // Refuses a state from another kind of scheduler or for another number of groups.
  virtual void load_state_dict(const nlohmann::json& state);

 protected:
  // Sets each group's initial_lr when unset and takes base_lrs from them.
  LRScheduler(Optimizer& optimizer, std::string name);
  // PyTorch's _initial_step(): step count 0, then step() to epoch 0. Derived
  // constructors call it last.
  void initial_step();
  // The chainable form: the lrs for last_epoch_ from the groups' current ones.
  virtual std::vector<double> get_lr() = 0;
  // The closed form at last_epoch_ from base_lrs_, used when SequentialLR
  // restarts a scheduler at epoch 0 (PyTorch's step(epoch)); defaults to get_lr().
  virtual std::vector<double> closed_form_lr() { return get_lr(); }
  // PyTorch's deprecated step(epoch): jumps to `epoch` using the closed form.
  void step_to(int64_t epoch);
  void set_lrs(const std::vector<double>& lrs);
  // The current lr of every group.
  std::vector<double> group_lrs() const;

  Optimizer* optimizer_;
  std::string name_;
  std::vector<double> base_lrs_;  // one per group
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;
  std::vector<double> last_lr_;  // one per group

  friend class SequentialLR;
  friend class ChainedScheduler;
};

// lr = lr * gamma every step_size epochs.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr = lr * gamma at each milestone (a milestone given k times multiplies by gamma^k).
class MultiStepLR : public LRScheduler {
 public:
  MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;

 private:
  std::vector<int64_t> milestones_;  // sorted
  double gamma_;
};

// Multiplies the base lr by a factor going linearly from start_factor to
// end_factor over total_iters epochs (a warmup), then keeps it.
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0, int64_t total_iters = 5);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;

 private:
  double start_factor_, end_factor_;
  int64_t total_iters_;
};

// SGDR's cosine annealing without restarts (Loshchilov & Hutter, 2017):
// lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, computed
// recursively from the current lr as PyTorch does; past T_max it rises again.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0);

 protected:
  std::vector<double> get_lr() override;
  std::vector<double> closed_form_lr() override;

 private:
  int64_t T_max_;
  double eta_min_;
};

enum class Anneal { Cos, Linear };

struct OneCycleOptions {
  double pct_start = 0.3;  // fraction of the steps spent raising the lr
  Anneal anneal_strategy = Anneal::Cos;
  bool cycle_momentum = true;  // SGD momentum or Adam beta1, inversely to the lr
  double base_momentum = 0.85, max_momentum = 0.95;
  double div_factor = 25;        // initial_lr = max_lr / div_factor
  double final_div_factor = 1e4;  // min_lr = initial_lr / final_div_factor
  bool three_phase = false;       // up, back down to initial_lr, then to min_lr
};

// The 1cycle policy (Smith & Topin, 2017) over total_steps steps: lr from
// initial_lr up to max_lr, then down to min_lr; momentum (or beta1) the other
// way between max_momentum and base_momentum. Stepping past total_steps is an error.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, OneCycleOptions options = {});
  // One max_lr per param group.
  OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps, OneCycleOptions options = {});

 protected:
  std::vector<double> get_lr() override;

 private:
  struct Phase {
    double end_step;
    std::optional<double> ParamGroup::*start_lr;
    std::optional<double> ParamGroup::*end_lr;
    std::optional<double> ParamGroup::*start_momentum;
    std::optional<double> ParamGroup::*end_momentum;
  };
  double anneal(double start, double end, double pct) const;

  int64_t total_steps_;
  OneCycleOptions options_;
  std::vector<Phase> phases_;
  bool use_beta1_ = false;  // Adam's beta1 rather than SGD's momentum
};

// Runs schedulers one after another: schedulers[i] from milestones[i-1] on,
// restarted at its epoch 0 there. E.g. warmup then cosine:
//   auto warmup = std::make_shared<LinearLR>(opt, 0.1, 1.0, 5);
//   auto cosine = std::make_shared<CosineAnnealingLR>(opt, 95);
//   SequentialLR sched(opt, {warmup, cosine}, {5});
class SequentialLR : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);
  void step() override;
  nlohmann::json state_dict() const override;
  void load_state_dict(const nlohmann::json& state) override;

 protected:
  std::vector<double> get_lr() override { return group_lrs(); }

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

// Steps every scheduler at each step, so their chainable factors multiply.
class ChainedScheduler : public LRScheduler {
 public:
  explicit ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers);
  void step() override;
  nlohmann::json state_dict() const override;
  void load_state_dict(const nlohmann::json& state) override;

 protected:
  std::vector<double> get_lr() override { return group_lrs(); }

 private:
  std::vector<std::shared_ptr<LRScheduler>> schedulers_;
};

}  // namespace norma::optim
