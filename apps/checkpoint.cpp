// Training checkpoints: save everything, validate everything, then load.
#include "checkpoint.h"

#include <nlohmann/json.hpp>

#include <map>

#include "../core/safetensors.h"

namespace norma::nn {

using nlohmann::json;

namespace {

const std::string kOptimizerPrefix = "optimizer/";

// The model's name for each of the optimizer's parameters (null when the
// parameter is not the model's), by the optimizer's global index.
json optimizer_param_names(const Module& model, const optim::Optimizer& optimizer) {
  std::map<const TensorImpl*, std::string> names;
  for (const auto& [name, p] : model.named_parameters()) names[p.impl()] = name;
  json out = json::array();
  for (const optim::ParamGroup& g : optimizer.param_groups())
    for (const Tensor& p : g.params) {
      auto it = names.find(p.impl());
      out.push_back(it == names.end() ? json(nullptr) : json(it->second));
    }
  return out;
}

void check_scheduler(const char* who, const std::string& path, const optim::Optimizer* optimizer,
                     const optim::LRScheduler* scheduler) {
  if (scheduler && !optimizer)
    fail("{}: '{}': the scheduler ({}) needs its optimizer, which was not given", who, path, scheduler->name());
  if (scheduler && &scheduler->optimizer() != optimizer)
    fail("{}: '{}': the scheduler ({}) belongs to another optimizer than the one given", who, path,
         scheduler->name());
}

// A field of the "norma" metadata that must be an integer.
int64_t get_int(const json& meta, const char* key, const std::string& where) {
  if (!meta.contains(key) || !meta[key].is_number_integer())
    fail("{}: the \"norma\" metadata's {} must be an integer, got {}", where, key,
         meta.contains(key) ? meta[key].dump() : "nothing");
  return meta[key].get<int64_t>();
}

}  // namespace

void save_checkpoint(const std::string& path, const Module& model, const optim::Optimizer* optimizer,
                     const optim::LRScheduler* scheduler, const TrainingState& state) {
  check_scheduler("save_checkpoint", path, optimizer, scheduler);
  NamedTensors tensors = model.state_dict();
  const GeneratorState rng = get_rng_state();
  json meta = {{"format", kCheckpointFormat},
               {"epoch", state.epoch},
               {"step", state.step},
               {"extra", state.extra},
               {"rng", {{"seed", rng.seed}, {"draws", rng.draws}}},
               {"optimizer", nullptr},
               {"scheduler", nullptr}};
  if (optimizer) {
    optim::StateDict sd = optimizer->state_dict();
    for (auto& [name, t] : sd.tensors) tensors.emplace_back(kOptimizerPrefix + name, t);
    meta["optimizer"] = std::move(sd.meta);
    meta["optimizer_params"] = optimizer_param_names(model, *optimizer);
  }
  if (scheduler) meta["scheduler"] = scheduler->state_dict();
  std::string text;
  try {
    text = meta.dump();
  } catch (const json::exception& e) {
    fail("save_checkpoint: '{}': the training state cannot be written as JSON ({})", path, e.what());
  }
  save_safetensors(path, tensors, {{"format", "pt"}, {"norma", text}});
}

TrainingState load_checkpoint(const std::string& path, Module& model, optim::Optimizer* optimizer,
                              optim::LRScheduler* scheduler, bool strict) {
  check_scheduler("load_checkpoint", path, optimizer, scheduler);
  const std::string where = fmt::format("load_checkpoint: '{}'", path);
  SafetensorsFile file = load_safetensors(path);
  NamedTensors model_state, optimizer_tensors;
  for (auto& [name, t] : file.tensors) {
    if (name.starts_with(kOptimizerPrefix))
      optimizer_tensors.emplace_back(name.substr(kOptimizerPrefix.size()), std::move(t));
    else
      model_state.emplace_back(std::move(name), std::move(t));
  }

  // A weights-only file: the model, nothing else.
  auto found = file.metadata.find("norma");
  if (found == file.metadata.end()) {
    if (optimizer || scheduler)
      fail("{}: has no \"norma\" metadata (it holds weights only), so there is no {} state to load; pass null "
           "for the optimizer and scheduler to load just the weights",
           where, optimizer ? "optimizer" : "scheduler");
    try {
      model.load_state_dict(model_state, strict);
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
    return {};
  }

  // The metadata, checked whole before anything is touched.
  json meta;
  try {
    meta = json::parse(found->second);
  } catch (const json::exception& e) {
    fail("{}: the \"norma\" metadata is not valid JSON ({})", where, e.what());
  }
  if (!meta.is_object()) fail("{}: the \"norma\" metadata must be a JSON object, got {}", where, meta.type_name());
  if (!meta.contains("format") || meta["format"] != kCheckpointFormat)
    fail("{}: checkpoint format {} is not supported (this Norma reads format {})", where,
         meta.contains("format") ? meta["format"].dump() : "missing", kCheckpointFormat);
  TrainingState state;
  state.epoch = get_int(meta, "epoch", where);
  state.step = get_int(meta, "step", where);
  state.extra = meta.value("extra", json());
  const json rng = meta.value("rng", json());
  if (!rng.is_object() || !rng.contains("seed") || !rng["seed"].is_number_unsigned() || !rng.contains("draws") ||
      !rng["draws"].is_number_unsigned())
    fail("{}: the \"norma\" metadata's rng must be {{\"seed\": n, \"draws\": n}} with n >= 0, got {}", where,
         rng.dump());
  const GeneratorState generator{rng["seed"].get<uint64_t>(), rng["draws"].get<uint64_t>()};
  if (optimizer) {
    if (!meta.contains("optimizer") || !meta["optimizer"].is_object())
      fail("{}: holds no optimizer state (it was saved without an optimizer)", where);
    // Names are compared for the same kind of optimizer; another kind is
    // Optimizer::load_state_dict's error.
    const bool same_kind = meta["optimizer"].value("optimizer", "") == optimizer->name();
    const json saved = same_kind ? meta.value("optimizer_params", json::array()) : json::array();
    const json mine = optimizer_param_names(model, *optimizer);
    std::string renamed;
    for (size_t i = 0; saved.is_array() && saved.size() == mine.size() && i < mine.size(); ++i)
      if (saved[i].is_string() && mine[i].is_string() && saved[i] != mine[i])
        renamed += fmt::format("\n  optimizer parameter {} is {} in the file but {} here", i, saved[i].dump(),
                               mine[i].dump());
    if (!renamed.empty()) fail("{}: the optimizer's parameters are not the ones saved:{}", where, renamed);
  }
  if (scheduler && (!meta.contains("scheduler") || !meta["scheduler"].is_object()))
    fail("{}: holds no scheduler state (it was saved without a scheduler)", where);

  // Each load_state_dict validates before it writes; a later failure rolls
  // back the earlier ones from these copies.
  NamedTensors model_backup = model.state_dict();
  for (auto& [name, t] : model_backup) t = t.clone();
  optim::StateDict optimizer_backup;
  if (optimizer) {
    optimizer_backup = optimizer->state_dict();
    for (auto& [name, t] : optimizer_backup.tensors) t = t.clone();
  }
  const json scheduler_backup = scheduler ? scheduler->state_dict() : json();
  int loaded = 0;
  try {
    model.load_state_dict(model_state, strict);
    ++loaded;
    if (optimizer) optimizer->load_state_dict({optimizer_tensors, meta["optimizer"]});
    ++loaded;
    if (scheduler) scheduler->load_state_dict(meta["scheduler"]);
  } catch (const Error& e) {
    if (loaded >= 1) model.load_state_dict(model_backup, true);
    if (loaded >= 2 && optimizer) optimizer->load_state_dict(optimizer_backup);
    if (scheduler) scheduler->load_state_dict(scheduler_backup);
    fail("{}: {}", where, e.what());
  }
  set_rng_state(generator);
  return state;
}

}  // namespace norma::nn
