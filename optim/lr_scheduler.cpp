// LR schedulers: PyTorch 1.13's formulas, operation for operation (this file is
// compiled without floating-point contraction so the values match bit for bit).
#include "lr_scheduler.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <numbers>

namespace norma::optim {

using nlohmann::json;

// ---------------------------------------------------------------- base

LRScheduler::LRScheduler(Optimizer& optimizer, std::string name) : optimizer_(&optimizer), name_(std::move(name)) {
  for (ParamGroup& g : optimizer.param_groups()) {
    if (!g.initial_lr) g.initial_lr = *g.lr;
    base_lrs_.push_back(*g.initial_lr);
  }
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

void LRScheduler::step() {
  ++step_count_;
  ++last_epoch_;
  set_lrs(get_lr());
}

void LRScheduler::step_to(int64_t epoch) {
  ++step_count_;
  last_epoch_ = epoch;
  set_lrs(closed_form_lr());
}

void LRScheduler::set_lrs(const std::vector<double>& lrs) {
  auto& groups = optimizer_->param_groups();
  for (size_t i = 0; i < groups.size(); ++i) groups[i].lr = lrs[i];
  last_lr_ = group_lrs();
}

std::vector<double> LRScheduler::group_lrs() const {
  std::vector<double> lrs;
  for (const ParamGroup& g : optimizer_->param_groups()) lrs.push_back(*g.lr);
  return lrs;
}

json LRScheduler::state_dict() const {
  return {{"scheduler", name_}, {"last_epoch", last_epoch_}, {"step_count", step_count_}, {"base_lrs", base_lrs_},
          {"last_lr", last_lr_}};
}

void LRScheduler::load_state_dict(const json& state) {
  if (!state.is_object() || state.value("scheduler", "") != name_)
    fail("{}: load_state_dict: the state is from {}, not {}", name_,
         state.is_object() && state.contains("scheduler") ? state["scheduler"].dump() : "no scheduler", name_);
  const size_t n = optimizer_->param_groups().size();
  std::vector<double> base_lrs, last_lr;
  int64_t last_epoch = 0, step_count = 0;
  try {
    base_lrs = state.at("base_lrs").get<std::vector<double>>();
    last_lr = state.at("last_lr").get<std::vector<double>>();
    last_epoch = state.at("last_epoch").get<int64_t>();
    step_count = state.at("step_count").get<int64_t>();
  } catch (const json::exception& e) {
    fail("{}: load_state_dict: malformed state ({})", name_, e.what());
  }
  if (base_lrs.size() != n || last_lr.size() != n)
    fail("{}: load_state_dict: the state is for {} param groups, the optimizer has {}", name_, base_lrs.size(), n);
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  base_lrs_ = std::move(base_lrs);
  last_lr_ = std::move(last_lr);
}

// ---------------------------------------------------------------- StepLR, MultiStepLR

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer, "StepLR"), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1) fail("StepLR: step_size {} must be >= 1", step_size);
  if (!std::isfinite(gamma) || gamma < 0) fail("StepLR: gamma {} must be finite and >= 0", gamma);
  initial_step();
}

std::vector<double> StepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

std::vector<double> StepLR::closed_form_lr() {
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, double(last_epoch_ / step_size_)));
  return lrs;
}

MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(optimizer, "MultiStepLR"), milestones_(std::move(milestones)), gamma_(gamma) {
  if (!std::isfinite(gamma) || gamma < 0) fail("MultiStepLR: gamma {} must be finite and >= 0", gamma);
  std::sort(milestones_.begin(), milestones_.end());
  initial_step();
}

std::vector<double> MultiStepLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  const auto hits = std::count(milestones_.begin(), milestones_.end(), last_epoch_);
  if (hits == 0) return lrs;
  for (double& lr : lrs) lr = lr * std::pow(gamma_, double(hits));
  return lrs;
}

std::vector<double> MultiStepLR::closed_form_lr() {
  const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, double(passed)));
  return lrs;
}

