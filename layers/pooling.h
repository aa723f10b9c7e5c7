// 2-D pooling on NCHW tensors, PyTorch semantics: max, average and adaptive
// average. Each op is one autograd node with a hand-written backward.
//
// Letters: N batch, C channels, H/W input size, OH/OW output size; k kernel,
// s stride, p padding. A window starts at oh * s - p, and
//   OH = floor((H + 2 p - k) / s) + 1   (likewise OW; PyTorch's ceil_mode=False)
// PyTorch's rule p <= k / 2 keeps a real element in every window.
//
// max_pool2d: y = the max of the window, padding counting as -inf. Backward
// routes dy to the argmax saved by the forward; on ties the first maximum in
// row-major window order wins, and a NaN beats any number (the last NaN, as PyTorch).
// avg_pool2d: y = sum(window) / divisor; the divisor is k_h * k_w with
// count_include_pad (PyTorch's default), else the number of real elements.
// Backward spreads dy / divisor over the window.
// adaptive_avg_pool2d: window oh covers rows [floor(oh H / OH), ceil((oh+1) H / OH)).
//
// The kernels: the reference ones, forward beside backward (layers/ref/pool2d.h),
// and max_pool2d's fast one for 2x2 windows with stride 2 (layers/fast/maxpool2x2.h,
// with KernelPolicy::fast), which must equal them.
#pragma once
#include <optional>

#include "module.h"
#include "ref/conv2d.h"  // Size2
#include "ref/pool2d.h"  // PoolShape

namespace norma::nn {

// `op` names the caller in errors. stride nullopt means stride = kernel.
PoolShape pool2d_shape(const char* op, const Shape& x, Size2 kernel, std::optional<Size2> stride, Size2 padding);

// ---- ops: x (N, C, H, W) -> (N, C, OH, OW)
Tensor max_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0);
Tensor avg_pool2d(const Tensor& x, Size2 kernel_size, std::optional<Size2> stride = std::nullopt,
                  Size2 padding = 0, bool count_include_pad = true);
Tensor adaptive_avg_pool2d(const Tensor& x, Size2 output_size);

// ---- modules; printed like PyTorch: "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)"
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Size2 kernel_size, std::optional<Size2> stride = std::nullopt, Size2 padding = 0);
  Tensor forward(const Tensor& x) override { return max_pool2d(x, kernel_size, stride, padding); }
  std::string name() const override { return "MaxPool2d"; }
  std::string extra_repr() const override;
  Size2 kernel_size, stride, padding;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Size2 kernel_size, std::optional<Size2> stride = std::nullopt, Size2 padding = 0,
                     bool count_include_pad = true);
  Tensor forward(const Tensor& x) override {
    return avg_pool2d(x, kernel_size, stride, padding, count_include_pad);
  }
  std::string name() const override { return "AvgPool2d"; }
  std::string extra_repr() const override;
  Size2 kernel_size, stride, padding;
  bool count_include_pad;
};

class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Size2 output_size);
  Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
  std::string name() const override { return "AdaptiveAvgPool2d"; }
  std::string extra_repr() const override;
  Size2 output_size;
};

}  // namespace norma::nn
