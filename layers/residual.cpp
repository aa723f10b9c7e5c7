// BasicBlock: members registered in torchvision's order, then a forward that
// composes them; autograd differentiates the sum of the two branches.
#include "residual.h"

#include "activation.h"
#include "batchnorm2d.h"

namespace norma::nn {

BasicBlock::BasicBlock(int64_t in_channels, int64_t channels, int64_t stride, const NormFactory& bn) {
  if (in_channels <= 0 || channels <= 0 || stride <= 0)
    fail("BasicBlock: in_channels {}, channels {} and stride {} must be positive", in_channels, channels, stride);
  auto norm = [&](int64_t c) { return bn ? bn(c) : std::make_shared<BatchNorm2d>(c); };
  auto conv = [](int64_t in, int64_t out, int64_t k, int64_t s) {
    return std::make_shared<Conv2d>(Conv2dOptions(in, out, k).stride(s).padding(k / 2).bias(false));
  };
  conv1 = register_module("conv1", conv(in_channels, channels, 3, stride));
  bn1 = register_module("bn1", norm(channels));
  relu = register_module("relu", std::make_shared<ReLU>(true));
  conv2 = register_module("conv2", conv(channels, channels, 3, 1));
  bn2 = register_module("bn2", norm(channels));
  if (stride != 1 || in_channels != channels)
    downsample = register_module("downsample", std::make_shared<Sequential>(std::initializer_list<ModulePtr>{
                                                   conv(in_channels, channels, 1, stride), norm(channels)}));
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor out = relu->forward(bn1->forward(conv1->forward(x)));
  out = bn2->forward(conv2->forward(out));
  Tensor shortcut = downsample ? downsample->forward(x) : x;
  return relu->forward(out + shortcut);
}

}  // namespace norma::nn
