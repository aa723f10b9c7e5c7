// Reference models, built from Norma's layers with PyTorch's state_dict names.
#pragma once
#include "sequential.h"

namespace norma::nn {

// cifar-small: as a PyTorch nn.Sequential (indices are the state_dict prefixes):
// [0] Conv2d(3,32,3,p=1,bias=False) [1] BatchNorm2d(32) [2] ReLU
// [3] Conv2d(32,32,3,p=1,bias=False) [4] BatchNorm2d(32) [5] ReLU [6] MaxPool2d(2)
// [7] Conv2d(32,64,3,p=1,bias=False) [8] BatchNorm2d(64) [9] ReLU
// [10] Conv2d(64,64,3,p=1,bias=False) [11] BatchNorm2d(64) [12] ReLU [13] MaxPool2d(2)
// [14] Conv2d(64,128,3,p=1,bias=False) [15] BatchNorm2d(128) [16] ReLU [17] MaxPool2d(2)
// [18] Flatten [19] Linear(2048,10)
// `bn` makes each BatchNorm2d from its channel count (e.g. a preset); null means PyTorch's.
std::shared_ptr<Sequential> cifar_small(const std::function<ModulePtr(int64_t)>& bn = nullptr);

// A printable table of a model: each layer's name, type, output shape for an
// input of `input_shape`, parameter count, and totals (like torchinfo). Runs
// one forward in eval mode under NoGradGuard and restores the training flag.
// Sequential children are listed one by one; other modules as one row.
std::string summary(Module& model, const Shape& input_shape);

}  // namespace norma::nn