// ---------------------------------------------------------------- LinearLR

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : LRScheduler(optimizer, "LinearLR"), start_factor_(start_factor), end_factor_(end_factor),
      total_iters_(total_iters) {
  if (!(start_factor > 0 && start_factor <= 1)) fail("LinearLR: start_factor {} is outside (0, 1]", start_factor);
  if (!(end_factor >= 0 && end_factor <= 1)) fail("LinearLR: end_factor {} is outside [0, 1]", end_factor);
  if (total_iters < 1) fail("LinearLR: total_iters {} must be >= 1", total_iters);
  initial_step();
}

std::vector<double> LinearLR::get_lr() {
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr = lr * start_factor_;
  } else if (last_epoch_ <= total_iters_) {
    const double slope = end_factor_ - start_factor_;
    const double ratio = 1. + slope / (double(total_iters_) * start_factor_ + double(last_epoch_ - 1) * slope);
    for (double& lr : lrs) lr = lr * ratio;
  }
  return lrs;
}

std::vector<double> LinearLR::closed_form_lr() {
  const double f = start_factor_ + (end_factor_ - start_factor_) * double(std::min(total_iters_, last_epoch_)) /
                                       double(total_iters_);
  std::vector<double> lrs;
  for (double base : base_lrs_) lrs.push_back(base * f);
  return lrs;
}

// ---------------------------------------------------------------- CosineAnnealingLR

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(optimizer, "CosineAnnealingLR"), T_max_(T_max), eta_min_(eta_min) {
  if (T_max < 1) fail("CosineAnnealingLR: T_max {} must be >= 1", T_max);
  if (!std::isfinite(eta_min)) fail("CosineAnnealingLR: eta_min {} must be finite", eta_min);
  initial_step();
}

std::vector<double> CosineAnnealingLR::get_lr() {
  constexpr double pi = std::numbers::pi;
  std::vector<double> lrs = group_lrs();
  if (last_epoch_ == 0) return lrs;
  const double T = double(T_max_);
  for (size_t i = 0; i < lrs.size(); ++i) {
    if ((last_epoch_ - 1 - T_max_) % (2 * T_max_) == 0)  // the bottom: step back up
      lrs[i] = lrs[i] + (base_lrs_[i] - eta_min_) * (1 - std::cos(pi / T)) / 2;
    else
      lrs[i] = (1 + std::cos(pi * double(last_epoch_) / T)) / (1 + std::cos(pi * double(last_epoch_ - 1) / T)) *
                   (lrs[i] - eta_min_) +
               eta_min_;
  }
  return lrs;
}

std::vector<double> CosineAnnealingLR::closed_form_lr() {
  constexpr double pi = std::numbers::pi;
  std::vector<double> lrs;
  for (double base : base_lrs_)
    lrs.push_back(eta_min_ + (base - eta_min_) * (1 + std::cos(pi * double(last_epoch_) / double(T_max_))) / 2);
  return lrs;
}

// ---------------------------------------------------------------- OneCycleLR

OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, OneCycleOptions options)
    : OneCycleLR(optimizer, std::vector<double>(optimizer.param_groups().size(), max_lr), total_steps, options) {}

