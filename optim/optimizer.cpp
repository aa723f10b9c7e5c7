// Optimizer base: param groups, lazily allocated per-parameter state, state_dict.
#include "optimizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "../core/autograd.h"

namespace norma::optim {

using nlohmann::json;

namespace {

// Every option a group may carry, by its name in state_dict()["param_groups"].
// Scheduler fields are allowed in every optimizer's groups.
struct DoubleOption {
  const char* name;
  std::optional<double> ParamGroup::*field;
  bool scheduler;
};
struct BoolOption {
  const char* name;
  std::optional<bool> ParamGroup::*field;
};
constexpr DoubleOption kDoubleOptions[] = {
    {"lr", &ParamGroup::lr, false},
    {"weight_decay", &ParamGroup::weight_decay, false},
    {"momentum", &ParamGroup::momentum, false},
    {"dampening", &ParamGroup::dampening, false},
    {"beta1", &ParamGroup::beta1, false},
    {"beta2", &ParamGroup::beta2, false},
    {"eps", &ParamGroup::eps, false},
    {"initial_lr", &ParamGroup::initial_lr, true},
    {"max_lr", &ParamGroup::max_lr, true},
    {"min_lr", &ParamGroup::min_lr, true},
    {"max_momentum", &ParamGroup::max_momentum, true},
    {"base_momentum", &ParamGroup::base_momentum, true},
};
constexpr BoolOption kBoolOptions[] = {
    {"nesterov", &ParamGroup::nesterov},
    {"amsgrad", &ParamGroup::amsgrad},
};

// Sets g's options from a state's group `jg`: every option `defaults` has
// must be there, and no other (scheduler fields are optional everywhere).
void read_options(ParamGroup& g, const json& jg, const ParamGroup& defaults, const std::string& where,
                  const std::string& optimizer) {
  std::set<std::string> known = {"params"};
  for (const auto& o : kDoubleOptions) {
    known.insert(o.name);
    const bool has = bool(defaults.*o.field), given = jg.contains(o.name);
    if (given && !jg[o.name].is_number()) fail("{}: {} must be a number, got {}", where, o.name, jg[o.name].dump());
    if (given && !has && !o.scheduler) fail("{} of the state sets {}, which {} does not have", where, o.name, optimizer);
    if (!given && has) fail("{} of the state lacks {}", where, o.name);
    g.*o.field = given ? std::optional<double>(jg[o.name].get<double>()) : std::nullopt;
  }
  for (const auto& o : kBoolOptions) {
    known.insert(o.name);
    const bool has = bool(defaults.*o.field), given = jg.contains(o.name);
    if (given && !jg[o.name].is_boolean())
      fail("{}: {} must be true or false, got {}", where, o.name, jg[o.name].dump());
    if (given && !has) fail("{} of the state sets {}, which {} does not have", where, o.name, optimizer);
    if (!given && has) fail("{} of the state lacks {}", where, o.name);
    g.*o.field = given ? std::optional<bool>(jg[o.name].get<bool>()) : std::nullopt;
  }
  for (const auto& [key, value] : jg.items())
    if (!known.count(key)) fail("{} of the state has an unknown option {}", where, key);
}

}  // namespace

json options_to_json(const ParamGroup& g) {
  json j = json::object();
  for (const auto& o : kDoubleOptions)
    if (g.*o.field) j[o.name] = *(g.*o.field);
  for (const auto& o : kBoolOptions)
    if (g.*o.field) j[o.name] = *(g.*o.field);
  return j;
}

std::vector<ParamGroup> single_group(std::vector<Tensor> params) {
  std::vector<ParamGroup> groups(1);
  groups[0].params = std::move(params);
  return groups;
}

std::vector<ParamGroup> decay_groups(const std::vector<Tensor>& params, double weight_decay) {
  std::vector<ParamGroup> groups(2);
  groups[0].weight_decay = weight_decay;
  groups[1].weight_decay = 0.0;
  for (const Tensor& p : params) groups[p.dim() >= 2 ? 0 : 1].params.push_back(p);
  return groups;
}

double ParamGroup::get_lr() const {
  if (!lr) fail("ParamGroup::get_lr: this group has no lr yet; an optimizer built from it completes it from its defaults");
  return *lr;
}

Optimizer::Optimizer(std::string name, std::vector<ParamGroup> groups, ParamGroup defaults)
    : name_(std::move(name)), groups_(std::move(groups)), defaults_(std::move(defaults)) {
  defaults_.params.clear();
  std::set<TensorImpl*> seen;
  size_t index = 0;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    for (const Tensor& p : g.params) {
      if (!p.defined()) fail("{}: parameter {} (param group {}) is an undefined tensor", name_, index, gi);
      if (!p.is_leaf())
        fail("{}: parameter {} of shape {} is not a leaf tensor (it was computed by {}); optimize the "
             "tensors you created",
             name_, index, p.shape(), p.grad_fn()->name);
      if (!p.is_contiguous())
        fail("{}: parameter {} of shape {} (strides {}) is not contiguous", name_, index, p.shape(), p.strides());
      if (!seen.insert(p.impl()).second)
        fail("{}: parameter {} of shape {} appears more than once in the param groups", name_, index, p.shape());
      ++index;
    }
    for (const auto& o : kDoubleOptions) {
      if (g.*o.field && !(defaults_.*o.field) && !o.scheduler)
        fail("{}: param group {} sets {}, which {} does not have", name_, gi, o.name, name_);
      if (!(g.*o.field)) g.*o.field = defaults_.*o.field;
    }
    for (const auto& o : kBoolOptions) {
      if (g.*o.field && !(defaults_.*o.field))
        fail("{}: param group {} sets {}, which {} does not have", name_, gi, o.name, name_);
      if (!(g.*o.field)) g.*o.field = defaults_.*o.field;
    }
  }
  if (index == 0) fail("{}: got an empty parameter list", name_);
  state_.resize(index);
}

