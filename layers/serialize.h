// Saving and loading a module's weights: its state_dict() in a safetensors
// file (core/safetensors.h), under PyTorch's names, so a file written by
// Norma loads in PyTorch and the other way round (docs/checkpoints.md).
#pragma once
#include <map>
#include <string>

#include "../core/safetensors.h"
#include "module.h"

namespace norma::nn {

// Writes m.state_dict() (parameters and buffers) to `path`, atomically.
void save(const Module& m, const std::string& path, const std::map<std::string, std::string>& metadata = {});

// Loads `path` into m with load_state_dict(strict): strict reports every
// missing key, unexpected key and shape mismatch in one error naming the file.
// Tensors under "optimizer/" (a training checkpoint's optimizer state) are
// skipped, so a training checkpoint loads into its model as is.
void load(Module& m, const std::string& path, bool strict = true);

}  // namespace norma::nn