OneCycleLR::OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps,
                       OneCycleOptions options)
    : LRScheduler(optimizer, "OneCycleLR"), total_steps_(total_steps), options_(options) {
  auto& groups = optimizer.param_groups();
  if (total_steps < 1) fail("OneCycleLR: total_steps {} must be >= 1", total_steps);
  if (!(options.pct_start >= 0 && options.pct_start <= 1))
    fail("OneCycleLR: pct_start {} is outside [0, 1]", options.pct_start);
  if (max_lrs.size() != groups.size())
    fail("OneCycleLR: got {} max_lrs for {} param groups", max_lrs.size(), groups.size());
  if (!(options.div_factor > 0) || !(options.final_div_factor > 0) || !std::isfinite(options.div_factor) ||
      !std::isfinite(options.final_div_factor))
    fail("OneCycleLR: div_factor {} and final_div_factor {} must be finite and > 0", options.div_factor,
         options.final_div_factor);
  for (size_t i = 0; i < max_lrs.size(); ++i)
    if (!std::isfinite(max_lrs[i]) || max_lrs[i] < 0)
      fail("OneCycleLR: max_lr {} of param group {} must be finite and >= 0", max_lrs[i], i);
  if (options.anneal_strategy != Anneal::Cos && options.anneal_strategy != Anneal::Linear)
    fail("OneCycleLR: unknown anneal_strategy {} (not an Anneal value)", int(options.anneal_strategy));
  using G = ParamGroup;
  const double T = double(total_steps), pct = options.pct_start;
  if (options.three_phase)
    phases_ = {{pct * T - 1, &G::initial_lr, &G::max_lr, &G::max_momentum, &G::base_momentum},
               {2 * pct * T - 2, &G::max_lr, &G::initial_lr, &G::base_momentum, &G::max_momentum},
               {T - 1, &G::initial_lr, &G::min_lr, &G::max_momentum, &G::max_momentum}};
  else
    phases_ = {{pct * T - 1, &G::initial_lr, &G::max_lr, &G::max_momentum, &G::base_momentum},
               {T - 1, &G::max_lr, &G::min_lr, &G::base_momentum, &G::max_momentum}};
  if (options.cycle_momentum) {
    use_beta1_ = bool(optimizer.defaults().beta1);
    if (!use_beta1_ && !optimizer.defaults().momentum)
      fail("OneCycleLR: cycle_momentum needs an optimizer with momentum or betas; {} has neither",
           optimizer.name());
    const double lo = options.base_momentum, hi = options.max_momentum;
    if (!std::isfinite(lo) || !std::isfinite(hi) || lo < 0 || hi < 0)
      fail("OneCycleLR: base_momentum {} and max_momentum {} must be finite and >= 0", lo, hi);
    if (use_beta1_ && (lo >= 1 || hi >= 1))
      fail("OneCycleLR: base_momentum {} and max_momentum {} must lie in [0, 1) to cycle {}'s beta1", lo, hi,
           optimizer.name());
  }
  base_lrs_.clear();
  for (size_t i = 0; i < groups.size(); ++i) {
    G& g = groups[i];
    g.initial_lr = max_lrs[i] / options.div_factor;
    g.max_lr = max_lrs[i];
    g.min_lr = *g.initial_lr / options.final_div_factor;
    base_lrs_.push_back(*g.initial_lr);
    if (options.cycle_momentum) {
      (use_beta1_ ? g.beta1 : g.momentum) = options.max_momentum;
      g.max_momentum = options.max_momentum;
      g.base_momentum = options.base_momentum;
    }
  }
  initial_step();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (options_.anneal_strategy == Anneal::Linear) return (end - start) * pct + start;
  const double cos_out = std::cos(std::numbers::pi * pct) + 1;
  return end + (start - end) / 2.0 * cos_out;
}

std::vector<double> OneCycleLR::get_lr() {
  if (last_epoch_ > total_steps_)
    fail("OneCycleLR: step {} is past total_steps {}", last_epoch_, total_steps_);
  std::vector<double> lrs;
  for (ParamGroup& g : optimizer_->param_groups()) {
    double start_step = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
      const Phase& ph = phases_[i];
      if (double(last_epoch_) <= ph.end_step || i + 1 == phases_.size()) {
        const double pct = (double(last_epoch_) - start_step) / (ph.end_step - start_step);
        lrs.push_back(anneal(*(g.*ph.start_lr), *(g.*ph.end_lr), pct));
        if (options_.cycle_momentum)
          (use_beta1_ ? g.beta1 : g.momentum) = anneal(*(g.*ph.start_momentum), *(g.*ph.end_momentum), pct);
        break;
      }
      start_step = ph.end_step;
    }
  }
  return lrs;
}

// ---------------------------------------------------------------- SequentialLR, ChainedScheduler

