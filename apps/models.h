// Reference models, built from Norma's layers with PyTorch's state_dict names.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <norma/layers/conv2d.h>
#include <norma/layers/linear.h>
#include <norma/layers/sequential.h>

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

// cifar-small as a class of its own, written the way docs/custom_models.md
// teaches: the same layers as cifar_small(), registered as conv1..conv5,
// bn1..bn5 and fc; its forward calls the fused ops (fusion.h) itself, so it
// runs what the Sequential runs. `bn` as for cifar_small (it must make a BatchNorm2d).
class CifarSmall : public Module {
 public:
  explicit CifarSmall(const std::function<ModulePtr(int64_t)>& bn = nullptr);
  Tensor forward(const Tensor& x) override;  // x (N, 3, 32, 32) -> logits (N, 10)
  std::string name() const override { return "CifarSmall"; }

  std::shared_ptr<Conv2d> conv1, conv2, conv3, conv4, conv5;  // 3x3, padding 1, no bias: 3->32->32->64->64->128
  std::shared_ptr<BatchNorm2d> bn1, bn2, bn3, bn4, bn5;       // one per conv
  std::shared_ptr<Linear> fc;                                 // weight (10, 2048)
};

// resnet8: the CIFAR ResNet of He et al. (2016) with one BasicBlock per stage
// (8 weight layers, 78,042 parameters), for 3x32x32 inputs. As a PyTorch nn.Sequential:
// [0] Conv2d(3,16,3,p=1,bias=False) [1] BatchNorm2d(16) [2] ReLU
// [3] BasicBlock(16,16) [4] BasicBlock(16,32,stride=2) [5] BasicBlock(32,64,stride=2)
// [6] AdaptiveAvgPool2d(1) [7] Flatten [8] Linear(64,10)
// (BasicBlock in layers/residual.h, names as torchvision's: "4.downsample.0.weight").
std::shared_ptr<Sequential> resnet8(const std::function<ModulePtr(int64_t)>& bn = nullptr);

// Makes a model whose BatchNorm2d layers come from `bn` (called with each
// layer's channel count; null: PyTorch's defaults), so the CLI's --bn-preset
// and synchronised BatchNorm reach it. A factory may ignore `bn`.
using ModelFactory = std::function<std::shared_ptr<Module>(const std::function<ModulePtr(int64_t)>& bn)>;

// The model registry, by name: the models above ("cifar-small",
// "cifar-small-class" (CifarSmall), "resnet8") and those a program adds.
// make_model builds one (any other name is an error listing the known ones);
// model_names() lists them in the order they were added.
std::shared_ptr<Module> make_model(const std::string& name, const std::function<ModulePtr(int64_t)>& bn = nullptr);
std::vector<std::string> model_names();

// Adds a model to the registry, for make_model, app::train(config) and
// app::evaluate_checkpoint (whose checkpoints record the name), and the CLI's
// --model when added before app::make_cli. Fails on an empty name, a null
// factory or a name already registered (listing the known ones). Thread-safe.
//   nn::register_model("my-net", [](const auto& bn) { return std::make_shared<MyNet>(bn); });
void register_model(const std::string& name, ModelFactory factory);

// A printable table of a model: each layer's name, type, output shape for an
// input of `input_shape`, parameter count, and totals (like torchinfo). Runs
// one forward in eval mode under NoGradGuard and restores the training flag.
// Sequential children are listed one by one; other modules as one row.
std::string summary(Module& model, const Shape& input_shape);

}  // namespace norma::nn
