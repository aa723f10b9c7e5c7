// Training checkpoints that resume exactly: the model's weights, the
// optimizer's and scheduler's state, epoch/step and the random generator in one
// safetensors file (docs/checkpoints.md, "Training checkpoints"). It bundles a
// model and an optimizer, so it lives above layers/ and optim/, in the trainer.
//
// The file (core/safetensors.h), written atomically:
//   <state_dict name>             the model's parameters and buffers, as nn::save writes them
//   optimizer/state.<i>.<buffer>  Optimizer::state_dict().tensors (i: the optimizer's parameter index)
//   __metadata__ "format": "pt", and "norma": one JSON string
//     {"format": 1, "epoch", "step", "extra", "rng": {"seed", "draws"},
//      "optimizer": Optimizer::state_dict().meta or null,
//      "optimizer_params": [model parameter name (or null) of each optimizer index] (with an optimizer),
//      "scheduler": LRScheduler::state_dict() or null}
// PyTorch loads the model part after dropping the "optimizer/" keys; nn::load skips them.
//
//   nn::save_checkpoint("run.safetensors", model, &opt, &sched, {.epoch = 3, .step = 1200});
//   ... a new process, the same model / optimizer / scheduler built with any seed ...
//   nn::TrainingState s = nn::load_checkpoint("run.safetensors", model, &opt, &sched);
#pragma once
#include <nlohmann/json_fwd.hpp>  // TrainingState::extra: include <nlohmann/json.hpp> to use it

#include <cstdint>
#include <string>

#include "../layers/module.h"
#include "../optim/lr_scheduler.h"
#include "../optim/optimizer.h"

namespace norma::nn {

// The checkpoint's format number; load_checkpoint refuses any other.
inline constexpr int kCheckpointFormat = 1;

// Where training stands. `extra` is any JSON the caller wants back (a best
// accuracy, a data-loader position, ...); its non-finite numbers become null.
// A template only so that norma.h needs no <nlohmann/json.hpp>, as optim::StateDict.
template <class Json = nlohmann::json>
struct BasicTrainingState {
  int64_t epoch = 0;
  int64_t step = 0;
  Json extra;
};
using TrainingState = BasicTrainingState<>;

// Writes model.state_dict(), the optimizer's state (when not null), the
// scheduler's state (when not null; it must belong to `optimizer`), `state`
// and norma::get_rng_state() to `path`, atomically.
void save_checkpoint(const std::string& path, const Module& model, const optim::Optimizer* optimizer,
                     const optim::LRScheduler* scheduler, const TrainingState& state);

// Loads `path` into model, optimizer and scheduler (each null one is left
// alone), restores the random generator and returns the training state.
// Everything is validated before anything changes: the "norma" metadata (valid
// JSON, format 1, its fields), the model's keys and shapes
// (Module::load_state_dict(strict)), the optimizer (Optimizer::load_state_dict,
// plus its parameters' names against the saved ones) and the scheduler; on any
// error nothing is changed and norma::Error names the file and what is wrong.
// A file without "norma" metadata (weights only, e.g. written by PyTorch) loads
// into the model when optimizer and scheduler are null, and returns a default
// TrainingState without touching the generator.
TrainingState load_checkpoint(const std::string& path, Module& model, optim::Optimizer* optimizer,
                              optim::LRScheduler* scheduler, bool strict = true);

}  // namespace norma::nn