namespace {
Optimizer& first_optimizer(const std::vector<std::shared_ptr<LRScheduler>>& schedulers, const char* who) {
  if (schedulers.empty()) fail("{}: needs at least one scheduler", who);
  for (size_t i = 0; i < schedulers.size(); ++i)
    if (!schedulers[i]) fail("{}: scheduler {} is null", who, i);
  return schedulers[0]->optimizer();
}

void check_same_optimizer(const std::vector<std::shared_ptr<LRScheduler>>& schedulers, const Optimizer& opt,
                          const char* who) {
  for (size_t i = 0; i < schedulers.size(); ++i)
    if (&schedulers[i]->optimizer() != &opt)
      fail("{}: scheduler {} ({}) belongs to another optimizer", who, i, schedulers[i]->name());
}

json sub_states(const std::vector<std::shared_ptr<LRScheduler>>& schedulers) {
  json subs = json::array();
  for (const auto& s : schedulers) subs.push_back(s->state_dict());
  return subs;
}

void load_sub_states(const std::vector<std::shared_ptr<LRScheduler>>& schedulers, const json& state,
                     const std::string& who) {
  if (!state.contains("schedulers") || state["schedulers"].size() != schedulers.size())
    fail("{}: load_state_dict: the state has {} schedulers, this one has {}", who,
         state.contains("schedulers") ? state["schedulers"].size() : 0, schedulers.size());
  for (size_t i = 0; i < schedulers.size(); ++i) schedulers[i]->load_state_dict(state["schedulers"][i]);
}
}  // namespace

SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer, "SequentialLR"), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
  first_optimizer(schedulers_, "SequentialLR");
  check_same_optimizer(schedulers_, optimizer, "SequentialLR");
  if (milestones_.size() + 1 != schedulers_.size())
    fail("SequentialLR: {} schedulers need {} milestones, got {}", schedulers_.size(), schedulers_.size() - 1,
         milestones_.size());
  for (size_t i = 1; i < milestones_.size(); ++i)
    if (milestones_[i] <= milestones_[i - 1])
      fail("SequentialLR: milestones must increase, got {} after {}", milestones_[i], milestones_[i - 1]);
  // As PyTorch: back to the initial lrs, undo each scheduler's initial step,
  // and redo the first one's.
  last_epoch_ = 0;
  for (ParamGroup& g : optimizer.param_groups()) g.lr = *g.initial_lr;
  for (auto& s : schedulers_) s->last_epoch_ -= 1;
  schedulers_[0]->initial_step();
  last_lr_ = schedulers_[0]->get_last_lr();
}

void SequentialLR::step() {
  ++last_epoch_;
  const size_t idx = std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin();
  LRScheduler& s = *schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == last_epoch_)
    s.step_to(0);
  else
    s.step();
  last_lr_ = s.get_last_lr();
}

json SequentialLR::state_dict() const {
  json j = LRScheduler::state_dict();
  j["schedulers"] = sub_states(schedulers_);
  return j;
}

void SequentialLR::load_state_dict(const json& state) {
  LRScheduler::load_state_dict(state);
  load_sub_states(schedulers_, state, name_);
}

ChainedScheduler::ChainedScheduler(std::vector<std::shared_ptr<LRScheduler>> schedulers)
    : LRScheduler(first_optimizer(schedulers, "ChainedScheduler"), "ChainedScheduler"),
      schedulers_(std::move(schedulers)) {
  check_same_optimizer(schedulers_, *optimizer_, "ChainedScheduler");
  last_lr_ = group_lrs();
}

void ChainedScheduler::step() {
  for (auto& s : schedulers_) s->step();
  last_lr_ = group_lrs();
}

json ChainedScheduler::state_dict() const {
  json j = LRScheduler::state_dict();
  j["schedulers"] = sub_states(schedulers_);
  return j;
}

void ChainedScheduler::load_state_dict(const json& state) {
  LRScheduler::load_state_dict(state);
  load_sub_states(schedulers_, state, name_);
}

}  // namespace norma::optim
