// nn::BasicBlock: the residual block of ResNet-18/34 (He et al. 2016, "Deep
// Residual Learning for Image Recognition"), with torchvision's member names so
// its state_dict moves to and from torchvision.models.resnet.BasicBlock.
//
//   out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
//   shortcut(x) = x                                    when stride 1 and in == out channels
//               = downsample(x) = bn(conv1x1(x, stride)) otherwise ("downsample.0", "downsample.1")
// conv1 (3x3, stride) and conv2 (3x3) have no bias: the BatchNorm after each has one.
//
// It is also the worked example of a custom module (docs/custom_models.md): a
// class with a forward() whose members are registered in the constructor.
#pragma once
#include <functional>

#include "conv2d.h"
#include "sequential.h"

namespace norma::nn {

// Makes the normalisation layer for a channel count; null means nn::BatchNorm2d(C).
using NormFactory = std::function<ModulePtr(int64_t)>;

class BasicBlock : public Module {
 public:
  // x (N, in_channels, H, W) -> (N, channels, H', W'), H' = (H - 1) / stride + 1.
  BasicBlock(int64_t in_channels, int64_t channels, int64_t stride = 1, const NormFactory& bn = nullptr);
  Tensor forward(const Tensor& x) override;
  std::string name() const override { return "BasicBlock"; }
  // True when the shortcut is a 1x1 conv + norm rather than the identity.
  bool has_downsample() const { return downsample != nullptr; }

  std::shared_ptr<Conv2d> conv1;          // weight (channels, in_channels, 3, 3), stride `stride`
  ModulePtr bn1;                          // over `channels`
  ModulePtr relu;                         // no state; registered so named_modules() matches torchvision
  std::shared_ptr<Conv2d> conv2;          // weight (channels, channels, 3, 3)
  ModulePtr bn2;
  std::shared_ptr<Sequential> downsample; // [0] Conv2d 1x1 stride `stride`, [1] norm; null for identity
};

}  // namespace norma::nn
