// Optimizer: the base of SGD, Adam and AdamW, after PyTorch 1.13's torch.optim
// and libtorch's API. Parameters come in groups, each with its own
// hyper-parameters; per-parameter state (momentum buffers, Adam moments) lives
// beside the parameters, is allocated at a parameter's first step and then
// updated in place by kernels on raw float pointers, so steps allocate nothing.
//
//   optim::SGD opt(model.parameters(), /*lr=*/0.1, /*momentum=*/0.9);
//   // or, without weight decay on biases and BatchNorm weights:
//   optim::SGD opt(optim::decay_groups(model.parameters(), 5e-4), 0.1, 0.9);
//   for (...) { opt.zero_grad(); loss(model(x), y).backward(); opt.step(); }
#pragma once
#include <nlohmann/json_fwd.hpp>  // the JSON parts: include <nlohmann/json.hpp> to use them

#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../core/tensor.h"

namespace norma::optim {

// One parameter group: PyTorch's param_groups[i] dict. Options left unset take
// the optimizer's defaults when the optimizer is built; afterwards every option
// that optimizer has is set, and schedulers change them (lr, momentum, beta1).
// Setting an option the optimizer does not have (beta1 for SGD) is an error.
//
//   optim::Adam opt({{.params = backbone}, {.params = head, .lr = 1e-2}}, /*lr=*/1e-3);
struct ParamGroup {
  std::vector<Tensor> params;
  std::optional<double> lr = {}, weight_decay = {};
  std::optional<double> momentum = {}, dampening = {};  // SGD
  std::optional<bool> nesterov = {};                    // SGD
  std::optional<double> beta1 = {}, beta2 = {}, eps = {};  // Adam, AdamW
  std::optional<bool> amsgrad = {};                     // Adam, AdamW
  // Written by LR schedulers, as PyTorch stores them in the group.
  std::optional<double> initial_lr = {}, max_lr = {}, min_lr = {}, max_momentum = {}, base_momentum = {};
  // The lr without optional's ceremony, as libtorch's get_lr()/set_lr(): every
  // group of an optimizer has one (the optimizer completes it from its defaults).
  double get_lr() const;
  void set_lr(double value) { lr = value; }
};

// One group holding `params`, every option left to the optimizer's defaults.
std::vector<ParamGroup> single_group(std::vector<Tensor> params);

// Two groups: group 0 holds the parameters of 2 or more dims (conv and linear
// weights) with `weight_decay`; group 1 the 1-D ones (biases, BatchNorm
// weights) with weight decay 0. Both groups are always present (possibly
// empty), so their indices are stable.
std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& params, double weight_decay);
// The same for anything with parameters() (an nn::Module): decay_groups(model, 5e-4).
template <class Model>
  requires requires(const Model& m) { { m.parameters() } -> std::convertible_to<std::vector<Tensor>>; }
std::vector<ParamGroup> decay_groups(const Model& model, double weight_decay) {
  return decay_groups(model.parameters(), weight_decay);
}

// Per-parameter state: the step count (from 1 after the first step) and the
// buffers named by the optimizer's state_names(), each of the parameter's shape.
struct ParamState {
  int64_t step = 0;
  std::vector<Tensor> buffers;  // each (shape of the parameter)
};

// What state_dict() returns. `tensors` are named "state.<i>.<buffer>" where i
// is the parameter's global index (groups in order, params in order within
// each group) and <buffer> is momentum_buffer, exp_avg, exp_avg_sq or
// max_exp_avg_sq; they share storage with the live state (clone() to keep a
// snapshot). `meta` is {"optimizer": name, "param_groups": [{options...,
// "params": [global indices]}], "steps": [step count per parameter]}. A
// template only so that norma.h needs no <nlohmann/json.hpp> (docs/architecture.md).
template <class Json = nlohmann::json>
struct BasicStateDict {
  NamedTensors tensors;
  Json meta;
};
using StateDict = BasicStateDict<>;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter whose grad is defined (the others are
  // skipped, as in PyTorch, and their step counts stay put). Runs under NoGradGuard.
  void step();
  // Drops every gradient (PyTorch's zero_grad(set_to_none=True)).
  void zero_grad();

  std::vector<ParamGroup>& param_groups() { return groups_; }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  // The defaults the groups were completed with; the options set here are the
  // options this optimizer has.
  const ParamGroup& defaults() const { return defaults_; }
  const std::string& name() const { return name_; }
  // State of the parameter with global index i.
  const ParamState& state(size_t i) const { return state_.at(i); }

  StateDict state_dict() const;
  // Restores the state and the groups' options. Refuses, naming what differs, a
  // state from another optimizer, another number of groups or of parameters per
  // group, missing, unknown or wrongly shaped tensors, and invalid options.
  // Nothing is changed unless everything checks out.
  void load_state_dict(const StateDict& sd);

 protected:
  // Checks the parameters (defined, leaf, contiguous, none twice, at least
  // one) and the groups' options (only those `defaults` sets), then completes
  // the groups from `defaults`. Derived constructors call validate_groups().
  Optimizer(std::string name, std::vector<ParamGroup> groups, ParamGroup defaults);

  // The buffers a parameter of group g has, in order, by name.
  virtual std::vector<std::string> state_names(const ParamGroup& g) const = 0;
  // Applies one update to param (in place) from grad. `fresh` is true when
  // s.buffers were just allocated (zeros) for this step; s.step is already incremented.
  virtual void update(const ParamGroup& g, const Tensor& param, const Tensor& grad, ParamState& s,
                      bool fresh) = 0;
  // Throws norma::Error on a bad hyper-parameter; `where` is "" or "param group 2: ".
  virtual void validate(const ParamGroup& g, const std::string& where) const = 0;
  // Validates the defaults, then every group.
  void validate_groups() const;
  // Helpers for validate(): "<name>: <where><what> <value> must be finite and >= 0".
  void check_nonnegative(const std::string& where, const char* what, double value) const;
  void check_beta(const std::string& where, const char* what, double value) const;

 private:
  size_t num_params() const { return state_.size(); }

  std::string name_;
  std::vector<ParamGroup> groups_;
  ParamGroup defaults_;
  std::vector<ParamState> state_;  // by global parameter index
};

// Options of a group as JSON ({"lr": 0.1, "momentum": 0.9, ...}; unset ones omitted).
nlohmann::json options_to_json(const ParamGroup& g);

}  // namespace norma::optim