void Optimizer::validate_groups() const {
  validate(defaults_, "");
  for (size_t gi = 0; gi < groups_.size(); ++gi) validate(groups_[gi], fmt::format("param group {}: ", gi));
}

void Optimizer::check_nonnegative(const std::string& where, const char* what, double value) const {
  if (!std::isfinite(value) || value < 0) fail("{}: {}{} {} must be finite and >= 0", name_, where, what, value);
}

void Optimizer::check_beta(const std::string& where, const char* what, double value) const {
  if (!(value >= 0 && value < 1)) fail("{}: {}{} {} is outside [0, 1)", name_, where, what, value);
}

void Optimizer::step() {
  NoGradGuard no_grad;
  size_t i = 0;
  for (const ParamGroup& g : groups_) {
    const size_t n_buffers = state_names(g).size();
    for (const Tensor& p : g.params) {
      ParamState& s = state_[i++];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      if (!grad.is_contiguous()) grad = grad.contiguous();
      const bool fresh = s.buffers.size() < n_buffers;
      while (s.buffers.size() < n_buffers) s.buffers.push_back(zeros(p.shape()));
      ++s.step;
      update(g, p, grad, s, fresh);
      ++p.storage()->version;  // an in-place write, as far as autograd is concerned
    }
  }
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

StateDict Optimizer::state_dict() const {
  StateDict sd;
  json groups = json::array(), steps = json::array();
  size_t i = 0;
  for (const ParamGroup& g : groups_) {
    json jg = options_to_json(g), indices = json::array();
    const auto names = state_names(g);
    for (size_t k = 0; k < g.params.size(); ++k, ++i) {
      indices.push_back(i);
      steps.push_back(state_[i].step);
      for (size_t b = 0; b < state_[i].buffers.size() && b < names.size(); ++b)
        sd.tensors.emplace_back(fmt::format("state.{}.{}", i, names[b]), state_[i].buffers[b]);
    }
    jg["params"] = indices;
    groups.push_back(jg);
  }
  sd.meta = {{"optimizer", name_}, {"param_groups", groups}, {"steps", steps}};
  return sd;
}

void Optimizer::load_state_dict(const StateDict& sd) {
  const json& meta = sd.meta;
  const std::string who = name_ + ": load_state_dict";
  if (!meta.is_object() || !meta.contains("optimizer") || !meta.contains("param_groups") || !meta.contains("steps"))
    fail("{}: meta must be an object with optimizer, param_groups and steps", who);
  if (meta["optimizer"] != name_) fail("{}: the state is from {}, not {}", who, meta["optimizer"].dump(), name_);
  const json& jgroups = meta["param_groups"];
  if (!jgroups.is_array() || jgroups.size() != groups_.size())
    fail("{}: the state has {} param groups, this optimizer has {}", who, jgroups.is_array() ? jgroups.size() : 0,
         groups_.size());
  const json& jsteps = meta["steps"];
  if (!jsteps.is_array() || jsteps.size() != num_params())
    fail("{}: the state has steps for {} parameters, this optimizer has {}", who, jsteps.is_array() ? jsteps.size() : 0,
         num_params());

  // Options: every option this optimizer has must be given; no others.
  std::vector<ParamGroup> groups = groups_;
  std::vector<size_t> group_of;  // global parameter index -> group
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const json& jg = jgroups[gi];
    ParamGroup& g = groups[gi];
    if (!jg.is_object()) fail("{}: param group {} of the state is not an object: {}", who, gi, jg.dump());
    const size_t n = jg.contains("params") && jg["params"].is_array() ? jg["params"].size() : 0;
    if (n != g.params.size())
      fail("{}: param group {} of the state has {} parameters, this optimizer's has {}", who, gi, n, g.params.size());
    for (size_t k = 0; k < n; ++k) {
      if (jg["params"][k] != group_of.size())
        fail("{}: param group {} lists parameter {} where {} was expected", who, gi, jg["params"][k].dump(),
             group_of.size());
      group_of.push_back(gi);
    }
    read_options(g, jg, defaults_, fmt::format("{}: param group {}", who, gi), name_);
    validate(g, fmt::format("param group {}: ", gi));
  }

  std::vector<int64_t> steps(num_params());
  for (size_t i = 0; i < num_params(); ++i) {
    if (!jsteps[i].is_number_integer() || jsteps[i].get<int64_t>() < 0)
      fail("{}: step count {} of parameter {} is not a non-negative integer", who, jsteps[i].dump(), i);
    steps[i] = jsteps[i].get<int64_t>();
  }

  // Tensors: "state.<i>.<buffer>", each of parameter i's shape; a parameter
  // that has stepped has every buffer of its group, one that has not has none.
  std::vector<std::string> unexpected, mismatched, missing;
  std::map<std::pair<size_t, std::string>, Tensor> given;
  for (const auto& [key, t] : sd.tensors) {
    size_t i = 0, dot = std::string::npos;
    const bool ok = key.rfind("state.", 0) == 0 && (dot = key.find('.', 6)) != std::string::npos && dot > 6 &&
                    dot < 6 + 10 && key.find_first_not_of("0123456789", 6) == dot;
    if (ok) i = std::stoul(key.substr(6, dot - 6));
    if (!ok || i >= num_params()) {
      unexpected.push_back(key);
      continue;
    }
    const std::string buf = key.substr(dot + 1);
    const auto names = state_names(groups[group_of[i]]);
    if (std::find(names.begin(), names.end(), buf) == names.end() || steps[i] == 0) {
      unexpected.push_back(steps[i] == 0 ? key + " (parameter " + std::to_string(i) + " has not stepped)" : key);
      continue;
    }
    given[{i, buf}] = t;
  }
  std::vector<const Tensor*> params;
  for (const ParamGroup& g : groups)
    for (const Tensor& p : g.params) params.push_back(&p);
  for (auto& [k, t] : given)
    if (!t.defined() || t.shape() != params[k.first]->shape())
      mismatched.push_back(fmt::format("state.{}.{}: the state has {}, the parameter has {}", k.first, k.second,
                                       t.defined() ? shape_str(t.shape()) : "undefined", params[k.first]->shape()));
  for (size_t i = 0; i < num_params(); ++i)
    if (steps[i] > 0)
      for (const auto& b : state_names(groups[group_of[i]]))
        if (!given.count({i, b})) missing.push_back(fmt::format("state.{}.{}", i, b));
  if (!unexpected.empty() || !mismatched.empty() || !missing.empty()) {
    std::string msg = fmt::format("{}: cannot load the state:", who);
    for (auto& m : missing) msg += "\n  missing tensor: " + m;
    for (auto& u : unexpected) msg += "\n  unexpected tensor: " + u;
    for (auto& s : mismatched) msg += "\n  size mismatch for " + s;
    fail("{}", msg);
  }

  // All checked: apply. Buffers of the right shape are overwritten in place.
  NoGradGuard no_grad;
  groups_ = std::move(groups);
  for (size_t i = 0; i < num_params(); ++i) {
    ParamState& s = state_[i];
    const auto names = state_names(groups_[group_of[i]]);
    s.step = steps[i];
    std::vector<Tensor> buffers;
    for (size_t b = 0; b < names.size() && steps[i] > 0; ++b) {
      const Tensor& src = given.at({i, names[b]});
      const bool reuse = b < s.buffers.size() && s.buffers[b].shape() == src.shape();
      buffers.push_back(reuse ? s.buffers[b] : empty(src.shape()));
      buffers.back().copy_(src);
    }
    s.buffers = std::move(buffers);
  }
}

}  // namespace norma::optim
